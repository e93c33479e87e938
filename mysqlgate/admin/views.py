"""What the admin console shows: tables of typed columns built from a running gate's
state. Pure reads of the context; no I/O, nothing changed.

The same tables feed `mysqlgate status` (through the console), so their column names
are an interface: add columns at the end, rename none.
"""

from __future__ import annotations

import platform
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .. import __version__
from ..accounts import Account
from ..context import GateContext
from ..protocol.constants import COMMAND
from ..protocol.resultset import Column, Value
from ..session.client_state import HOLD_SAVEPOINT, HOLD_TRANSACTION
from ..settings import SETTINGS, Setting, parse_setting, show_default

STATEMENT_SHOWN = 200  # characters of a client's statement in SHOW CLIENTS
RATE_WINDOW = 60.0  # seconds over which SHOW STATS computes its recent rates

_COMMAND_NAMES = {v: k[4:] for k, v in vars(COMMAND).items() if k.startswith("COM_")}


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    rows: list[tuple[Value, ...]]


def _columns(*spec: tuple[str, type]) -> tuple[Column, ...]:
    return tuple(Column(name, kind) for name, kind in spec)


POOL_COLUMNS = _columns(
    ("pool", str), ("size", int), ("effective_size", int), ("in_use", int), ("idle", int),
    ("opening", int), ("waiting", int), ("longest_wait_s", float), ("clients", int),
    ("pinned", int), ("in_transaction", int), ("paused", int), ("status", str),
    ("unreachable_s", float), ("fleet", str), ("account_limit", int),
    ("account_connections", int), ("reserve", int), ("share", int), ("given_back", int),
    ("taken", int))


# Why a client holds a connection, when that is a transaction (SHOW POOLS in_transaction).
IN_TRANSACTION = (HOLD_TRANSACTION, HOLD_SAVEPOINT)


def pools(ctx: GateContext) -> Table:
    """A row per account: how full its pool is and who waits (SHOW POOLS)."""
    rows: list[tuple[Value, ...]] = []
    for account in ctx.accounts:
        pool = account.pool
        sessions = [s for s in ctx.sessions.values() if s.account is account and
                    s.authenticated]
        status = "ok" if pool.unreachable is None else \
            f"unreachable for {pool.unreachable_for:.1f}s: {pool.unreachable}"
        rows.append((
            pool.name, pool.settings.size, pool.effective_size, pool.lent_count,
            pool.idle_count, pool.opening_count, pool.waiting_count, pool.longest_wait,
            len(sessions), sum(1 for s in sessions if s.pins),
            sum(1 for s in sessions if s.hold_reason() in IN_TRANSACTION),
            int(pool.paused), status, pool.unreachable_for, *fleet_columns(account)))
    return Table(POOL_COLUMNS, rows)


def fleet_columns(account: Account) -> tuple[Value, ...]:
    """How the account's limit is shared with other mysqlgates (fleet.py): `off` when
    the account has no limit or fleet.mode is off; the share is this gate's
    connections, parked ones (offered to the others) not counted."""
    facts = account.facts
    limit = facts.max_user_connections or None if facts is not None else None
    reserve = account.config["pool.reserve"]
    fleet = account.fleet
    if fleet is None:
        share = account.pool.open_count
        return ("off", limit, None, reserve, share, 0, 0)
    view = fleet.view()
    return (view.status, view.account_limit, view.account_connections, view.reserve,
            view.share, view.stats.given_back, view.stats.taken)


CLIENT_COLUMNS = _columns(
    ("id", int), ("user", str), ("address", str), ("state", str), ("statement", str),
    ("pins", str), ("connected_s", float), ("idle_s", float), ("upstream_thread", int),
    ("pool", str), ("autocommit", int))


