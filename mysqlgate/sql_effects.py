"""What a statement may leave on its upstream connection, read from its text.

The server's session trackers describe session variables and the schema exactly, but
much of a session's state they never report, or report only as "something changed"
(measured on MariaDB 10.11, see shared/PROTOCOL-NOTES.md): `SELECT @y := 1`,
`SELECT ... INTO @z`, `GET_LOCK`, `HANDLER ... OPEN`, `LAST_INSERT_ID(expr)`,
`NEXTVAL(seq)` and `LOCK TABLES` raise no flag at all. So the session layer asks this
module what a statement may do, and pins or resets accordingly (SPEC section 2).

The text is tokenised, not parsed: string literals, quoted identifiers and comments
are skipped (so `'a@b.com'` is not a user variable), executable comments (`/*! */`,
`/*M! */`) count as code because the server runs them. A cheap keyword search comes
first: most statements contain none of the words that matter and cost one regex scan.
"""

from __future__ import annotations

import re
from enum import IntFlag


class Effect(IntFlag):
    """What a statement may leave behind on its connection."""

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


# The effects that tie the client to its connection, and the name each pin has in the
# stats and the admin output.
PIN_REASONS: dict[Effect, str] = {
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
    Effect.CALC_FOUND_ROWS: "found_rows",
}
PINNING = Effect.NONE
for _effect in PIN_REASONS:
    PINNING |= _effect

# Effects after which the connection is reset before anyone else gets it, without
# pinning the client: a procedure's user variables and temporary tables raise the
# trackers' flag (and pin then), but a named lock it takes does not.
RESET_AFTER = Effect.STORED_PROCEDURE

# Words that must appear for any effect above; text without them needs no tokenising.
_HINT = re.compile(
    rb"@|\b(?:GET_LOCK|ROLE|HANDLER|LAST_INSERT_ID|NEXTVAL|SETVAL|LASTVAL|NEXT|PREVIOUS"
    rb"|LOCK|XA|PREPARE|TEMPORARY|SQL_CALC_FOUND_ROWS|STATEMENT|TRANSACTION|CALL|BACKUP"
    rb"|FLUSH|SAVEPOINT)\b|;",
    re.IGNORECASE,
)


def _token_pattern(backslash_escapes: bool) -> re.Pattern[bytes]:
    if backslash_escapes:
        single, double = rb"'(?:[^'\\]|\\.|'')*'?", rb'"(?:[^"\\]|\\.|"")*"?'
    else:  # sql_mode NO_BACKSLASH_ESCAPES: a backslash is an ordinary character
        single, double = rb"'(?:[^']|'')*'?", rb'"(?:[^"]|"")*"?'
    quoted = single + b"|" + double + rb"|`(?:[^`]|``)*`?"
    return re.compile(
        rb"(?P<skip>\s+|\#[^\n]*|--(?=\s|\Z)[^\n]*"
        # A comment, unless executable: /*! */, /*!50100 */, /*M! */, /*M!100400 */.
        rb"|/\*(?!M?!).*?(?:\*/|\Z)"
        rb"|/\*M?!M?\d*|\*/|" + quoted + rb")"
        rb"|(?P<uvar>@(?:[\w$\x80-\xff.]+|" + quoted + rb"))"
        rb"|(?P<svar>@@[\w$.]+)"
        rb"|(?P<word>[\w$\x80-\xff]+)"
        rb"|(?P<punct>:=|.)",
        re.DOTALL,
    )


_TOKENS = _token_pattern(backslash_escapes=True)
_TOKENS_NO_BACKSLASH = _token_pattern(backslash_escapes=False)

# With a user variable in the statement, these words mean it may be assigned:
# SET @a=1, SELECT .. INTO @a, LOAD DATA .. (@a), GET DIAGNOSTICS @a = .., CALL p(@out).
_ASSIGNING_WORDS = frozenset({b"SET", b"INTO", b"LOAD", b"DIAGNOSTICS", b"CALL"})


def tokens(sql: bytes, start: int = 0, backslash_escapes: bool = True
           ) -> list[tuple[str, bytes]]:
    """(kind, text) of each code token: kind is 'word' (upper-cased), 'uvar', 'svar' or
    'punct'. Strings, quoted identifiers and comments are left out."""
    pattern = _TOKENS if backslash_escapes else _TOKENS_NO_BACKSLASH
    out: list[tuple[str, bytes]] = []
    for match in pattern.finditer(sql, start):
        kind = match.lastgroup
        if kind == "skip" or kind is None:
            continue
        text = match.group()
        out.append((kind, text.upper() if kind == "word" else text))
    return out


def statement_effects(sql: bytes, start: int = 0) -> Effect:
    """What the statement(s) in sql[start:] may leave on the connection. Conservative:
    an effect is reported when a statement may have it, also if it then fails."""
    if _HINT.search(sql, start) is None:
        return Effect.NONE
    effects = _effects(tokens(sql, start, True))
    if b"\\" in sql:
        # Whether backslashes escape depends on the session's sql_mode: read it both
        # ways, so that no reading hides an effect.
        effects |= _effects(tokens(sql, start, False))
    return effects


def _effects(toks: list[tuple[str, bytes]]) -> Effect:
    effects = Effect.NONE
    statements = _split(toks)
    if len(statements) > 1:
        effects |= Effect.MULTIPLE
    for statement in statements:
        effects |= _statement(statement)
    return effects


def _split(toks: list[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
    statements: list[list[tuple[str, bytes]]] = [[]]
    for token in toks:
        if token == ("punct", b";"):
            if statements[-1]:
                statements.append([])
        else:
            statements[-1].append(token)
    return [s for s in statements if s]


def _statement(toks: list[tuple[str, bytes]]) -> Effect:
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
    elif first == b"SAVEPOINT":
        effects |= Effect.SAVEPOINT
    return effects
