"""State shared by the server and the connection handlers (kept below both so that
neither imports the other)."""

from __future__ import annotations

import itertools
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from .accounts import Account
from .backend import BackendConnection
from .config import Config
from .memory import GiveBack


class ClientHandle(Protocol):
    """A client connection as the server, the janitor, the admin console and the
    metrics see it (the session package's Session implements it)."""

    id: int
    peer: str
    connected_at: float
    last_command_at: float  # when its last command came
    authenticated: bool

    @property
    def user(self) -> str: ...

    @property
    def account(self) -> Account: ...

    @property
    def backend(self) -> BackendConnection | None:
        """The upstream connection it holds, if any."""

    @property
    def busy(self) -> bool:
        """A command is in progress."""

    @property
    def current(self) -> bytes:
        """The command in progress (b"" when none)."""

    @property
    def closed(self) -> bool: ...

    @property
    def capabilities(self) -> int: ...

    @property
    def variables(self) -> dict[str, str]:
        """The session variables it set (what moves with it)."""

    @property
    def pins(self) -> set[str]: ...

    @property
    def autocommit(self) -> bool: ...

    def hold_reason(self) -> str | None:
        """Why it keeps its upstream connection (session/client_state.py)."""

    def leaves_state(self) -> bool:
        """Its connection holds a transaction or state that cannot move."""

    def end_idle_transaction(self, idle: float) -> None:
        """Roll back what it holds idle on its connection, and give the connection back;
        its next command is told (pool.idle_transaction_timeout)."""

    def activity(self) -> str:
        """What it is doing, in a word or three (SHOW CLIENTS)."""

    def on_client_gone(self) -> None:
        """End it: as if the client had disconnected."""

    def kill_query_sent(self) -> None:
        """Another client's KILL QUERY aims at its running statement: it keeps its
        connection until the KILL has run (or the KILL would hit the next client)."""

    def kill_query_ran(self) -> None:
        """That KILL QUERY ran."""


@dataclass
class GateStats:
    clients_accepted: int = 0
    clients_rejected: int = 0
    auth_failures: int = 0
    commands: int = 0
    upstream_lost: int = 0
    retries: int = 0  # commands run again after their connection was lost
    local_answers: int = 0  # settings statements answered without the server
    idle_transaction_timeouts: int = 0  # quiet clients whose transaction was rolled back
    pins: Counter[str] = field(default_factory=Counter)
    errors_sent: Counter[int] = field(default_factory=Counter)


@dataclass
class GateContext:
    config: Config
    accounts: tuple[Account, ...]  # the first one's server greets clients before login
    started: float = field(default_factory=time.monotonic)
    stats: GateStats = field(default_factory=GateStats)
    sessions: dict[int, ClientHandle] = field(default_factory=dict)  # by client id
    recent_auth_failures: list[float] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    tls: ssl.SSLContext | None = None  # offered to clients (listen.tls_cert/tls_key)
    memory: GiveBack = field(default_factory=GiveBack)  # large buffers' pages returned

    @property
    def primary(self) -> Account:
        return self.accounts[0]

    def account_for(self, user: str) -> Account | None:
        for account in self.accounts:
            if account.upstream.user == user:
                return account
        return None

    def next_client_id(self) -> int:
        return next(self._ids)

    def client_named(self, ident: int) -> ClientHandle | None:
        """The client a KILL names: by the id its greeting gave it, or by the upstream
        thread id its CONNECTION_ID() showed while it held that connection."""
        found = self.sessions.get(ident)
        if found is not None:
            return found
        for client in self.sessions.values():
            backend = client.backend
            if backend is not None and backend.thread_id == ident:
                return client
        return None

    def summary(self) -> str:
        """One line of totals, logged when mysqlgate stops."""
        stats = self.stats
        pins = ", ".join(f"{reason} {count}" for reason, count in sorted(stats.pins.items()))
        connects = sum(a.pool.stats.connects for a in self.accounts)
        resets = sum(a.pool.stats.resets for a in self.accounts)
        prepared = sum(a.statements.prepared_upstream for a in self.accounts)
        executes = sum(a.statements.executes for a in self.accounts)
        return (
            f"clients {stats.clients_accepted}, commands {stats.commands}, answered locally "
            f"{stats.local_answers}, pins [{pins or 'none'}], upstream connects "
            f"{connects}, resets {resets}, lost {stats.upstream_lost}, retried "
            f"{stats.retries}, statements prepared upstream {prepared}"
            f" for {executes} executes, auth failures {stats.auth_failures}"
        )
