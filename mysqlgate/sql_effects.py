"""What a statement may leave on its upstream connection, read from its text.

The server's session trackers describe session variables and the schema exactly, but
much of a session's state they never report, or report only as "something changed"
(measured on MariaDB 10.11, see shared/PROTOCOL-NOTES.md): `SELECT @y := 1`,
`SELECT ... INTO @z`, `GET_LOCK`, `HANDLER ... OPEN`, `LAST_INSERT_ID(expr)`,
`NEXTVAL(seq)` and `LOCK TABLES` raise no flag at all. So the session layer asks this
module what a statement may do, and pins or resets accordingly (SPEC section 2).

The text is tokenised, not parsed: string literals, quoted identifiers and comments
are skipped (so `'a@b.com'` is not a user variable), executable comments (`/*! */`,
`/*M! */`) count as code because the server runs them. Two cheap readings come first:
a plain SELECT, INSERT, UPDATE or DELETE (no user variable, comment, backslash, `;` or
word that can carry session state) costs a few regex scans (`_plain_effects`, whose
answer is always the full reading's: tests/unit/test_sql_effects.py checks it on a
corpus), and other text with none of the words that matter costs one.
"""

from __future__ import annotations

import re

from .builtin_names import BUILTIN_NAMES
from .sql_tokens import (
    DIAGNOSTIC_FUNCTIONS,
    DIAGNOSTIC_VARIABLES,
    Token,
    comma_separated,
    plain_svar_targets,
    split_statements,
    string_literals,
    svar_name,
    tokens,
)


class Effect:
    """What a statement may leave behind on its connection: bits of a plain int.

    Not an enum.IntFlag: the session tests a statement's effects a dozen times on the
    path of every statement, and an IntFlag `&` costs 20 times an int's (0.65 against
    0.03 us on Python 3.11, measured; bench/PROFILE.md)."""

    NONE = 0
    USER_VARIABLES = 1 << 0  # assigns user variables
    NAMED_LOCKS = 1 << 1  # GET_LOCK
    ROLE = 1 << 2  # SET ROLE: survives COM_RESET_CONNECTION
    HANDLER = 1 << 3  # HANDLER ... OPEN/READ
    LAST_INSERT_ID = 1 << 4  # LAST_INSERT_ID(expr): a value no packet reports
    SEQUENCE = 1 << 5  # NEXTVAL / SETVAL / LASTVAL: per-session last values
    TABLE_LOCKS = 1 << 6  # LOCK TABLES, FLUSH ... WITH READ LOCK, BACKUP LOCK
    XA = 1 << 7  # XA transactions: a reset cannot undo a prepared one
    TEMPORARY_TABLES = 1 << 8
    SQL_PREPARE = 1 << 9  # PREPARE s FROM ...
    STORED_PROCEDURE = 1 << 10  # CALL: may do anything inside, reported or not
    CALC_FOUND_ROWS = 1 << 11  # SQL_CALC_FOUND_ROWS: read back by FOUND_ROWS()
    SET_STATEMENT = 1 << 12  # SET STATEMENT ... FOR: reported variables are temporary
    NEXT_TRANSACTION = 1 << 13  # SET TRANSACTION: applies to the next transaction only
    SAVEPOINT = 1 << 14
    MULTIPLE = 1 << 15  # more than one statement in the text
    LASTVAL_READ = 1 << 16  # LASTVAL / PREVIOUS VALUE FOR read per-session state
    # Reads the previous statement's conditions: SHOW WARNINGS / ERRORS / COUNT(*),
    # @@warning_count, @@error_count, GET DIAGNOSTICS.
    DIAGNOSTICS_READ = 1 << 17
    DIAGNOSTIC_VALUES = 1 << 18  # ROW_COUNT() / FOUND_ROWS(): see with_diagnostic_values
    DYNAMIC_SQL = 1 << 19  # EXECUTE IMMEDIATE: runs a statement the text may not show
    TRANSACTION_END = 1 << 20  # COMMIT, ROLLBACK (not TO a savepoint), BEGIN, START
    # Every statement only sets session variables to literal values, or selects a
    # database: its outcome does not depend on the session it runs in.
    SETTINGS = 1 << 21
    SCHEMA_CHANGE = 1 << 22  # CREATE, ALTER, DROP, RENAME, TRUNCATE: prepares may differ
    KILL = 1 << 23  # KILL ...: its id is one mysqlgate gave (see kill_target)
    # SET @@name = ... (no scope): a session change MariaDB's trackers do not report
    # (measured on 10.11; @@session.name, SET name, SET SESSION name are reported).
    UNREPORTED_SET = 1 << 24
    # The statement uses a table: it empties the diagnostics area, which statements
    # without tables (SELECT 1, DO, SET, COMMIT) leave as it is (measured).
    TABLES = 1 << 25
    # Calls a stored function (a name followed by `(` that is no built-in): what it
    # does inside is reported only in part (MySQL with classic EOF packets reports a
    # user variable it sets nowhere; neither server reports a named lock it takes).
    STORED_FUNCTION = 1 << 26
    # INSERT ... ON DUPLICATE KEY UPDATE: when it updates, its OK packet's insert id
    # is the row's, and LAST_INSERT_ID() does not change (measured).
    UPSERT = 1 << 27
    # SHOW WARNINGS / SHOW ERRORS: they leave FOUND_ROWS() as it was (measured), unlike
    # SHOW COUNT(*) WARNINGS and every other result set.
    SHOW_CONDITIONS = 1 << 28

    @classmethod
    def each(cls) -> dict[str, int]:
        """Every effect by name (NONE excepted)."""
        return {name: value for name, value in vars(cls).items()
                if name.isupper() and isinstance(value, int) and value}


