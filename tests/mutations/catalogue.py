"""The mutation catalogue: each entry breaks one guarantee of mysqlgate on purpose and
names the tests that must notice.

A mutation is a list of edits (an exact snippet of a file under mysqlgate/, unique in
that file, and what replaces it) plus a small selection of tests: the ones that state
the guarantee, not the whole suite. run.py applies each mutation to a copy of the
repository and runs its selection; a mutation the selection does not catch is a hole in
the test suite, and a snippet that no longer matches the code is reported as STALE so
that this file is kept in step with the code.

Selections are pytest node ids (a file, a function: all its parameters, or one
parametrized case) or K(path, expr) for a -k expression. Integration tests come first,
unit tests last: with -x the first failure stops the run, so the table's "caught by"
column says which layer noticed (a pin that only a unit test notices is detected, but
no test shows its consequence end to end).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Edit:
    """Replace `original` (exactly once in mysqlgate/`file`) with `replacement`."""

    file: str
    original: str
    replacement: str


@dataclass(frozen=True)
class K:
    """The tests under `path` that pytest's -k `expr` selects."""

    path: str
    expr: str


Selector = str | K


@dataclass(frozen=True)
class Mutation:
    name: str
    guarantee: str  # one line: what the mutation breaks
    edits: tuple[Edit, ...]
    tests: tuple[Selector, ...]


# -- test selections ------------------------------------------------------------------------------

INTEGRATION = "tests/integration"
ISOLATION = f"{INTEGRATION}/test_isolation.py"
COMMANDS = f"{INTEGRATION}/test_commands.py"
CLIENTS = f"{INTEGRATION}/test_clients.py"
CAPABILITIES = f"{INTEGRATION}/test_capabilities.py"
POOL_LIMITS = f"{INTEGRATION}/test_pool_limits.py"
AUTH = f"{INTEGRATION}/test_auth.py"
LEAKS = f"{INTEGRATION}/test_leaks.py"
ERROR_CODES = f"{INTEGRATION}/test_error_codes.py"
DIAGNOSTICS = f"{INTEGRATION}/test_diagnostics.py"
UNTRACKED = f"{INTEGRATION}/test_untracked_state.py"
IDLE_AND_KILL = f"{INTEGRATION}/test_idle_and_kill.py"
COLD_START = f"{INTEGRATION}/test_cold_start.py"
RESTART = f"{INTEGRATION}/test_restart.py"
POOL_MODEL = "tests/unit/test_pool_model.py"  # the pool against its reference model
POOL_UNIT = "tests/unit/test_pool.py"
SQL_EFFECTS_UNIT = "tests/unit/test_sql_effects.py"
SESSION_STATE_UNIT = "tests/unit/test_session_state.py"

PINNED_KEEPS_STATE = f"{LEAKS}::test_pinned_client_keeps_its_state_while_another_client_runs"
RESET_BEFORE_ANOTHER = f"{ISOLATION}::test_changed_session_is_reset_before_another_client_gets_it"
STATEMENT_EFFECTS_UNIT = f"{SQL_EFFECTS_UNIT}::test_statement_effects"


def leak(*cases: str, leave: str = "close") -> tuple[str, ...]:
    """The leak probe of test_leaks.py through mysqlgate: client A runs case `case` and
    leaves by `leave`, B must then see a fresh session."""
    return tuple(f"{LEAKS}::test_nothing_reaches_the_next_client[{leave}-{case}]" for case in cases)


def _detects_nothing(line: str) -> Edit:
    """sql_effects.py: `effects |= Effect.X` on `line` becomes a no-op."""
    indent = line[: len(line) - len(line.lstrip())]
    return Edit("sql_effects.py", line, f"{indent}effects |= Effect.NONE  # mutation\n")


def _pin_detection(reason: str, line: str, tests: tuple[Selector, ...]) -> Mutation:
    return Mutation(
        name=f"pin: {reason} not detected",
        guarantee=f"A statement that leaves {reason} state pins its client (sql_effects)",
        edits=(_detects_nothing(line),),
        tests=(*tests, STATEMENT_EFFECTS_UNIT),
    )


# -- the catalogue --------------------------------------------------------------------------------

