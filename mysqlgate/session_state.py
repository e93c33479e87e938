"""Session state that can move between upstream connections, and how to move it.

A client's session state is what its statements set and the server's trackers
reported: session variables (with their full values), the current schema and the
last insert id. An upstream connection carries the same record of what it has now.
Attaching a client to a connection means making the second equal to the first:
SET what differs, or reset the connection first when it holds something the client
never set (SPEC section 2, "Session state follows the client").
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from .charsets import Charsets
from .protocol.constants import COMMAND
from .protocol.framing import encode_packet
from .protocol.messages import SessionState as TrackedChanges

# Session variables the trackers report but that cannot be replayed as a value: one-shot
# ones (used by the next statement, then reset unreported), LAST_INSERT_ID under two
# names, and `timestamp`, whose SET timestamp=DEFAULT is reported with the old fixed
# value (MariaDB 10.11, measured). Setting one pins the client instead.
UNMOVABLE_VARIABLES = frozenset({
    "timestamp", "insert_id", "last_insert_id", "identity", "rand_seed1", "rand_seed2",
    "gtid_seq_no",
})

# mysqlgate's own connections track every variable, the schema and state changes; a
# client's settings of these say only what the client itself wants to be told.
TRACKING_VARIABLES = frozenset({
    "session_track_system_variables", "session_track_schema", "session_track_state_change",
    "session_track_transaction_info", "session_track_gtids",
})


@dataclass(frozen=True)
class VariableKinds:
    """Session variables a client cannot set, as the server answered a SET of each
    (accounts.probe_variables): `server_set` are read-only, so a change the trackers
    report is the server's own (MySQL's statement_id, after every statement) and is
    never recorded nor replayed; `unreplayable` refused for another reason (a privilege
    the account lacks): a change of one pins the client, as nothing could move it."""

    server_set: frozenset[str] = frozenset()
    unreplayable: frozenset[str] = frozenset()

    def own(self, tracked: TrackedChanges) -> TrackedChanges:
        """A tracker report without what the server changed on its own."""
        if not self.server_set or not tracked.variables:
            return tracked
        return dataclasses.replace(tracked, variables=[
            (name, value) for name, value in tracked.variables
            if name not in self.server_set])


def quoted(name: str) -> str:
    """A variable name as an identifier: `name`, or `component`.`name`."""
    return ".".join("`" + part.replace("`", "``") + "`" for part in name.split("."))


def _on(value: object) -> bool:
    return str(value).upper() in ("1", "ON", "TRUE")


@dataclass(frozen=True)
class Tracking:
    """What a client's session reports through session-state tracking: the server's
    defaults, or what the client set. An OK packet's tracking data is cut down to it,
    so that a client sees what a direct connection would send."""

    variables: tuple[str, ...] | None  # None: '*', every variable
    schema: bool
    state_change: bool

    @classmethod
    def from_settings(cls, variables: str, schema: object, state_change: object) -> Tracking:
        names = tuple(n.strip().lower() for n in variables.split(",") if n.strip())
        return cls(None if "*" in names else names, _on(schema), _on(state_change))

    def with_setting(self, name: str, value: str) -> Tracking:
        if name == "session_track_system_variables":
            return Tracking.from_settings(value, self.schema, self.state_change)
        if name == "session_track_schema":
            return Tracking(self.variables, _on(value), self.state_change)
        if name == "session_track_state_change":
            return Tracking(self.variables, self.schema, _on(value))
        return self  # transaction info, GTIDs: mysqlgate does not track them upstream

    def filter(self, tracked: TrackedChanges) -> TrackedChanges | None:
        """What of the trackers' report this client asked for; None: nothing."""
        # (The server reports variables in no fixed order: measured, it varies.)
        variables = [(name, value) for name, value in tracked.variables
                     if self.variables is None or name in self.variables]
        schema = tracked.schema if self.schema else None
        state_changed = tracked.state_changed and self.state_change
        if not (variables or schema is not None or state_changed):
            return None
        return TrackedChanges(variables, schema, state_changed)


# What every upstream connection tracks (backend.TRACKING_SQL).
TRACK_EVERYTHING = Tracking(None, True, True)

# SET NAMES cs COLLATE coll: MariaDB's tracker reports the three character_set_*
# variables only, never the collation the statement chose.
SET_NAMES_COLLATE = re.compile(
    rb"\bSET\s+NAMES\s+[`'\"]?\w+[`'\"]?\s+COLLATE\s+[`'\"]?(\w+)", re.IGNORECASE
)


def apply_tracked(variables: dict[str, str], reported: list[tuple[str, str]],
                  statement: bytes, charsets: Charsets) -> None:
    """Record what the trackers reported, plus what changed with it unreported:
    setting a character set resets its collation and the reverse (the servers report
    only the variable named in the statement, and for SET NAMES ... COLLATE not the
    collation it chose: that one comes from the statement text). The collation a
    character set brings is the server's default for it (`charsets`)."""
    names = set()
    for name, value in reported:
        variables[name] = value
        names.add(name)
    if "character_set_connection" in names and "collation_connection" not in names:
        match = SET_NAMES_COLLATE.search(statement)
        collation = (match.group(1).decode().lower() if match else
                     charsets.default_collation(variables["character_set_connection"],
                                                variables))
        if collation is not None:
            variables["collation_connection"] = collation
        else:
            variables.pop("collation_connection", None)
    elif "collation_connection" in names and "character_set_connection" not in names:
        charset = charsets.charset_of(variables["collation_connection"])
        if charset is not None:
            variables["character_set_connection"] = charset