# The effects that tie the client to its connection, and the name each pin has in the
# stats and the admin output.
PIN_REASONS: dict[int, str] = {
    Effect.USER_VARIABLES: "user_variables",
    Effect.NAMED_LOCKS: "named_locks",
    Effect.ROLE: "role",
    Effect.HANDLER: "handler",
    Effect.LAST_INSERT_ID: "last_insert_id",
    Effect.SEQUENCE: "sequence",
    Effect.TABLE_LOCKS: "table_locks",
    Effect.XA: "xa_transaction",
    Effect.TEMPORARY_TABLES: "temporary_tables",
    Effect.SQL_PREPARE: "sql_prepare",
    # SET TRANSACTION waits on the connection for the next statement that starts a
    # transaction, which SELECT 1 or a refused write are not (measured): no telling.
    Effect.NEXT_TRANSACTION: "next_transaction",
}
PINNING = Effect.NONE
for _effect in PIN_REASONS:
    PINNING |= _effect

# Effects after which the connection is reset before anyone else gets it, without
# pinning the client: a procedure's user variables and temporary tables raise the
# trackers' flag (and pin then), but a named lock it takes does not.
RESET_AFTER = Effect.STORED_PROCEDURE | Effect.DYNAMIC_SQL | Effect.STORED_FUNCTION

# What an execute of a prepared statement (COM_STMT_EXECUTE) may leave behind, read
# from the statement's text: what it leaves on the connection. Not what concerns the
# text of a COM_QUERY (settings answered locally, KILL, SET @@x rewritten, ROW_COUNT()
# rewritten): a prepared SET @@x pins instead.
EXECUTE_EFFECTS = (
    PINNING | RESET_AFTER | Effect.CALC_FOUND_ROWS | Effect.SAVEPOINT
    | Effect.TRANSACTION_END | Effect.SCHEMA_CHANGE | Effect.UPSERT | Effect.LASTVAL_READ
    | Effect.TABLES | Effect.DIAGNOSTICS_READ | Effect.SHOW_CONDITIONS
    | Effect.UNREPORTED_SET
)

# Words that must appear for any effect above; text without them needs no tokenising.
_HINT = re.compile(
    rb"@|\b(?:GET_LOCK|ROLE|HANDLER|LAST_INSERT_ID|NEXTVAL|SETVAL|LASTVAL|NEXT|PREVIOUS"
    rb"|LOCK|XA|PREPARE|TEMPORARY|SQL_CALC_FOUND_ROWS|STATEMENT|TRANSACTION|CALL|BACKUP"
    rb"|FLUSH|SAVEPOINT|WARNINGS|ERRORS|WARNING_COUNT|ERROR_COUNT|DIAGNOSTICS|ROW_COUNT"
    rb"|FOUND_ROWS|IMMEDIATE|COMMIT|ROLLBACK|BEGIN|START|CREATE|ALTER|DROP|RENAME"
    rb"|TRUNCATE|KILL|FROM|INSERT|UPDATE|DELETE|REPLACE|LOAD|DUPLICATE|ANALYZE|OPTIMIZE"
    rb"|REPAIR|CHECK|CHECKSUM)\b|;",
    re.IGNORECASE,
)
# A word followed by `(`: maybe a stored function (Effect.STORED_FUNCTION).
_ANY_CALL = re.compile(rb"([\w$]+)\s*\(")
# A statement that starts with SET or USE may be settings only (Effect.SETTINGS).
_LEADING_SET = re.compile(rb"\s*(?:SET|USE)\b", re.IGNORECASE)