def clients(ctx: GateContext) -> Table:
    """A row per client connection (SHOW CLIENTS). idle_s: since its last command."""
    now = time.monotonic()
    rows: list[tuple[Value, ...]] = []
    for session in sorted(ctx.sessions.values(), key=lambda s: s.id):
        backend = session.backend
        rows.append((
            session.id, session.user or None, session.peer, session.activity(),
            describe_command(session.current), ", ".join(sorted(session.pins)) or None,
            now - session.connected_at, 0.0 if session.busy else now - session.last_command_at,
            backend.thread_id if backend is not None else None,
            session.account.name if session.authenticated else None,
            # 0 beside `idle in transaction` is the usual story: a driver that starts with
            # autocommit off (PyMySQL, mysqlclient) opened a transaction with its first
            # statement and holds the connection until it commits.
            int(session.autocommit) if session.authenticated else None))
    return Table(CLIENT_COLUMNS, rows)


def describe_command(payload: bytes) -> str | None:
    """A command in progress as text: a query's SQL (shortened), else the command's name."""
    if not payload:
        return None
    if payload[0] == COMMAND.COM_QUERY:
        text = payload[1:STATEMENT_SHOWN * 4 + 1].decode("utf-8", "replace")
        text = " ".join(text.split())
        return text if len(text) <= STATEMENT_SHOWN else text[:STATEMENT_SHOWN - 3] + "..."
    return _COMMAND_NAMES.get(payload[0], f"0x{payload[0]:02x}")


SERVER_COLUMNS = _columns(
    ("pool", str), ("thread_id", int), ("state", str), ("client", int), ("age_s", float),
    ("idle_s", float), ("tls", int))


def servers(ctx: GateContext) -> Table:
    """A row per open upstream connection (SHOW SERVERS); connections being opened or
    reset are counted in SHOW POOLS' opening only."""
    now = time.monotonic()
    users = {s.backend: s.id for s in ctx.sessions.values() if s.backend is not None}
    rows: list[tuple[Value, ...]] = []
    for account in ctx.accounts:
        pool = account.pool
        for state, backends in (("in_use", pool.lent()), ("idle", pool.idle()),
                                ("fleet", pool.borrowed())):
            for backend in sorted(backends, key=lambda b: b.thread_id):
                rows.append((
                    pool.name, backend.thread_id,
                    "running" if backend.busy else state, users.get(backend),
                    now - backend.created_at, now - backend.last_active, int(backend.tls)))
    return Table(SERVER_COLUMNS, rows)


STATS_COLUMNS = _columns(("stat", str), ("total", int), ("per_second_recent", float),
                         ("per_second_average", float))


def totals(ctx: GateContext) -> dict[str, int]:
    """The gate's counters since it started, by name."""
    stats = ctx.stats
    pools = [a.pool.stats for a in ctx.accounts]
    registries = [a.statements for a in ctx.accounts]
    fleets = [a.fleet for a in ctx.accounts if a.fleet is not None]
    return {
        "clients_accepted": stats.clients_accepted,
        "clients_rejected": stats.clients_rejected,
        "auth_failures": stats.auth_failures,
        "commands": stats.commands,
        "local_answers": stats.local_answers,
        "retries": stats.retries,
        "upstream_lost": stats.upstream_lost,
        "idle_transaction_timeouts": stats.idle_transaction_timeouts,
        "errors_sent": sum(stats.errors_sent.values()),
        "pins": sum(stats.pins.values()),
        "upstream_connects": sum(p.connects for p in pools),
        "upstream_connect_failures": sum(p.connect_failures for p in pools),
        "upstream_limit_rejections": sum(p.limit_rejections for p in pools),
        "upstream_outages": sum(p.outages for p in pools),
        "upstream_resets": sum(p.resets for p in pools),
        "queue_waits": sum(p.waited for p in pools),
        "queue_timeouts": sum(p.wait_timeouts for p in pools),
        "closed_idle": sum(p.closed_idle for p in pools),
        "closed_lifetime": sum(p.closed_lifetime for p in pools),
        "closed_ping_failed": sum(p.pings_failed for p in pools),
        "closed_lost": sum(p.closed_broken for p in pools),
        "statements_prepared_upstream": sum(r.prepared_upstream for r in registries),
        "statement_executes": sum(r.executes for r in registries),
        "fleet_queries": sum(f.sql.queries for f in fleets),
        "fleet_given_back": sum(f.stats.given_back for f in fleets),
        "fleet_taken": sum(f.stats.taken for f in fleets),
        "fleet_entries_over": sum(f.stats.entries_over for f in fleets),
        "fleet_over_limit_ms": round(1000 * sum(f.stats.over_limit_seconds for f in fleets)),
    }


