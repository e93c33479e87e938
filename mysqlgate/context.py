"""State shared by the server and the connection handlers (kept below both so that
neither imports the other)."""

from __future__ import annotations

import itertools
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .accounts import Account
from .config import Config

if TYPE_CHECKING:
    from .session import Session


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
    sessions: dict[int, Session] = field(default_factory=dict)  # by client id
    recent_auth_failures: list[float] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    tls: ssl.SSLContext | None = None  # offered to clients (listen.tls_cert/tls_key)

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