# With a user variable in the statement, these words mean it may be assigned:
# SET @a=1, SELECT .. INTO @a, LOAD DATA .. (@a), GET DIAGNOSTICS @a = .., CALL p(@out).
_ASSIGNING_WORDS = frozenset({b"SET", b"INTO", b"LOAD", b"DIAGNOSTICS", b"CALL"})


# -- the fast path: plain SELECT, INSERT, UPDATE, DELETE --------------------------------
#
# Most statements an application sends read or write rows with literals and names and
# nothing else. For those the full reading below (tokens, _statement) comes down to one
# question, whether the statement uses a table (Effect.TABLES). _plain_effects answers
# it with a few regex scans (about 2 us instead of 15 for a point select), and only for
# text that the tokeniser provably reads the same way:
# - no backslash (both sql_mode readings are then the same, and strings end where
#   _PLAIN_QUOTED says);
# - once string literals are blanked out: only ASCII word characters, whitespace and
#   operators that begin no comment, variable or second statement (no @ # / ; : $,
#   backtick or backslash, no `--`, nothing outside ASCII). Every token is then a word
#   ([A-Za-z0-9_]+, whose ends are exactly regex \b) or a one-character punctuation
#   mark, and a quote outside a string is always where a string begins (a comment,
#   quoted name or variable that could swallow one would have left its `/*`, `#`,
#   `--`, backtick or `@` in the text);
# - the first word is SELECT, WITH, INSERT, UPDATE, DELETE or REPLACE: not SET or USE
#   (settings), nor any other first word that _statement or _settings_only looks at;
# - none of the words that _statement looks for anywhere in a statement of that kind
#   (_PLAIN_STOP_WORDS; WARNINGS and ERRORS count only after SHOW;
#   INSERT ... ON DUPLICATE KEY UPDATE takes the full reading).
# For anything else it returns None and the full reading decides. A new word or rule in
# _statement needs a stop word or a first word here; the corpus test in
# tests/unit/test_sql_effects.py compares both readings on every word of this module.
#
# The patterns read upper-cased text (bytes.upper changes ASCII letters only): twice as
# fast as re.IGNORECASE.
_PLAIN_FIRST = re.compile(rb"[^\w'\"]*(?:(SELECT|WITH)|INSERT|UPDATE|DELETE|REPLACE)\b")
_PLAIN_QUOTED = re.compile(rb"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?")
_PLAIN_CHARS = re.compile(rb"[\w\s,.=<>!()*+%&|^~-]*")
_PLAIN_STOP_WORDS = re.compile(
    rb"\b(?:D(?:IAGNOSTICS|UPLICATE)|FOUND_ROWS|GET_LOCK|LAST(?:_INSERT_ID|VAL)"
    rb"|NEXT(?:VAL)?|PREVIOUS|ROW_COUNT|S(?:ETVAL|QL_CALC_FOUND_ROWS))\b"
)
# FROM followed by a token that is not DUAL (the rule for TABLES in _statement).
_PLAIN_FROM_TABLE = re.compile(rb"\bFROM\b(?=\s*(?!DUAL\b)\S)")
# A word followed by `(`, and the word before it (see _calls_stored_function).
_PLAIN_CALL = re.compile(rb"\b(\w+)\s*\(")
_PLAIN_WORD_BEFORE = re.compile(rb"(\w+)\s*\Z")