MUTATIONS: tuple[Mutation, ...] = (
    # 1. Reset when a client leaves.
    Mutation(
        name="no reset on detach: pins",
        guarantee="A client leaving with unmovable state gets its connection reset",
        edits=(Edit('session/client_state.py',
             ('        return self.hold_reason() in (HOLD_TRANSACTION, HOLD_SAVEPOINT,'
              ' HOLD_PINNED)\n'),
             ('        return self.hold_reason() in (HOLD_TRANSACTION, HOLD_SAVEPOINT) '
              ' # mutation\n')),),
        tests=(
            RESET_BEFORE_ANOTHER,
            *leak("user_var_select_assign", "named_lock_select", "temporary_table",
                  "handler_open", "lock_tables_read", "prepare", "role"),
            *leak("named_lock_select", "temporary_table", leave="killed"),
        ),
    ),
    Mutation(
        name="no reset on detach: open transaction",
        guarantee="A client leaving inside a transaction gets its connection reset",
        edits=(Edit('session/client_state.py',
             ('        return self.hold_reason() in (HOLD_TRANSACTION, HOLD_SAVEPOINT,'
              ' HOLD_PINNED)\n'),
             '        return self.hold_reason() in (HOLD_SAVEPOINT, HOLD_PINNED)  # mutation\n'),),
        tests=(
            *leak("transaction_open", "autocommit_off_open"),
            *leak("transaction_open", leave="killed"),
            *leak("transaction_open", leave="after_error"),
        ),
    ),
    # What mysqlgate sends ahead of a client's statement (issue 14, found on MySQL).
    Mutation(
        name="replay: a read-only variable the server set",
        guarantee="What the server changes on its own (statement_id) is never replayed",
        edits=(Edit("session_state.py",
                    "        if not self.server_set or not tracked.variables:\n",
                    "        if True:  # mutation\n"),),
        tests=(
            f"{INTEGRATION}/test_replay.py::test_alternating_inserts_are_each_written_once_and_answered",
            f"{INTEGRATION}/test_local_answers.py",
            "tests/unit/test_session_state.py::test_the_servers_own_changes_are_not_the_sessions",
        ),
    ),
    Mutation(
        name="replay: a refused restore, the write sent behind it",
        guarantee="Never an error for a statement that ran: a write waits for a restore",
        edits=(Edit('session/attach.py',
             '        elif plan.may_fail and self._may_write(packet, command):\n',
             ('        elif plan.changes_schema and self._may_write(packet, command): '
              ' # mutation\n')),),
        tests=(f"{INTEGRATION}/test_replay.py::test_a_refused_restore_keeps_a_write_from_running",),
    ),
    Mutation(
        name="replay: SET NAMES with a MariaDB default collation",
        guarantee="A character set's default collation is the server's, not a driver's",
        edits=(Edit("session_state.py",
                    "                     charsets.default_collation(variables[",
                    "                     builtin().default_collation(variables["),
               Edit("session_state.py", "from .charsets import Charsets\n",
                    "from .charsets import Charsets, builtin  # mutation\n")),
        tests=(
            f"{CLIENTS}::test_session_state_follows_client",
            f"{SESSION_STATE_UNIT}::test_set_names_takes_the_servers_default_collation",
        ),
    ),
    Mutation(
        name="replay: a SET's warning left for the client",
        guarantee="A replay leaves no trace: no warning of mysqlgate's SET in SHOW WARNINGS",
        edits=(Edit('session/attach.py',
             ('        if plan.sets_variables or upstream.conditions and'
              ' upstream.last_client != client.id:\n'),
             ('        if upstream.conditions and upstream.last_client != client.id:  #'
              ' mutation\n')),),
        tests=(f"{INTEGRATION}/test_replay.py::test_a_replayed_set_leaves_no_warning",),
    ),
    Mutation(
        name="a prepared statement's effects ignored",
        guarantee="GET_LOCK or stored code run by COM_STMT_EXECUTE does not outlive its client",
        edits=(Edit('session/session.py',
             ('                client.effects = statement.effects if statement is not'
              ' None else Effect.NONE\n'),
             '                client.effects = Effect.NONE  # mutation\n'),),
        tests=(f"{LEAKS}::test_named_lock_of_a_prepared_statement_goes_with_its_client",),
    ),
    Mutation(
        name="a database another client selected is kept",
        guarantee="A client without a database never finds itself in another client's",
        edits=(Edit("session_state.py",
                    "    plan.change_user = wanted is None and upstream.schema is not None\n",
                    "    plan.change_user = False  # mutation\n"),),
        tests=(f"{INTEGRATION}/test_replay.py::"
               "test_a_client_without_a_database_never_finds_another_clients",),
    ),
    Mutation(
        name="an error packet after half a row",
        guarantee="A connection lost mid-packet ends the client's, never corrupts its stream",
        edits=(Edit("session/commands.py",
                    "        if exchange.forwarded and not exchange.swallow and not exchange"
                    ".held and (\n",
                    "        if False and (  # mutation\n"),),
        tests=(f"{IDLE_AND_KILL}::test_kill_mid_result",),
    ),
    Mutation(
        name="a cut row passed on at once",
        guarantee="A small row cut by a read waits for its rest: a loss then gets a clear error",
        edits=(Edit("session/exchange.py",
                    "            if cut >= start and scanner.skip and scanner.skip + end - cut"
                    " <= HOLD_ROW:\n",
                    "            if False:  # mutation\n"),),
        tests=(f"{IDLE_AND_KILL}::test_kill_mid_result",),
    ),
    # 2. COM_RESET_CONNECTION.
    Mutation(
        name="no reset on COM_RESET_CONNECTION",
        guarantee="COM_RESET_CONNECTION resets the upstream session the client held",
        edits=(Edit('session/attach.py',
             '            client.account.pool.release(backend, reset=True)\n',
             '            client.account.pool.release(backend, reset=False)  # mutation\n'),),
        tests=(
            f"{COMMANDS}::test_reset_connection_forgets_session_state",
            f"{COMMANDS}::test_reset_connection_restores_session_variables",
        ),
    ),
    # 3. Pins: each reason sql_effects detects from the text ...
    _pin_detection(
        "user_variables", "        effects |= Effect.USER_VARIABLES\n",
        (*leak("user_var_select_assign", "user_var_select_into", "user_var_select_into_two",
               "user_var_set", "user_var_with_sql_mode"), PINNED_KEEPS_STATE),
    ),
    _pin_detection(
        "named_locks", "            effects |= Effect.NAMED_LOCKS\n",
        (*leak("named_lock_select", "named_lock_do", "named_locks_two"), PINNED_KEEPS_STATE),
    ),
    _pin_detection(
        "role", "            effects |= Effect.ROLE\n",
        (*leak("role"), *leak("role", leave="killed"), PINNED_KEEPS_STATE),
    ),
    _pin_detection("handler", "        effects |= Effect.HANDLER\n", leak("handler_open")),
    _pin_detection(
        "last_insert_id", "                effects |= Effect.LAST_INSERT_ID\n",
        leak("last_insert_id_select", "last_insert_id_do", "last_insert_id_update"),
    ),
    _pin_detection(
        "sequence (NEXTVAL/SETVAL)", "            effects |= Effect.SEQUENCE\n",
        leak("sequence_nextval", "sequence_setval"),
    ),
    Mutation(
        name="pin: sequence (NEXT VALUE FOR) not detected",
        guarantee="NEXT VALUE FOR seq pins its client (sql_effects)",
        edits=(
            Edit(
                "sql_effects.py",
                "effects |= Effect.SEQUENCE if text == b\"NEXT\" else Effect.LASTVAL_READ",
                "effects |= Effect.NONE if text == b\"NEXT\" else Effect.LASTVAL_READ",
            ),
        ),
        tests=(*leak("sequence_next_value_for"), STATEMENT_EFFECTS_UNIT),
    ),
    _pin_detection(
        "table_locks", "        effects |= Effect.TABLE_LOCKS\n",
        (*leak("lock_tables_read", "lock_tables_write"),
         *leak("lock_tables_read", leave="killed")),
    ),
    # The XA leak cases fail on the unmutated code while they demand the same upstream
    # connection for B (mysqlgate closes an XA connection): run.py then drops them.
    _pin_detection("xa_transaction", "        effects |= Effect.XA\n",
                   leak("xa_active", "xa_prepared")),
    _pin_detection(
        "temporary_tables", "        effects |= Effect.TEMPORARY_TABLES\n",
        (*leak("temporary_table", "temporary_table_select", "temporary_table_shadowing"),
         RESET_BEFORE_ANOTHER, PINNED_KEEPS_STATE),
    ),
    _pin_detection(
        "sql_prepare", "        effects |= Effect.SQL_PREPARE\n",
        (*leak("prepare"), f"{COMMANDS}::test_prepared_statements_pin_until_closed",
         PINNED_KEEPS_STATE),
    ),
    _pin_detection("next_transaction", "            effects |= Effect.NEXT_TRANSACTION\n",
                   leak("isolation_next_transaction", "read_only_next_transaction")),
    # SQL_CALC_FOUND_ROWS no longer pins: the client keeps its connection until someone
    # waits, then mysqlgate reads FOUND_ROWS() for it (Diagnostics.found_rows_exact).
    Mutation(
        name="SQL_CALC_FOUND_ROWS not detected",
        guarantee="FOUND_ROWS() after SQL_CALC_FOUND_ROWS is the server's count (sql_effects)",
        edits=(_detects_nothing("            effects |= Effect.CALC_FOUND_ROWS\n"),),
        tests=(f"{DIAGNOSTICS}::test_found_rows_after_calc_found_rows_survives_a_preemption",
               *leak("found_rows"), STATEMENT_EFFECTS_UNIT),
    ),
    # ... the pins the server's trackers give, the prepared-statement pin, pin() itself.
    Mutation(
        name="pin: unexplained tracker change ignored",
        guarantee="A change the trackers flag but do not describe pins (unexplained_change)",
        edits=(Edit('session/tracking.py',
             ('        if self._temporary_variables() and not self.client.effects &'
              ' Effect.MULTIPLE:\n'
              '            return\n'
              '        self.client.pin(PIN_SESSION_STATE)\n'),
             '        return  # mutation\n'),),
        tests=leak("user_var_in_function", "user_var_in_trigger", "user_var_execute_immediate",
                   "user_var_in_procedure"),
    ),
    Mutation(
        name="pin: state_changed-only OK ignored",
        guarantee="An OK whose tracker says only 'state changed' pins (note_ok)",
        edits=(Edit('session/tracking.py',
             ('            # pinned for that already: one pin, under the reason that says why.\n'
              '            client.pin(PIN_SESSION_STATE)\n'),
             '            pass  # mutation\n'),),
        tests=leak("user_var_in_trigger", "user_var_execute_immediate", "user_var_in_procedure",
                   "user_var_in_function"),
    ),
    # Prepared statements: no pin, but long data and cursors keep their connection.
    Mutation(
        name="pin: long data waiting for its execute",
        guarantee="Long data stays on the connection its execute will run on",
        edits=(Edit('session/client_state.py',
             ('        for reason, tied in ((PIN_LONG_DATA, any(s.long_data for s in'
              ' self.statements)),\n'),
             '        for reason, tied in ((PIN_LONG_DATA, False),  # mutation\n'),),
        tests=(f"{INTEGRATION}/test_connector_prepared.py::test_send_long_data_and_reset",),
    ),
    Mutation(
        name="pin: open cursor",
        guarantee="A statement's open cursor keeps its client on that connection",
        edits=(Edit('session/client_state.py',
             ('                             (PIN_CURSOR, any(s.cursor for s in'
              ' self.statements))):\n'),
             '                             (PIN_CURSOR, False)):  # mutation\n'),),
        tests=(f"{INTEGRATION}/test_connector_prepared.py::test_cursor_fetch",),
    ),
    Mutation(
        name="parameter types not sent to another connection's statement",
        guarantee="An execute that binds no types runs with the client's, on any connection",
        edits=(Edit("prepared.py",
                    "    if client_types is None or client_types == bound_types:\n",
                    "    if True:  # mutation\n"),),
        tests=(f"{INTEGRATION}/test_prepared.py::test_types_bound_once_follow_the_statement_to_"
               "another_connection",),
    ),
    Mutation(
        name="upstream statements nobody uses are never closed",
        guarantee="Statements every client closed are closed on the server too",
        edits=(Edit('upstream_session.py',
             '    for server_id in upstream.statements.drop_unused(registry.open):\n',
             '    for server_id in []:  # mutation\n'),),
        tests=(f"{INTEGRATION}/test_connector_prepared.py::test_closing_statements_and_the_"
               "server_limit",),
    ),
    Mutation(
        name="pin() does nothing",
        guarantee="Pinned clients keep their connection until they reset or leave",
        edits=(Edit('session/client_state.py',
             ('    def pin(self, reason: str) -> None:\n'
              '        if reason not in self.pins:\n'),
             ('    def pin(self, reason: str) -> None:\n'
              '        return  # mutation\n'
              '        if reason not in self.pins:\n')),),
        tests=(
            RESET_BEFORE_ANOTHER,
            f"{COMMANDS}::test_prepared_statements_pin_until_closed",
            PINNED_KEEPS_STATE,
            *leak("user_var_set", "temporary_table"),
        ),
    ),
    # 4. The role COM_RESET_CONNECTION does not restore.
    Mutation(
        name="no role restore after reset",
        guarantee="A reset connection gets the login's role back (SET ROLE survives a reset)",
        edits=(Edit('upstream_session.py',
             ('        return [*RESET_COMMANDS, *([self.restore_role] if'
              ' self.role_changed else [])]\n'),
             '        return [*RESET_COMMANDS]  # mutation\n'),),
        tests=(*leak("role"), *leak("role", leave="in_transaction"),
               *leak("role", leave="killed")),
    ),
    # 5. XA: a reset after XA PREPARE leaves the connection unusable; it is closed instead.
    Mutation(
        name="XA connection reset, not closed",
        guarantee="A connection that ran XA statements is closed, never reset and reused",
        edits=(Edit('upstream_session.py',
             '        if self.unresettable:\n',
             '        if False:  # mutation\n'),),
        tests=leak("xa_prepared", "xa_active"),
    ),
    # 6. CALL: a procedure's named locks raise no tracker flag.
    Mutation(
        name="no reset after CALL",
        guarantee="A connection that ran CALL is reset when its client detaches",
        edits=(Edit('session/tracking.py',
             ('        if effects & RESET_AFTER:\n'
              '            client.left_untracked = True\n'),
             ('        if effects & RESET_AFTER:\n'
              '            pass  # mutation\n')),),
        tests=leak("named_lock_in_procedure", "user_var_in_procedure"),
    ),
    # 7. The pool's size bound.
    Mutation(
        name="pool opens beyond its size",
        guarantee="The pool never holds more than pool.size upstream connections",
        edits=(
            Edit(
                "pool.py",
                "            if self.open_count >= self.effective_size:\n"
                "                if self._idle and self.open_count - 1 < self.effective_size:\n",
                "            if False:  # mutation\n"
                "                if self._idle and self.open_count - 1 < self.effective_size:\n",
            ),
        ),
        tests=(
            f"{POOL_LIMITS}::test_queue_timeout_error_then_recovery",
            f"{POOL_LIMITS}::test_many_clients_share_a_pool_below_the_account_limit",
            POOL_MODEL,
            POOL_UNIT,
        ),
    ),
    # 7c. The pool's other invariants (issue 16), each stated by the model test
    # (test_pool_model.py), and end to end where a test can see it.
    Mutation(
        name="pool serves a key's waiters out of order",
        guarantee="Clients asking with the same capability key are served in FIFO order",
        edits=(
            Edit("pool_recycling.py",
                 "        for req in self._waiters:\n"
                 "            if req.key == key:\n"
                 "                if self._clock() - backend.last_active >",
                 "        for req in reversed(self._waiters):  # mutation\n"
                 "            if req.key == key:\n"
                 "                if self._clock() - backend.last_active >"),
        ),
        tests=(POOL_MODEL, POOL_UNIT),
    ),
    Mutation(
        name="pool answers a request twice",
        guarantee="Every request is answered exactly once (a connection or an error)",
        edits=(
            Edit("pool_state.py",
                 "        \"\"\"Hand `backend` to `req`, a request in the queue.\"\"\"\n"
                 "        self._waiters.remove(req)\n",
                 "        \"\"\"Hand `backend` to `req`, a request in the queue.\"\"\"\n"
                 "        pass  # mutation\n"),
        ),
        tests=(f"{POOL_LIMITS}::test_many_clients_share_a_pool_below_the_account_limit",
               POOL_MODEL, POOL_UNIT),
    ),
    Mutation(
        name="pool serves a client that went away",
        guarantee="A request whose client went away is never answered",
        edits=(
            Edit("pool.py",
                 "            self._waiters.discard(req)\n"
                 "\n"
                 "    def take_ready",
                 "            pass  # mutation\n"
                 "\n"
                 "    def take_ready"),
        ),
        tests=(POOL_MODEL, POOL_UNIT),
    ),
    Mutation(
        name="pool lends a connection it keeps idle",
        guarantee="No connection is both idle and in use",
        edits=(
            Edit("pool.py",
                 "        self._idle.pop()\n"
                 "        self._lent.add(backend)\n",
                 "        self._lent.add(backend)  # mutation\n"),
        ),
        tests=(f"{POOL_LIMITS}::test_many_clients_share_a_pool_below_the_account_limit",
               POOL_MODEL, POOL_UNIT),
    ),
    Mutation(
        name="pool hands out an expired idle connection",
        guarantee="No connection idle longer than pool.idle_timeout is handed out",
        edits=(
            Edit("pool_state.py",
                 "        elif now - backend.last_active > self.settings.idle_timeout:\n"
                 "            self.stats.closed_idle += 1\n"
                 "            backend.close()\n",
                 "        elif False:  # mutation\n"
                 "            pass\n"),
        ),
        tests=(POOL_MODEL, POOL_UNIT),
    ),
    Mutation(
        name="pool hands out a closed idle connection",
        guarantee="No connection whose loss is known is handed out",
        edits=(
            Edit("pool.py", "        if backend.key != key or backend.closed or \\\n",
                 "        if backend.key != key or \\\n"),
        ),
        tests=(POOL_MODEL, POOL_UNIT),
    ),
    Mutation(
        name="pool loses a connection after its reset",
        guarantee="Every connection the pool opened is idle, in use, on its way, or closed",
        edits=(
            Edit("pool_recycling.py",
                 "            self.stats.resets += 1\n"
                 "        self._arrived(backend.key)\n"
                 "        self._offer(backend)\n",
                 "            self.stats.resets += 1\n"
                 "        self._arrived(backend.key)\n"
                 "        pass  # mutation\n"),
        ),
        tests=(f"{ISOLATION}::test_changed_session_is_reset_before_another_client_gets_it",
               POOL_MODEL, POOL_UNIT),
    ),
    Mutation(
        name="pool keeps an idle connection it was told died",
        guarantee="An idle connection the server closed leaves the pool at once",
        edits=(
            Edit("pool_recycling.py",
                 "        if backend in self._idle:\n"
                 "            self._idle.remove(backend)\n"
                 "            self.stats.closed_broken += 1\n",
                 "        if False:  # mutation\n"
                 "            self._idle.remove(backend)\n"
                 "            self.stats.closed_broken += 1\n"),
        ),
        tests=(POOL_MODEL, POOL_UNIT),
    ),
    Mutation(
        name="pool leaves a waiting client beside room for a connect",
        guarantee="A freed slot serves the queue (no client waits while a connect could start)",
        edits=(
            Edit("pool_recycling.py",
                 "                self._suspect_idle()\n"
                 "            self._fill()\n"
                 "            return\n",
                 "                self._suspect_idle()\n"
                 "            return  # mutation\n"),
        ),
        tests=(f"{IDLE_AND_KILL}::test_kill_mid_query", POOL_MODEL, POOL_UNIT),
    ),
    Mutation(
        name="pool statistics miss connections the janitor closes",
        guarantee="The pool's statistics match what happened",
        edits=(
            Edit("pool_state.py",
                 "        elif now - backend.last_active > self.settings.idle_timeout:\n"
                 "            self.stats.closed_idle += 1\n",
                 "        elif now - backend.last_active > self.settings.idle_timeout:\n"
                 "            pass  # mutation\n"),
        ),
        tests=(POOL_MODEL, POOL_UNIT),
    ),
    Mutation(
        name="pool stops looking for an unreachable server",
        guarantee="While the server cannot be reached, a connect is always due within ~1 s",
        edits=(
            Edit("pool_reconnect.py",
                 "        self._probe_timer = self._scheduler.call_at(self._probe_at,"
                 " self._probe_due)\n",
                 "        pass  # mutation\n"),
        ),
        tests=(f"{COLD_START}::test_server_started_after_mysqlgate", POOL_MODEL, POOL_UNIT),
    ),
    # 7a. Rows streamed as they arrive (issue 8): what is owed of a cut row.
    # The Python fallback (results.py_hop_rows) and the compiled code (_scan.c) alike;
    # the integration tests run the compiled one, test_results.py both.
    Mutation(
        name="cut row: one byte too few owed",
        guarantee="A row cut by the end of a read is followed to its last byte",
        edits=(
            Edit("protocol/results.py", "            skip = pos - size\n",
                 "            skip = pos - size - 1  # mutation\n"),
        ),
        tests=(
            f"{CLIENTS}::test_result_of_64_mib",
            f"{CLIENTS}::test_packets_of_16_mib_and_more",
            "tests/unit/test_results.py",
        ),
    ),
    Mutation(
        name="cut row: rows that look like the end hopped over",
        guarantee="The rows loop stops at a packet that may end the result (0xFE, 0xFF)",
        edits=(
            Edit("protocol/results.py",
                 "        if not length or buf[pos + HEADER_SIZE] >= 0xFE and length <"
                 " MAX_PACKET_PAYLOAD:\n",
                 "        if not length:  # mutation\n"),
        ),
        tests=(
            f"{CLIENTS}::test_pymysql_simple_queries",
            f"{CLIENTS}::test_result_of_64_mib",
            "tests/unit/test_results.py",
        ),
    ),
    Mutation(
        name="compiled cut row: one byte too few owed",
        guarantee="A row cut by the end of a read is followed to its last byte",
        edits=(
            Edit("protocol/_scan.c", "            skip = pos - size;\n",
                 "            skip = pos - size - 1;  /* mutation */\n"),
        ),
        tests=(
            f"{CLIENTS}::test_result_of_64_mib",
            "tests/unit/test_row_hop.py",
        ),
    ),
    Mutation(
        name="compiled: rows that look like the end hopped over",
        guarantee="The rows loop stops at a packet that may end the result (0xFE, 0xFF)",
        edits=(
            Edit("protocol/_scan.c",
                 "        if (length == 0 || (p[HEADER_SIZE] >= 0xFE && length <"
                 " MAX_PACKET_PAYLOAD))\n",
                 "        if (length == 0)  /* mutation */\n"),
        ),
        tests=(
            f"{CLIENTS}::test_pymysql_simple_queries",
            f"{CLIENTS}::test_result_of_64_mib",
            "tests/unit/test_row_hop.py",
        ),
    ),
    # 7b. Queue timeouts: one timer for the whole queue (issue 8).
    Mutation(
        name="queue expiry not re-armed",
        guarantee="Every queued client gets its queue-timeout error, not only the first",
        edits=(
            Edit("pool_queue.py",
                 "        if self:\n"
                 "            self.expire_by(min(req.deadline for req in self))\n",
                 "        pass  # mutation\n"),
        ),
        tests=(f"{POOL_LIMITS}::test_each_queued_client_times_out_at_its_own_deadline",
               POOL_MODEL),
    ),
    Mutation(
        name="queue expiry fails every waiter",
        guarantee="A queued client times out at its own deadline, not at an earlier one's",
        edits=(
            Edit("pool_queue.py", "        due = [req for req in self if req.deadline <= now]\n",
                 "        due = list(self)  # mutation\n"),
        ),
        tests=(f"{POOL_LIMITS}::test_each_queued_client_times_out_at_its_own_deadline",
               POOL_MODEL),
    ),
    # 8. 1226 on connect: back off and keep the client queued.
    Mutation(
        name="1226 on connect fails the client",
        guarantee="A 1226/1040 on connect keeps the client queued (it never sees 1226)",
        edits=(
            Edit(
                "pool_connects.py",
                "        if isinstance(exc, ServerError) and exc.err.code in"
                " TOO_MANY_CONNECTIONS:\n",
                "        if False:  # mutation\n",
            ),
        ),
        tests=(
            f"{POOL_LIMITS}::test_account_full_on_connect_keeps_the_client_queued",
            f"{POOL_LIMITS}::test_account_full_on_connect_serves_the_client_when_the_outsider_leaves",
            POOL_MODEL,
            POOL_UNIT,
        ),
    ),
    # 9. The capability key: all three places a connection meets a client, then each alone.
    Mutation(
        name="capability key ignored",
        guarantee="A client is only served by connections opened with its capability flags",
        edits=(
            Edit("pool.py", "        if backend.key != key or backend.closed or \\\n",
                 "        if backend.closed or \\\n"),
            Edit("pool_state.py", "            if backend.key == key:\n",
                 "            if True:  # mutation\n"),
            Edit("pool_recycling.py",
                 "            if req.key == key:\n"
                 "                if self._clock() - backend.last_active >",
                 "            if True:  # mutation\n"
                 "                if self._clock() - backend.last_active >"),
        ),
        tests=(
            f"{CAPABILITIES}::test_found_rows_follows_the_client",
            f"{CAPABILITIES}::test_deprecate_eof_client_interleaved_with_classic_client",
            POOL_MODEL,
            POOL_UNIT,
        ),
    ),
    Mutation(
        name="capability key ignored: take_ready",
        guarantee="The fast path hands out only an idle connection with the client's flags",
        edits=(
            Edit("pool.py", "        if backend.key != key or backend.closed or \\\n",
                 "        if backend.closed or \\\n"),
        ),
        tests=(
            f"{CAPABILITIES}::test_found_rows_follows_the_client",
            f"{CAPABILITIES}::test_deprecate_eof_client_interleaved_with_classic_client",
            POOL_MODEL,
            POOL_UNIT,
        ),
    ),
    Mutation(
        name="capability key ignored: _take_idle",
        guarantee="A queued request gets only an idle connection with its flags",
        edits=(
            Edit("pool_state.py", "            if backend.key == key:\n",
                 "            if True:  # mutation\n"),
        ),
        tests=(
            f"{CAPABILITIES}::test_found_rows_follows_the_client",
            f"{CAPABILITIES}::test_deprecate_eof_client_interleaved_with_classic_client",
            POOL_MODEL,
            POOL_UNIT,
        ),
    ),
    Mutation(
        name="idle connections removed while iterated",
        guarantee="Two idle connections that expire together drop no client (issue 16)",
        edits=(
            Edit("pool_state.py", "        for backend in reversed(list(self._idle)):\n",
                 "        for backend in reversed(self._idle):  # mutation\n"),
        ),
        tests=(
            f"{POOL_LIMITS}::test_many_clients_while_connections_expire",
            POOL_MODEL,
            POOL_UNIT,
        ),
    ),
    Mutation(
        name="capability key ignored: _return",
        guarantee="A released connection goes only to a waiter with its flags",
        edits=(
            Edit("pool_recycling.py",
                 "            if req.key == key:\n"
                 "                if self._clock() - backend.last_active >",
                 "            if True:  # mutation\n"
                 "                if self._clock() - backend.last_active >"),
        ),
        tests=(
            f"{CAPABILITIES}::test_found_rows_follows_the_client",
            f"{CAPABILITIES}::test_deprecate_eof_client_interleaved_with_classic_client",
            POOL_MODEL,
            POOL_UNIT,
        ),
    ),
    # 10. The transaction hold.
    Mutation(
        name="detach inside a transaction",
        guarantee="A client keeps its connection while the server says a transaction is open",
        edits=(Edit('session/client_state.py',
             ('        if self.in_transaction:\n'
              '            return HOLD_TRANSACTION\n'),
             ('        if False:  # mutation\n'
              '            return HOLD_TRANSACTION\n')),),
        tests=(
            f"{POOL_LIMITS}::test_queue_timeout_error_then_recovery",
            f"{CLIENTS}::test_autocommit_commit_and_rollback",
            *leak("transaction_open", "autocommit_off_open"),
        ),
    ),
    # 11. LAST_INSERT_ID moves with DO LAST_INSERT_ID(n).
    Mutation(
        name="no LAST_INSERT_ID replay",
        guarantee="LAST_INSERT_ID() is the client's own on whatever connection it runs",
        edits=(
            Edit(
                "session_state.py",
                "        plan.commands.append(query_packet(f\"DO LAST_INSERT_ID("
                "{int(client.last_insert_id)})\"))\n",
                "        pass  # mutation\n",
            ),
        ),
        tests=(
            f"{CLIENTS}::test_last_insert_id_per_client",
            f"{SESSION_STATE_UNIT}::test_last_insert_id",
        ),
    ),
    # 12. Session variables and the schema follow the client.
    Mutation(
        name="no session variable replay",
        guarantee="Session variables the client set are SET on every connection it moves to",
        edits=(
            Edit(
                "session_state.py",
                "    if changed:\n"
                "        plan.commands.append(set_statement(changed))\n",
                "    if changed:\n"
                "        pass  # mutation\n",
            ),
        ),
        tests=(
            f"{ISOLATION}::test_moved_settings_do_not_reach_a_client_that_did_not_set_them",
            f"{CLIENTS}::test_session_state_follows_client",
            f"{SESSION_STATE_UNIT}::test_a_differing_variable_is_set",
        ),
    ),
    Mutation(
        name="no schema replay",
        guarantee="The client's schema is selected (COM_INIT_DB) on every connection it uses",
        edits=(
            Edit(
                "session_state.py",
                "    if wanted is not None and wanted != schema:\n",
                "    if False:  # mutation\n",
            ),
        ),
        tests=(
            f"{CLIENTS}::test_init_db_ping_and_statistics",
            f"{CLIENTS}::test_session_state_follows_client",
            *leak("use_other_schema"),
            f"{SESSION_STATE_UNIT}::test_schema_differences",
        ),
    ),
    # 13. Authentication.
    Mutation(
        name="any password accepted",
        guarantee="Clients log in only with the upstream account's own user and password",
        edits=(Edit('session/login.py',
             ('        if account is None or not auth.verify(client_plugin, password,'
              ' nonce, proof):\n'),
             '        if account is None:  # mutation\n'),),
        tests=(
            f"{AUTH}::test_wrong_password_is_refused_without_an_upstream_connection",
            f"{AUTH}::test_wrong_user_and_missing_password_are_refused",
            f"{INTEGRATION}/test_accounts.py",
        ),
    ),
    # 14. SET STATEMENT ... FOR: its variables are temporary.
    Mutation(
        name="SET STATEMENT values taken as the session's",
        guarantee="SET STATEMENT ... FOR values are not recorded as the client's settings",
        edits=(Edit('session/tracking.py',
             '        return bool(self.client.effects & Effect.SET_STATEMENT)\n',
             '        return False  # mutation\n'),),
        tests=(f"{UNTRACKED}::test_set_statement_values_are_temporary", *leak("set_statement")),
    ),
    # 15. LASTVAL reads per-session state no tracker reports.
    Mutation(
        name="LASTVAL read on a shared session",
        guarantee="LASTVAL / PREVIOUS VALUE FOR run on a session no other client used",
        edits=(Edit('session/attach.py',
             ('        return bool(self.client.effects & Effect.LASTVAL_READ) and \\\n'
              '            upstream.last_client not in (0, self.client.id)\n'),
             '        return False  # mutation\n'),),
        tests=(f"{UNTRACKED}::test_lastval_set_through_a_column_default_stays_with_its_client",
               *leak("sequence_nextval", "sequence_next_value_for")),
    ),
    # 16. Warnings and errors: kept for the client's SHOW WARNINGS, cleared for anyone else's.
    Mutation(
        name="no hold for SHOW WARNINGS",
        guarantee="After warnings or an error the client keeps its connection for SHOW WARNINGS",
        edits=(Edit('session/tracking.py',
             '        self.client.diagnostics.conditions = True\n',
             '        pass  # mutation\n'),),
        tests=(f"{DIAGNOSTICS}::test_show_warnings_and_errors_of_the_clients_own_statement",
               *leak("warnings", "warnings_insert_ignore", "error")),
    ),
    Mutation(
        name="another client's warnings not cleared",
        guarantee="A client never reads another client's warnings or error (cleared first)",
        edits=(Edit('session/attach.py',
             ('        if plan.sets_variables or upstream.conditions and'
              ' upstream.last_client != client.id:\n'),
             '        if plan.sets_variables:  # mutation\n'),),
        tests=leak("warnings", "warnings_insert_ignore", "error"),
    ),
    # Not in the original brief, same family: SET TRANSACTION applies to the next one.
)