@dataclass
class SessionState:
    variables: dict[str, str] = field(default_factory=dict)
    schema: str | None = None
    last_insert_id: int = 0

    def copy(self) -> SessionState:
        return SessionState(dict(self.variables), self.schema, self.last_insert_id)


@dataclass
class Diagnostics:
    """What a client's previous statement left in its session's diagnostics area, as far
    as the packets tell: ROW_COUNT() and FOUND_ROWS() exactly (so that they can be given
    on another connection), and whether its connection holds conditions (warnings or
    an error) for a SHOW WARNINGS, which no packet carries."""

    row_count: int = 0  # a fresh session's (measured on MariaDB 10.11)
    # None: after SQL_CALC_FOUND_ROWS, only the server knows. (A fresh session's is
    # whatever its server thread counted last: MariaDB reuses threads; 0 is as good.)
    found_rows: int | None = 0
    conditions: bool = False

    @property
    def values(self) -> tuple[int, int | None]:
        return self.row_count, self.found_rows

    @property
    def on_connection_only(self) -> bool:
        """Whether only the client's current connection can answer a read of them."""
        return self.conditions or self.found_rows is None


@dataclass
class Reconciliation:
    """What to send an upstream connection before it serves a client."""

    reset: bool = False
    commands: list[bytes] = field(default_factory=list)  # framed, each a separate command
    # It sets variables: a SET may warn (MySQL's 3135 for some sql_mode values), and
    # it may fail (a privilege revoked, a time zone dropped), unlike the rest.
    sets_variables: bool = False
    # It selects another database: that fails when the database was dropped, and
    # whatever is sent behind it runs in the old one.
    changes_schema: bool = False
    # The connection must leave its database (the client has none): a new login, which
    # resets the session too, before the commands.
    change_user: bool = False

    @property
    def needed(self) -> bool:
        return self.reset or bool(self.commands)

    @property
    def may_fail(self) -> bool:
        """Whether the server may refuse part of it (see _attach in session.py)."""
        return self.sets_variables or self.changes_schema


def reconcile(client: SessionState, upstream: SessionState, fresh: SessionState,
              force_reset: bool = False) -> Reconciliation:
    """Commands that make `upstream` look like `client`. `fresh` is what the
    connection holds right after a reset."""
    plan = Reconciliation()
    base = upstream
    # A client that never chose a schema gets the one a fresh connection starts in,
    # not whatever the previous client left behind; when that is none, only a new login
    # on the connection (COM_CHANGE_USER, a reset too) leaves the database selected.
    wanted = client.schema if client.schema is not None else fresh.schema
    plan.change_user = wanted is None and upstream.schema is not None
    if force_reset or plan.change_user or any(
            name not in client.variables for name in upstream.variables):
        plan.reset = True  # it holds a variable the client never set
        base = fresh
    changed = {
        name: value for name, value in client.variables.items()
        if base.variables.get(name) != value
    }
    if changed:
        plan.commands.append(set_statement(changed))
        plan.sets_variables = True
    schema = upstream.schema  # COM_RESET_CONNECTION keeps the current database
    if wanted is not None and wanted != schema:
        plan.commands.append(
            encode_packet(bytes((COMMAND.COM_INIT_DB,)) + wanted.encode(), 0)[0]
        )
        plan.changes_schema = True
    insert_id = 0 if plan.reset else base.last_insert_id
    if client.last_insert_id != insert_id:
        plan.commands.append(query_packet(f"DO LAST_INSERT_ID({int(client.last_insert_id)})"))
    return plan


def _order(name: str) -> int:
    # Character sets before collations (setting a character set resets the
    # collation), sql_mode last (it can change how the values before it parse).
    if name.startswith("character_set_"):
        return 0
    if name.startswith("collation_"):
        return 1
    if name == "sql_mode":
        return 3
    return 2


def sql_value(name: str, value: str) -> str:
    if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
        return value
    if value == "" and name.startswith("character_set_"):
        return "NULL"
    if "\\" in value or not value.isascii():
        return "X'" + value.encode().hex() + "'"
    return "'" + value.replace("'", "''") + "'"


def set_statement(variables: dict[str, str]) -> bytes:
    assignments = ", ".join(
        f"{quoted(name)}={sql_value(name, value)}"
        for name, value in sorted(variables.items(), key=lambda item: _order(item[0]))
    )
    return query_packet("SET SESSION " + assignments)


def restore_role_statement(server_version: bytes, login_role: str | None) -> bytes:
    """The statement that gives a connection back the role it logged in with, which
    COM_RESET_CONNECTION does not (MariaDB 10.11, measured)."""
    if b"MariaDB" not in server_version:
        return query_packet("SET ROLE DEFAULT")  # MySQL 8: the account's default roles
    if login_role is None:
        return query_packet("SET ROLE NONE")
    return query_packet("SET ROLE `" + login_role.replace("`", "``") + "`")


def query_packet(sql: str) -> bytes:
    return encode_packet(bytes((COMMAND.COM_QUERY,)) + sql.encode(), 0)[0]


# A statement that uses a table and reads none: it empties the diagnostics area, which
# statements without tables (DO, SET, SELECT 1) leave as it is (measured).
CLEAR_DIAGNOSTICS = query_packet("SELECT 1 FROM (SELECT 1) AS mysqlgate_clear LIMIT 0")