def _plain_effects(sql: bytes, start: int = 0) -> int | None:
    """statement_effects(sql, start) for a plain SELECT, INSERT, UPDATE or DELETE (see
    above), or None when the text is not plain enough to tell this way."""
    text = sql.upper()
    # The first word, before any quote (so that no string hides what comes first).
    first = _PLAIN_FIRST.match(text, start)
    if first is None or b"\\" in text:
        return None
    if b"'" in text or b'"' in text:
        text = _PLAIN_QUOTED.sub(b" ", text[start:])
        start = 0
    if _PLAIN_CHARS.fullmatch(text, start) is None or b"--" in text or \
            _PLAIN_STOP_WORDS.search(text, start) is not None:
        return None
    for call in _PLAIN_CALL.finditer(text, start):
        if call.group(1) not in BUILTIN_NAMES:
            before = _PLAIN_WORD_BEFORE.search(text, start, call.start())
            if before is None or before.group(1) not in _NAME_BEFORE_PARENTHESIS:
                return None  # a stored function, maybe: the full reading decides
    if first.group(1) is None or _PLAIN_FROM_TABLE.search(text, start) is not None:
        return Effect.TABLES  # INSERT, UPDATE, DELETE, REPLACE; a SELECT FROM a table
    return Effect.NONE


def statement_effects(sql: bytes, start: int = 0) -> int:
    """What the statement(s) in sql[start:] may leave on the connection. Conservative:
    an effect is reported when a statement may have it, also if it then fails."""
    effects = _plain_effects(sql, start)
    if effects is not None:
        return effects
    if len(sql) - start > _REMEMBERED_TEXT_MAX:
        return _read_effects(sql, start)
    # Drivers and frameworks send the same session statements on every connection
    # (SET NAMES, SET autocommit, SET SESSION TRANSACTION, COMMIT): each full reading
    # costs 10-20 us, and a connection per request pays it several times over.
    text = bytes(sql[start:])
    effects = _remembered.get(text)
    if effects is None:
        effects = _read_effects(text)
        if len(_remembered) >= _REMEMBERED_MAX:
            _remembered.clear()
        _remembered[text] = effects
    return effects


# The full readings of short texts, by text (the reading depends on nothing else).
_remembered: dict[bytes, int] = {}
_REMEMBERED_MAX = 4096
_REMEMBERED_TEXT_MAX = 512


def _read_effects(sql: bytes, start: int = 0) -> int:
    """statement_effects without the fast path: the full reading."""
    if _HINT.search(sql, start) is None and _LEADING_SET.match(sql, start) is None and \
            not any(call.group(1).upper() not in BUILTIN_NAMES
                    for call in _ANY_CALL.finditer(sql, start)):
        return Effect.NONE
    effects = _effects(tokens(sql, start, True))
    if b"\\" in sql:
        # Whether backslashes escape depends on the session's sql_mode: read it both
        # ways, so that no reading hides an effect.
        effects |= _effects(tokens(sql, start, False))
    if effects & Effect.DYNAMIC_SQL:
        # EXECUTE IMMEDIATE 'DO GET_LOCK(...)': read every string literal as a statement
        # too. Text computed otherwise (CONCAT, a variable) stays unseen: RESET_AFTER.
        for literal in string_literals(sql, start):
            effects |= statement_effects(literal) & ~Effect.MULTIPLE
    return effects


def _effects(toks: list[Token]) -> int:
    effects = Effect.NONE
    statements = split_statements(toks)
    if len(statements) > 1:
        effects |= Effect.MULTIPLE
    for statement in statements:
        effects |= _statement(statement)
    if statements and all(_settings_only(statement) for statement in statements):
        effects |= Effect.SETTINGS
    return effects


# Statements that use tables whatever else they say.
_TABLE_STATEMENTS = frozenset({
    b"INSERT", b"REPLACE", b"UPDATE", b"DELETE", b"LOAD", b"TRUNCATE", b"CREATE", b"ALTER",
    b"DROP", b"RENAME", b"ANALYZE", b"OPTIMIZE", b"REPAIR", b"CHECK", b"CHECKSUM", b"LOCK",
    b"HANDLER",
})

# SET's scope words that keep it a session setting, and the words a value may be.
_SESSION_SCOPE = frozenset({b"SESSION", b"LOCAL"})
_NOT_A_SETTING = frozenset({
    b"GLOBAL", b"PERSIST", b"PERSIST_ONLY", b"ROLE", b"PASSWORD", b"STATEMENT", b"DEFAULT",
    b"TIMESTAMP", b"INSERT_ID", b"LAST_INSERT_ID", b"IDENTITY", b"RAND_SEED1",
    b"RAND_SEED2", b"GTID_SEQ_NO",
})


