"""Upstream accounts: what mysqlgate learns of each one's server when it logs in, and
what it keeps per account (its pool, the databases and settings the server accepted,
its prepared statements).

Each `--upstream` is an account with a pool of its own, sized from its own limit; a
client logs in as one of them by user name (issue 6, several accounts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .backend import RESET_COMMANDS, BackendConnection, open_backend
from .charsets import COLLATIONS_SQL, UTF8MB4_DEFAULT, Charsets
from .charsets import builtin as builtin_charsets
from .config import Config, Upstream
from .errors import ER_GLOBAL_VARIABLE, ER_READ_ONLY_VARIABLE, ER_SESSION_READ_ONLY, ServerError
from .fleet import Fleet
from .pool import UpstreamPool
from .pool_types import PoolSettings
from .prepared import StatementRegistry
from .protocol.constants import NATIVE_PASSWORD, PROXY_CAPABILITIES, SERVER_STATUS_AUTOCOMMIT
from .session_state import (
    TRACK_EVERYTHING,
    TRACKING_VARIABLES,
    UNMOVABLE_VARIABLES,
    SessionState,
    Tracking,
    VariableKinds,
    query_packet,
    quoted,
    restore_role_statement,
)
from .settings_cache import SettingsCache
from .upstream_login import DEFAULT_CHARSET, ServerInfo

log = logging.getLogger("mysqlgate.accounts")

AUTO_SIZE_CAP = 20  # pool.size auto on an account without a connection limit

# What clients are greeted with before the server was ever reached (mysqlgate starts
# before its server, e.g. as a sidecar): they can log in; their statements get an error
# until the server answers, and their next connection gets the server's own greeting.
UNREACHED_SERVER = ServerInfo(b"5.5.5-mysqlgate-upstream-not-reached-yet", PROXY_CAPABILITIES,
                              DEFAULT_CHARSET, SERVER_STATUS_AUTOCOMMIT, NATIVE_PASSWORD, 0)
# The servers' own defaults (MariaDB 10.11, MySQL 8): what a client is told of its session.
DEFAULT_TRACKING = Tracking(
    ("autocommit", "character_set_client", "character_set_connection",
     "character_set_results", "time_zone"), schema=True, state_change=False)


@dataclass(frozen=True)
class UpstreamFacts:
    info: ServerInfo
    wait_timeout: float
    max_user_connections: int
    max_connections: int
    login_role: str | None = None  # CURRENT_ROLE() right after login
    tracking: Tracking = TRACK_EVERYTHING  # a new session's session_track_* settings
    max_prepared_stmt_count: int = 16382
    charsets: Charsets = field(default_factory=builtin_charsets)
    variables: VariableKinds = field(default_factory=VariableKinds)


async def probe(upstream: Upstream) -> UpstreamFacts:
    """Log in once to learn what the greeting must mirror and the pool must obey."""
    backend = await open_backend(upstream, 0)
    try:
        return await read_facts(backend)
    finally:
        backend.close()


async def read_facts(backend: BackendConnection) -> UpstreamFacts:
    """What the server says of itself and of the account, on a connection logged in."""
    row = await backend.query_row(
        b"SELECT @@wait_timeout, @@max_user_connections, @@max_connections,"
        b" @@max_prepared_stmt_count")
    try:
        (role,) = await backend.query_row(b"SELECT CURRENT_ROLE()")
    except ServerError:  # a server without roles (MySQL 5.7)
        role = None
    tracking = await backend.query_row(
        b"SELECT @@global.session_track_system_variables, @@global.session_track_schema,"
        b" @@global.session_track_state_change")
    session: dict[str | None, str | None] = {
        name: value for name, value in await backend.query_rows(b"SHOW SESSION VARIABLES")}
    charsets = Charsets.from_rows(await backend.query_rows(COLLATIONS_SQL),
                                  session.get(UTF8MB4_DEFAULT))
    variables = await probe_variables(backend, [n for n in session if n is not None])
    assert backend.server is not None
    return UpstreamFacts(backend.server, float(row[0] or 28800), int(row[1] or 0),
                         int(row[2] or 151), None if role in (None, "NONE") else role,
                         Tracking.from_settings(tracking[0] or "", tracking[1], tracking[2]),
                         int(row[3] or 16382), charsets, variables)


async def probe_variables(backend: BackendConnection, names: list[str]) -> VariableKinds:
    """Ask the server which session variables a client cannot set: each is set to its
    own value (one round trip for all; the connection is reset afterwards). A list in
    the code would go stale with each server version (issue 14: MySQL's statement_id)."""
    candidates = [n for n in names if n not in UNMOVABLE_VARIABLES
                  and n not in TRACKING_VARIABLES]
    failures = await backend.outcomes([
        query_packet(f"SET SESSION {quoted(n)} = @@SESSION.{quoted(n)}") for n in candidates])
    await backend.pipeline(list(RESET_COMMANDS))  # whatever the probe set goes
    read_only: set[str] = set()
    refused: set[str] = set()
    for name, failure in zip(candidates, failures, strict=True):
        if failure is None or failure.err.code == ER_GLOBAL_VARIABLE:
            continue  # settable; or global only, which no tracker reports
        read_only_code = failure.err.code in (ER_READ_ONLY_VARIABLE, ER_SESSION_READ_ONLY)
        (read_only if read_only_code else refused).add(name)
    log.debug("upstream %s: %d session variables are read-only; setting these pins: %s",
              backend.upstream.address, len(read_only), ", ".join(sorted(refused)))
    return VariableKinds(frozenset(read_only), frozenset(refused))


def pool_settings(config: Config, facts: UpstreamFacts | None) -> PoolSettings:
    """The pool's settings; before the server was reached (facts None), `auto` means one
    connection and the idle timeout of a server with the usual wait_timeout."""
    size = config["pool.size"]
    if size is None:
        reserve = config["pool.reserve"]
        if facts is None:
            size = 1
        elif facts.max_user_connections:
            size = max(1, facts.max_user_connections - reserve)
        else:
            size = max(1, min(AUTO_SIZE_CAP, facts.max_connections - reserve))
    idle = config["pool.idle_timeout"]
    if idle is None:
        # Close idle connections well before the server would (SPEC section 3:
        # 270 s for the usual 300 s), never later than 10 minutes.
        wt = facts.wait_timeout if facts is not None else 300.0
        idle = min(600.0, max(0.5, min(wt * 0.9, wt - 10)))
    return PoolSettings(
        size=size,
        queue_timeout=config["pool.queue_timeout"],
        idle_timeout=idle,
        max_lifetime=config["pool.max_lifetime"],
        ping_after=min(config["pool.ping_after"], idle),
    )


@dataclass(eq=False)
class Account:
    """One upstream account and everything mysqlgate keeps for it."""

    upstream: Upstream
    config: Config
    facts: UpstreamFacts | None  # None until the server was reached once
    pool: UpstreamPool
    # Databases the server let this account select (checked at a client's login).
    known_schemas: set[str] = field(default_factory=set)
    settings: SettingsCache = field(default_factory=SettingsCache)
    statements: StatementRegistry = field(default_factory=StatementRegistry)
    # What a connection's session is right after login or a reset, and how to restore
    # the login's role (which a reset does not): set with the facts.
    fresh: SessionState = field(default_factory=SessionState)
    restore_role: bytes = b""
    statement_limit: int = 256  # prepared statements kept per upstream connection
    # Sharing the account's limit with other mysqlgates (fleet.py): once the limit is
    # known, unless fleet.mode is off or the account has none.
    fleet: Fleet | None = None

    def __post_init__(self) -> None:
        if self.upstream.database:
            self.known_schemas.add(self.upstream.database)
        self.fresh = SessionState(builtin_charsets().handshake_variables(DEFAULT_CHARSET),
                                  self.upstream.database)
        if self.facts is not None:
            self.learned(self.facts)

    def learned(self, facts: UpstreamFacts) -> None:
        """The server's facts, now known: the pool's size and timeouts follow them."""
        first = self.facts is None
        self.facts = facts
        self.restore_role = restore_role_statement(facts.info.version, facts.login_role)
        self.fresh = SessionState(facts.charsets.handshake_variables(DEFAULT_CHARSET),
                                  self.upstream.database)
        settings = pool_settings(self.config, facts)
        # max_prepared_stmt_count is the whole server's: half of it for this pool.
        self.statement_limit = max(
            8, min(1000, facts.max_prepared_stmt_count // (2 * settings.size)))
        if first:
            self.pool.resize(settings)
            if facts.max_user_connections and self.config["fleet.mode"] != "off":
                self.fleet = Fleet(self.pool, self.upstream.user, facts.max_user_connections,
                                   self.config["pool.reserve"], self.config["fleet.floor"],
                                   self.config["fleet.quiet_after"], facts.info.mariadb)
                self.fleet.start()

    @property
    def name(self) -> str:
        return self.pool.name

    @property
    def server(self) -> ServerInfo:
        return self.facts.info if self.facts is not None else UNREACHED_SERVER

    @property
    def charsets(self) -> Charsets:
        return self.facts.charsets if self.facts is not None else builtin_charsets()

    @property
    def variables(self) -> VariableKinds:
        return self.facts.variables if self.facts is not None else VariableKinds()

    @property
    def tracking(self) -> Tracking:
        """What a new session is told of itself through session-state tracking."""
        return self.facts.tracking if self.facts is not None else DEFAULT_TRACKING
