"""State shared by the server and the connection handlers (kept below both so that
neither imports the other)."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .backend import ServerInfo
from .config import Config
from .pool import UpstreamPool
from .prepared import StatementRegistry
from .session_state import TRACK_EVERYTHING, Tracking
from .settings_cache import SettingsCache

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
    pins: Counter[str] = field(default_factory=Counter)
    errors_sent: Counter[int] = field(default_factory=Counter)


@dataclass
class GateContext:
    config: Config
    pool: UpstreamPool
    server: ServerInfo
    wait_timeout: float
    started: float = field(default_factory=time.monotonic)
    stats: GateStats = field(default_factory=GateStats)
    sessions: set[Session] = field(default_factory=set)
    recent_auth_failures: list[float] = field(default_factory=list)
    # Databases the server let this account select (checked at a client's login).
    known_schemas: set[str] = field(default_factory=set)
    settings: SettingsCache = field(default_factory=SettingsCache)
    statements: StatementRegistry = field(default_factory=StatementRegistry)
    # The server's session_track_* defaults: what a new client is told of its session.
    default_tracking: Tracking = TRACK_EVERYTHING
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def next_client_id(self) -> int:
        return next(self._ids)

    def summary(self) -> str:
        """One line of totals, logged when mysqlgate stops."""
        stats = self.stats
        pool = self.pool.stats
        statements = self.statements
        pins = ", ".join(f"{reason} {count}" for reason, count in sorted(stats.pins.items()))
        return (
            f"clients {stats.clients_accepted}, commands {stats.commands}, answered locally "
            f"{stats.local_answers}, pins [{pins or 'none'}], upstream connects "
            f"{pool.connects}, resets {pool.resets}, lost {stats.upstream_lost}, retried "
            f"{stats.retries}, statements prepared upstream {statements.prepared_upstream}"
            f" for {statements.executes} executes, auth failures {stats.auth_failures}"
        )