def _settings_only(toks: list[Token]) -> bool:
    """SET of session variables to literals (strings are not tokens: a value may be
    missing here), SET NAMES / CHARACTER SET, SET SESSION TRANSACTION ..., or USE db.
    Expressions, variables and function calls on the right make the outcome depend on
    the session, and are not settings in this sense."""
    if toks[:1] == [("word", b"USE")]:  # a quoted name is no token: USE `db` is one
        return len(toks) <= 2 and all(kind == "word" for kind, _ in toks)
    if not toks or toks[0] != ("word", b"SET"):
        return False
    words = [text for kind, text in toks if kind == "word"]
    if not _NOT_A_SETTING.isdisjoint(words):
        return False
    if words[1:3] == [b"SESSION", b"TRANSACTION"]:
        return all(kind == "word" or text == b"," for kind, text in toks)
    for assignment in comma_separated(toks[1:]):
        texts = [text for _, text in assignment]
        if texts[:1] == [b"NAMES"] or texts[:2] == [b"CHARACTER", b"SET"] or \
                texts[:1] == [b"CHARSET"]:
            if any(kind != "word" for kind, _ in assignment):
                return False
            continue
        if assignment and assignment[0][1] in _SESSION_SCOPE:
            assignment = assignment[1:]
        if not assignment:
            return False
        kind, name = assignment[0]
        if kind not in ("word", "svar") or name.lower().startswith(b"@@global."):
            return False
        tail = assignment[1:]
        if not tail or tail[0] not in (("punct", b"="), ("punct", b":=")):
            return False
        value = tail[1:]
        if value[:1] == [("punct", b"-")]:
            value = value[1:]
        # A string literal is no token, so a value may seem missing: that is a string.
        if len(value) > 1 or value and value[0][0] != "word":
            return False
    return True


def _statement(toks: list[Token]) -> int:
    effects = Effect.NONE
    words = [text for kind, text in toks if kind == "word"]
    first = words[0] if words else b""
    second = words[1] if len(words) > 1 else b""
    word_set = set(words)

    has_uvar = any(kind == "uvar" for kind, _ in toks)
    if has_uvar and (("punct", b":=") in toks or not word_set.isdisjoint(_ASSIGNING_WORDS)):
        effects |= Effect.USER_VARIABLES

    for i, (kind, text) in enumerate(toks):
        if kind != "word":
            continue
        after = toks[i + 1] if i + 1 < len(toks) else ("", b"")
        call = after == ("punct", b"(")
        if call and text == b"GET_LOCK":
            effects |= Effect.NAMED_LOCKS
        elif call and text == b"LAST_INSERT_ID":
            if i + 2 < len(toks) and toks[i + 2] != ("punct", b")"):
                effects |= Effect.LAST_INSERT_ID
        elif call and text in (b"NEXTVAL", b"SETVAL"):
            effects |= Effect.SEQUENCE
        elif call and text == b"LASTVAL":
            effects |= Effect.LASTVAL_READ
        elif text in (b"NEXT", b"PREVIOUS") and after == ("word", b"VALUE"):
            effects |= Effect.SEQUENCE if text == b"NEXT" else Effect.LASTVAL_READ
        elif text == b"SQL_CALC_FOUND_ROWS":
            effects |= Effect.CALC_FOUND_ROWS
        elif call and text in DIAGNOSTIC_FUNCTIONS:
            effects |= Effect.DIAGNOSTIC_VALUES
        elif call and text not in BUILTIN_NAMES and first not in _DEFINING and not (
            i and toks[i - 1][0] == "word" and toks[i - 1][1] in _NAME_BEFORE_PARENTHESIS
        ):
            effects |= Effect.STORED_FUNCTION
        elif text in (b"WARNINGS", b"ERRORS") and first == b"SHOW" or text == b"DIAGNOSTICS":
            effects |= Effect.DIAGNOSTICS_READ
            if first == b"SHOW" and second in (b"WARNINGS", b"ERRORS"):
                effects |= Effect.SHOW_CONDITIONS
    if any(kind == "svar" and svar_name(text) in DIAGNOSTIC_VARIABLES for kind, text in toks):
        effects |= Effect.DIAGNOSTICS_READ

    if first == b"SET" and any(plain_svar_targets(toks)):
        effects |= Effect.UNREPORTED_SET
    if first == b"SET":
        if second == b"ROLE":
            effects |= Effect.ROLE
        elif second == b"TRANSACTION":
            effects |= Effect.NEXT_TRANSACTION
        elif second == b"STATEMENT":
            effects |= Effect.SET_STATEMENT
    elif first == b"HANDLER":
        effects |= Effect.HANDLER
    elif first == b"LOCK" or (first == b"BACKUP" and second in (b"LOCK", b"STAGE")) or (
        first == b"FLUSH" and (b"LOCK" in word_set or b"EXPORT" in word_set)
    ):
        effects |= Effect.TABLE_LOCKS
    elif first == b"XA":
        effects |= Effect.XA
    elif first == b"CREATE" and b"TEMPORARY" in word_set:
        effects |= Effect.TEMPORARY_TABLES
    elif first == b"PREPARE":
        effects |= Effect.SQL_PREPARE
    elif first == b"CALL":
        effects |= Effect.STORED_PROCEDURE
    elif first == b"EXECUTE" and second == b"IMMEDIATE":
        effects |= Effect.DYNAMIC_SQL
    if first in _TABLE_STATEMENTS or any(
        toks[i] == ("word", b"FROM") and toks[i + 1] != ("word", b"DUAL")
        for i in range(len(toks) - 1)
    ):
        effects |= Effect.TABLES
    if first == b"INSERT" and {b"DUPLICATE", b"KEY"} <= word_set:
        effects |= Effect.UPSERT
    if first in (b"CREATE", b"ALTER", b"DROP", b"RENAME", b"TRUNCATE"):
        effects |= Effect.SCHEMA_CHANGE
    elif first == b"KILL":
        effects |= Effect.KILL
    elif first == b"SAVEPOINT":
        effects |= Effect.SAVEPOINT
    elif first == b"COMMIT" or first == b"BEGIN" and second != b"NOT" or (
        first == b"START" and second == b"TRANSACTION"
    ) or (
        first == b"ROLLBACK" and b"TO" not in word_set
    ):
        effects |= Effect.TRANSACTION_END
    return effects