MUTATIONS += (
    # 17. ROW_COUNT() / FOUND_ROWS() of the client's own previous statement.
    Mutation(
        name="ROW_COUNT()/FOUND_ROWS() read on another's connection as they are",
        guarantee="ROW_COUNT()/FOUND_ROWS() answer about the client's own previous statement",
        edits=(Edit('session/commands.py',
             ('            if effects & Effect.DIAGNOSTIC_VALUES and upstream.values !='
              ' diagnostics.values \\\n'),
             '            if False \\\n'),),
        tests=(
            f"{DIAGNOSTICS}::test_row_count_and_found_rows_after_another_client_used_the_"
            "connection",
            f"{DIAGNOSTICS}::test_many_clients_each_read_their_own_row_count",
        ),
    ),
    # 18. Holds for diagnostics give way to waiting clients.
    Mutation(
        name="diagnostics hold never gives way",
        guarantee="A connection kept only for SHOW WARNINGS goes to a waiting client",
        edits=(
            Edit("pool_preempt.py", "            give_back()\n", "            pass  # mutation\n"),
        ),
        tests=(
            f"{DIAGNOSTICS}::test_a_client_holding_warnings_does_not_block_the_pool",
            f"{DIAGNOSTICS}::test_found_rows_after_calc_found_rows_survives_a_preemption",
            POOL_MODEL,
        ),
    ),
    # 19. SPEC section 4: a read-only statement on a dead connection runs again.
    Mutation(
        name="no retry on a dead connection",
        guarantee="A read-only statement whose connection was already dead is run again",
        edits=(Edit('session/commands.py',
             ('            self.retry(exchange.backend, exc, exchange.packet)\n'
              '            return\n'),
             '            pass  # mutation\n'),),
        tests=(
            f"{IDLE_AND_KILL}::test_server_drops_an_idle_pooled_connection_the_gate_has_not_"
            "noticed",
        ),
    ),
    # 20. Variables the trackers report but that are not values to replay.
    Mutation(
        name="one-shot variables replayed as values",
        guarantee="insert_id, timestamp and the like pin instead of being replayed",
        edits=(Edit('session/tracking.py',
             '        if any(name in UNMOVABLE_VARIABLES or name in kinds.unreplayable\n',
             '        if any(False\n'),),
        tests=(f"{UNTRACKED}::test_one_shot_variables_pin_rather_than_move",),
    ),
    # 21. COM_SET_OPTION survives COM_RESET_CONNECTION.
    Mutation(
        name="multi-statements assumed off after a reset",
        guarantee="A client without CLIENT_MULTI_STATEMENTS never has two statements run",
        edits=(Edit('upstream_session.py',
             '    await backend.pipeline(upstream.reset_commands())\n',
             ('    await backend.pipeline(upstream.reset_commands())\n'
              '    backend.multi_statements = False  # mutation\n')),),
        tests=(f"{CAPABILITIES}::test_multi_statements_stay_off_after_a_reset",),
    ),
    # 23. After a 1226 the lowered pool size must be able to come back.
    Mutation(
        name="1226 back-off never probes beyond the lowered size",
        guarantee="The pool size comes back once the account has room again",
        edits=(Edit("pool.py",
                    "                elif self.effective_size < self.settings.size and \\\n"
                    "                        not self._reconnect.beyond and self.open_count <"
                    " self.settings.size:\n",
                    "                elif False:  # mutation\n"),),
        tests=(
            f"{POOL_LIMITS}::test_account_full_on_connect_serves_the_client_when_the_outsider_"
            "leaves",
            POOL_MODEL,
            POOL_UNIT,
        ),
    ),
    # 24. A savepoint with autocommit off, before the transaction shows in the flags.
    Mutation(
        name="no hold after SAVEPOINT",
        guarantee="A SAVEPOINT keeps its client on the connection until the transaction ends",
        edits=(Edit('session/tracking.py',
             '            client.savepoints = True\n',
             '            pass  # mutation\n'),),
        tests=(
            f"{INTEGRATION}/test_savepoints.py::test_savepoint_as_the_first_statement_with_"
            "autocommit_off",
            *leak("savepoint_autocommit_off"),
        ),
    ),
    # 25. A database named at login is checked at login.
    Mutation(
        name="database at login not checked",
        guarantee="An unusable database fails the login with the server's own error",
        edits=(Edit('session/login.py',
             '        if schema in account.known_schemas:\n',
             '        if True:  # mutation\n'),),
        tests=(f"{AUTH}::test_database_named_at_login_is_checked_at_login",),
    ),
    # 26. Settings answered by mysqlgate itself are the server's answers.
    Mutation(
        name="local settings answer not applied to the session",
        guarantee="A setting answered locally is the client's setting from then on",
        edits=(Edit('session/tracking.py',
             '            self.apply_tracked(tracked, None)\n',
             '            pass  # mutation\n'),),
        tests=(f"{INTEGRATION}/test_local_answers.py",),
    ),
    Mutation(
        name="tracking data not cut to the client's own settings",
        guarantee="A client is told of its session what its tracking settings ask for",
        edits=(Edit('session/tracking.py',
             ('        return None if tracked is None else'
              ' self.client.tracking.filter(tracked)\n'),
             '        return tracked  # mutation\n'),),
        tests=(f"{INTEGRATION}/test_local_answers.py",),
    ),
    # 27. KILL from clients aims at clients, never at a connection serving another.
    Mutation(
        name="KILL QUERY in flight does not hold the victim's connection",
        guarantee="A KILL QUERY never interrupts another client's statement",
        edits=(Edit('session/client_state.py',
             ('        if self.kill_pending:\n'
              '            return HOLD_KILL\n'),
             ('        if False:  # mutation\n'
              '            return HOLD_KILL\n')),),
        tests=(f"{INTEGRATION}/test_kill.py::test_kill_query_keeps_the_connection_until_it_ran",),
    ),
    Mutation(
        name="KILL of a CONNECTION_ID() value not resolved to its client",
        guarantee="KILL QUERY <the id CONNECTION_ID() showed> reaches that client",
        edits=(Edit('context.py',
             '            if backend is not None and backend.thread_id == ident:\n',
             '            if False:  # mutation\n'),),
        tests=(f"{INTEGRATION}/test_kill.py::test_kill_query_interrupts_only_its_clients_"
               "statement",),
    ),
    Mutation(
        name="a client's own wait_timeout ignored",
        guarantee="A client that set wait_timeout is disconnected after that long idle",
        edits=(Edit('janitor.py',
             '        if timeout and idle > timeout:\n',
             '        if False:  # mutation\n'),),
        tests=(f"{INTEGRATION}/test_kill.py::test_a_clients_own_wait_timeout",),
    ),
    # 22. EXECUTE IMMEDIATE runs a statement written in a string.
    Mutation(
        name="EXECUTE IMMEDIATE's string not read",
        guarantee="A named lock taken through EXECUTE IMMEDIATE pins its client",
        edits=(
            Edit(
                "sql_effects.py",
                "            effects |= statement_effects(literal) & ~Effect.MULTIPLE\n",
                "            pass  # mutation\n",
            ),
        ),
        tests=(f"{UNTRACKED}::test_named_lock_through_execute_immediate_stays_with_its_client",
               *leak("named_lock_execute_immediate", "user_var_execute_immediate")),
    ),
    # 23. The fast path for plain statements (sql_effects._plain_effects) must hand every
    # statement with a word that can leave state to the full reading.
    Mutation(
        name="fast path reads stateful words as plain",
        guarantee="A statement with GET_LOCK, LAST_INSERT_ID(n), NEXTVAL... pins although it"
                  " looks like a plain SELECT (sql_effects fast path)",
        edits=(
            Edit(
                "sql_effects.py",
                "            _PLAIN_STOP_WORDS.search(text, start) is not None:\n",
                "            False:  # mutation\n",
            ),
        ),
        tests=(*leak("named_lock_select", "last_insert_id_select", "sequence_nextval"),
               f"{SQL_EFFECTS_UNIT}::test_fast_path_agrees_with_the_full_reading"),
    ),
    # 24. Operating it (issue 7): stuck clients, PAUSE, cold start, console and TLS rules.
    Mutation(
        name="a stuck transaction keeps its connection",
        guarantee="A client idle in a transaction gives its connection back while others wait",
        edits=(Edit('janitor.py',
             ('    if idle > limit:\n'
              '        client.end_idle_transaction(idle)\n'),
             ('    if False:  # mutation\n'
              '        pass\n')),),
        tests=(f"{INTEGRATION}/test_stuck_clients.py",),
    ),
    Mutation(
        name="idle_transaction_timeout auto acts with no one waiting",
        guarantee="auto never ends a transaction that no other client waits for",
        edits=(Edit('janitor.py',
             '        if not account.pool.unserved_count or facts is None:\n',
             '        if facts is None:  # mutation\n'),),
        tests=(f"{INTEGRATION}/test_stuck_clients.py::"
               "test_auto_rolls_back_stuck_transactions_only_while_others_wait",),
    ),
    Mutation(
        name="idle_transaction_timeout auto acts for a client whose connection is coming",
        guarantee="auto ends a transaction only for a client nothing else will serve",
        edits=(Edit('janitor.py',
             '        if not account.pool.unserved_count or facts is None:\n',
             '        if not account.pool.waiting_count or facts is None:  # mutation\n'),),
        tests=("tests/unit/test_session.py::"
               "test_auto_ends_a_stuck_transaction_only_for_a_client_nothing_else_serves",),
    ),
    Mutation(
        name="PAUSE hands connections out",
        guarantee="While paused, no statement reaches the server",
        edits=(Edit("pool.py", "        self.paused = True\n",
                    "        self.paused = False  # mutation\n"),),
        tests=(f"{INTEGRATION}/test_admin.py::test_pause_holds_statements_and_resume_releases_them",
               POOL_MODEL, POOL_UNIT),
    ),
    # 28. Riding through a server restart (issue 16): clients wait, one probe looks.
    Mutation(
        name="an unreachable server fails clients at once",
        guarantee="While the server cannot be reached, clients wait up to pool.queue_timeout",
        edits=(Edit("pool_connects.py",
                    "            else:\n"
                    "                self.mark_unreachable(str(exc), key)\n"
                    "            return\n",
                    "            else:\n"
                    "                self.mark_unreachable(str(exc), key)\n"
                    "                for waiter in list(self._waiters):  # mutation\n"
                    "                    self._fail(waiter, self.unreachable_error())\n"
                    "            return\n"),),
        tests=(f"{RESTART}::test_a_restart_costs_clients_a_delay_not_an_error", POOL_MODEL,
               POOL_UNIT),
    ),
    Mutation(
        name="a connection's death leaves the idle ones unchecked",
        guarantee="A read run again after a lost connection never meets a second dead one",
        edits=(Edit("pool_recycling.py",
                    "            if died:\n"
                    "                self._suspect_idle()\n",
                    "            pass  # mutation\n"),),
        tests=(f"{RESTART}::test_a_restart_costs_clients_a_delay_not_an_error", POOL_MODEL,
               POOL_UNIT),
    ),
    Mutation(
        name="clients connect on their own while the server is unreachable",
        guarantee="While the server cannot be reached, one connect at a time (never a storm)",
        edits=(Edit("pool_reconnect.py",
                    "        return self.unreachable is not None or self._retry is not None\n",
                    "        return self._retry is not None  # mutation\n"),),
        tests=(POOL_MODEL, POOL_UNIT),
    ),
    Mutation(
        name="the server looked for once a second from the start",
        guarantee="Reconnects start tens of ms apart: a restart is found within 250 ms",
        edits=(Edit("pool_reconnect.py",
                    "        delay = min(PROBE_MAX, max(PROBE_MIN, (now - self.since) *"
                    " PROBE_GROWTH))\n",
                    "        delay = PROBE_MAX  # mutation\n"),),
        tests=(f"{RESTART}::test_a_restart_costs_clients_a_delay_not_an_error", POOL_UNIT),
    ),
    Mutation(
        name="a statement answered 1053 (server shutting down) is not run again",
        guarantee="A read the server refused because it shuts down waits for it, unseen",
        edits=(Edit("session/exchange.py",
                    "        if event == Event.ERR and not self.forwarded and end =="
                    " scanner.event_end and \\\n",
                    "        if False and \\\n"),),
        tests=(f"{RESTART}::test_a_restart_costs_clients_a_delay_not_an_error",),
    ),
    Mutation(
        name="client-range code: upstream lost sent as 2013",
        guarantee="mysqlgate never sends a client-library code (libmariadb: 2027 malformed)",
        edits=(Edit("errors.py", "    code = ER_NET_READ_ERROR\n",
                    "    code = 2013  # mutation\n"),),
        tests=(K(ERROR_CODES, "killed_mid_statement and (mysqlclient or mariadb-cli)"),
               f"{INTEGRATION}/test_idle_and_kill.py::test_kill_mid_query",
               "tests/unit/test_errors.py"),
    ),
    Mutation(
        name="client-range code: unreachable server sent as 2013",
        guarantee="mysqlgate never sends a client-library code (libmariadb: 2027 malformed)",
        edits=(Edit("errors.py",
                    '    app can tell "did not run" from "may have run"."""\n\n'
                    "    code = ER_SERVER_SHUTDOWN\n",
                    '    app can tell "did not run" from "may have run"."""\n\n'
                    "    code = 2013  # mutation\n"),),
        tests=(K(ERROR_CODES, "server_stopped and (mysqlclient or mariadb-cli)"),
               f"{INTEGRATION}/test_cold_start.py::test_server_started_after_mysqlgate",
               "tests/unit/test_errors.py"),
    ),
    Mutation(
        name="client-range code: idle pinned session sent as 2013",
        guarantee="mysqlgate never sends a client-library code (libmariadb: 2027 malformed)",
        edits=(Edit('session/session.py',
             '            ERR(UpstreamLost.code, message, UpstreamLost.sqlstate)\n',
             '            ERR(2013, message, UpstreamLost.sqlstate)  # mutation\n'),),
        tests=(K(ERROR_CODES, "idle_pinned and (mysqlclient or mariadb-cli)"),),
    ),
    Mutation(
        name="ping fails while the server is unreachable",
        guarantee="COM_PING answers for the client's own connection, also while the server "
                  "is down",
        edits=(Edit('session/attach.py',
             ('                # reach its users as "MySQL Connection not available",'
              ' not as ours.\n'
              '                self.replies.ok()\n'),
             ('                if client.account.pool.unreachable is not None:  # mutation\n'
              '                   '
              ' self.replies.mysqlgate_error(client.account.pool.unreachable_error())\n'
              '                    return\n'
              '                self.replies.ok()\n')),),
        tests=(f"{INTEGRATION}/test_cold_start.py::test_server_started_after_mysqlgate",
               K(ERROR_CODES, "server_stopped and connector")),
    ),
    Mutation(
        name="console open to any OS user without a password",
        guarantee="With no admin.password, only mysqlgate's own OS user (or root) logs in",
        edits=(Edit("admin/console.py",
                    "        if uid is not None and uid in (os.getuid(), 0):\n",
                    "        if uid is not None:  # mutation\n"),),
        tests=(f"{INTEGRATION}/test_admin.py::test_other_os_users_are_refused_without_a_password",),
    ),
    Mutation(
        name="listen.require_tls ignored",
        guarantee="Beyond loopback, clients without TLS are refused when require_tls is set",
        edits=(Edit('session/login.py',
             '        elif ctx.config["listen.require_tls"] and not port.local:\n',
             '        elif False:  # mutation\n'),),
        tests=(f"{INTEGRATION}/test_tls.py::test_require_tls_beyond_loopback",),
    ),
)