class RateWindow:
    """Totals sampled now and then, so SHOW STATS can give rates over the last minute
    (not only since the start, which hides a change in load)."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self.samples: deque[tuple[float, dict[str, int]]] = deque()

    def sample(self, ctx: GateContext, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.samples.append((now, totals(ctx)))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()

    def oldest(self) -> tuple[float, dict[str, int]] | None:
        return self.samples[0] if self.samples else None


def stats(ctx: GateContext, window: RateWindow) -> Table:
    """Totals since start, their rate over about the last minute, and on average (SHOW
    STATS); also the mean queue wait."""
    now = time.monotonic()
    current = totals(ctx)
    uptime = max(now - ctx.started, 1e-9)
    base = window.oldest()
    rows: list[tuple[Value, ...]] = []
    for name, value in current.items():
        recent = None
        if base is not None and now - base[0] >= 1.0:
            recent = (value - base[1].get(name, 0)) / (now - base[0])
        rows.append((name, value, recent, value / uptime))
    waited = sum(a.pool.stats.waited for a in ctx.accounts)
    seconds = sum(a.pool.stats.wait_seconds for a in ctx.accounts)
    rows.append(("queue_wait_ms_mean", round(1000 * seconds / waited) if waited else 0,
                 None, None))
    rows.append(("uptime_s", int(uptime), None, None))
    return Table(STATS_COLUMNS, rows)


CONFIG_COLUMNS = _columns(("setting", str), ("value", str), ("default", str),
                          ("reloadable", str), ("description", str))


def show_value(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def config(ctx: GateContext) -> Table:
    """Every setting as it is now, secrets masked (SHOW CONFIG); NULL: not set."""
    shown = ctx.config.public()
    rows: list[tuple[Value, ...]] = []
    for setting in SETTINGS:
        rows.append((setting.name, show_value(shown[setting.name]) or _unset_word(setting),
                     show_default(setting), "yes" if setting.reloadable else "no",
                     setting.help))
    return Table(CONFIG_COLUMNS, rows)


def _unset_word(setting: Setting) -> str | None:
    """What a value of None stands for: the word of a default that parses to None
    (`auto`, `off`), else nothing (NULL: not set)."""
    if setting.default is not None and parse_setting(setting.name, setting.default) is None:
        return show_default(setting)
    return None


VERSION_COLUMNS = _columns(("version", str), ("python", str), ("event_loop", str),
                           ("started", str), ("uptime_s", float))


def version(ctx: GateContext, event_loop: str) -> Table:
    started = datetime.now(UTC).timestamp() - (time.monotonic() - ctx.started)
    return Table(VERSION_COLUMNS, [(
        f"mysqlgate {__version__}",
        f"{platform.python_implementation()} {sys.version.split()[0]}", event_loop,
        datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        time.monotonic() - ctx.started)])


HELP_COLUMNS = _columns(("command", str), ("description", str))


def help_table(commands: Iterable[tuple[str, str]]) -> Table:
    return Table(HELP_COLUMNS, list(commands))


def single(names: Sequence[str], values: Sequence[Value]) -> Table:
    """A one-row table of strings, numbers or NULLs (the console's answers to a
    driver's SELECT @@version_comment and the like)."""
    columns = tuple(Column(name, int if isinstance(value, int) else str)
                    for name, value in zip(names, values, strict=True))
    return Table(columns, [tuple(values)])