# Statements whose `name(` defines or names things rather than calling a function.
_DEFINING = frozenset({
    b"CREATE", b"ALTER", b"DROP", b"RENAME", b"GRANT", b"REVOKE", b"SHOW", b"DESCRIBE",
    b"DESC", b"HELP", b"CALL", b"PREPARE", b"DEALLOCATE", b"HANDLER", b"LOCK", b"XA",
})
# After these a name followed by `(` is a table with a column list (INSERT INTO t (a)),
# a CTE or derived table's column names (WITH c (a) AS, AS d (a)), not a call.
_NAME_BEFORE_PARENTHESIS = frozenset({
    b"INTO", b"TABLE", b"UPDATE", b"FROM", b"JOIN", b"WITH", b"RECURSIVE", b"AS",
    b"REFERENCES", b"INDEX", b"KEY", b"PARTITION", b"VIEW",
})

_READ_ONLY_FIRST_WORDS = frozenset({b"SELECT", b"SHOW", b"DESCRIBE", b"DESC", b"EXPLAIN", b"HELP"})
_WRITING_WORDS = frozenset({b"INTO", b"ANALYZE", b"INSERT", b"UPDATE", b"DELETE", b"REPLACE"})


_READS = Effect.DIAGNOSTICS_READ | Effect.DIAGNOSTIC_VALUES | Effect.TABLES


def read_only(sql: bytes, start: int = 0) -> bool:
    """Whether sql[start:] is one statement that reads and writes nothing: safe to run
    again when the connection it was sent on died before any answer (SPEC section 4).
    Conservative, except that a stored function called in a SELECT may write unseen."""
    for backslash_escapes in (True, False):
        toks = tokens(sql, start, backslash_escapes)
        words = {text for kind, text in toks if kind == "word"}
        if (not toks or toks[0][0] != "word" or toks[0][1] not in _READ_ONLY_FIRST_WORDS
                or not words.isdisjoint(_WRITING_WORDS)
                or _effects(toks) & ~_READS):
            return False
    return True