# -- several mysqlgates on one account (issue 18, fleet.py) ---------------------------------------

FLEET_TEST = f"{INTEGRATION}/test_fleet.py::test_three_gates_share_the_account"
MUTATIONS += (
    Mutation(
        name="fleet: opens without counting",
        guarantee="A mysqlgate never opens a connection that leaves less than pool.reserve "
                  "of the account free",
        edits=(Edit("fleet.py", "        room = self.budget - total\n",
                    "        room = pool.settings.size  # mutation\n"),),
        tests=(FLEET_TEST,),
    ),
    Mutation(
        name="fleet: counts only its own connections",
        guarantee="The count is the account's, every host's and program's connections",
        edits=(Edit("fleet_sql.py",
                    "        return Census(time.monotonic(), len(rows), count_mine, active, "
                    "parks)\n",
                    "        return Census(time.monotonic(), count_mine, count_mine, active, "
                    "parks)  # mutation\n"),),
        tests=(FLEET_TEST,),
    ),
    Mutation(
        name="fleet: pool opens by itself despite a grower",
        guarantee="With the fleet on, every connection is opened after a count",
        edits=(Edit("pool.py",
                    "            if self.grower is not None:  # fleet.py opens one once the "
                    "account has room\n",
                    "            if False:  # mutation\n"),),
        tests=(FLEET_TEST,
               "tests/unit/test_pool.py::test_with_a_grower_the_pool_opens_nothing_by_itself"),
    ),
    Mutation(
        name="fleet: idle connections never given back",
        guarantee="While others' clients wait, idle connections beyond the floor go to them "
                  "in seconds",
        edits=(Edit("fleet.py",
                    "        if spare_count > 0 and at_limit and census.shared:\n",
                    "        if False:  # mutation\n"),),
        tests=(FLEET_TEST,),
    ),
    Mutation(
        name="fleet: nothing taken from another mysqlgate",
        guarantee="Under equal load the account's connections are split evenly",
        edits=(Edit("fleet.py",
                    "        if not candidates:\n            return False\n",
                    "        if True:  # mutation\n            return False\n"),),
        tests=(FLEET_TEST,),
    ),
    Mutation(
        name="fleet: takes an offer beside its own",
        guarantee="Under equal load the account's connections are split evenly: none takes "
                  "another's offer while its own stands",
        edits=(Edit("fleet.py",
                    "        have = 0 if any_offer else self.have + offered\n",
                    "        have = 0 if any_offer else self.have  # mutation\n"),),
        tests=("tests/unit/test_fleet_offers.py",),
    ),
    Mutation(
        name="fleet: the reserve left to whoever took it",
        guarantee="When a program takes the reserve, the mysqlgates give one back",
        edits=(Edit("fleet.py",
                    "        if census.total <= self.budget:\n            self._over_since = "
                    "None\n            return False\n",
                    "        if True:  # mutation\n            self._over_since = None\n"
                    "            return False\n"),),
        tests=(f"{INTEGRATION}/test_fleet.py::test_a_program_that_takes_the_reserve_gets_it_"
               "back", FLEET_TEST),
    ),
    Mutation(
        name="fleet: a server that cannot share keeps the pool waiting on it",
        guarantee="Where the checks are not possible, the pool goes on as if alone",
        edits=(Edit("fleet.py",
                    "        self.pool.grower = None\n"
                    "        self.pool.resize(self.pool.settings)",
                    "        pass  # mutation\n"
                    "        self.pool.resize(self.pool.settings)"),),
        tests=(f"{INTEGRATION}/test_fleet.py::test_a_gate_that_cannot_see_the_account_goes_on_"
               "alone",),
    ),
    Mutation(
        name="fleet: the sharing spins through an outage",
        guarantee="An outage or a PAUSE costs clients a wait, never a stopped mysqlgate",
        edits=(Edit("fleet.py",
                    "            self._next_hungry = self._next_maintain = now + MAINTAIN_EVERY\n"
                    "            return\n",
                    "            return  # mutation\n"),),
        tests=(f"{INTEGRATION}/test_fleet.py::test_a_restart_and_a_pause_with_the_sharing_on",),
    ),
    Mutation(
        name="freed heap pages never given back",
        guarantee="The memory of a large result goes back to the system once it is freed",
        edits=(Edit("memory.py",
                    "    return libc is not None and libc.malloc_trim(0) == 1\n",
                    "    return False  # mutation\n"),),
        tests=("tests/unit/test_memory.py::test_giving_back_returns_the_holes_in_the_heap",),
    ),
    Mutation(
        name="a drained read-ahead waits for the periodic give-back",
        guarantee="The memory of a large result goes back to the system within a second",
        edits=(Edit("memory.py",
                    "        return since >= GIVE_BACK_EVERY or self._freed and since >= SOONEST\n",
                    "        return since >= GIVE_BACK_EVERY  # mutation\n"),),
        tests=("tests/unit/test_memory.py",),
    ),
    Mutation(
        name="a TLS context per upstream connection",
        guarantee="A connect does not reload the CA store (CPU, memory that stays)",
        edits=(Edit("upstream_login.py",
                    "@functools.lru_cache(maxsize=8)\n",
                    "# mutation: no cache\n"),),
        tests=("tests/unit/test_upstream_login.py::test_connections_share_one_tls_context_"
               "per_mode_and_ca_file",),
    ),
    Mutation(
        name="MySQL prepared statements shared by text alone",
        guarantee="One client's parameter types never change what another's statement answers",
        edits=(Edit("session/statements.py",
                    "        if self.client.account.server.mariadb:\n"
                    "            return statement.sql\n",
                    "        if True:  # mutation\n"
                    "            return statement.sql\n"),),
        tests=(f"{INTEGRATION}/test_connector_prepared.py::test_one_clients_parameter_types_"
               "do_not_reach_another",),
    ),
    Mutation(
        name="MySQL: a statement whose types change leaves its history behind",
        guarantee="A prepared statement answers as its own executions made it (MySQL)",
        edits=(Edit("session/statements.py",
                    "            if its_own and not statement.own:\n",
                    "            if False:  # mutation\n"),),
        tests=(f"{INTEGRATION}/test_connector_prepared.py::test_one_clients_parameter_types_"
               "do_not_reach_another",),
    ),
)

MUTATIONS_BY_NAME = {mutation.name: mutation for mutation in MUTATIONS}
assert len(MUTATIONS_BY_NAME) == len(MUTATIONS), "duplicate mutation names"
