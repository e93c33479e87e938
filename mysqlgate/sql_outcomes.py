"""What a statement that answered OK did, read from its text and the OK packet.

FOUND_ROWS() after it, whether a statement whose answer was lost may have committed,
and whether a COMMIT or ROLLBACK is bare enough to be answered without a connection.
"""

from __future__ import annotations

import re

KEEPS = -1  # found_rows_after_ok: the statement leaves FOUND_ROWS() as it was


_ROWS_MATCHED = re.compile(rb"Rows matched: (\d+)")


_FIRST_WORD = re.compile(rb"\s*\(*\s*([A-Za-z]+)")


_UPDATE_TABLES = re.compile(rb"\s*UPDATE\b(.*?)\bSET\b", re.IGNORECASE | re.DOTALL)


_MANY_TABLES = re.compile(rb",|\bJOIN\b", re.IGNORECASE)


def found_rows_after_ok(sql: bytes, start: int, info: bytes, mariadb: bool) -> int | None:
    """FOUND_ROWS() after sql[start:] answered OK: its new value, KEEPS, or None when
    only the server knows. Measured on MariaDB 10.11 and MySQL 9.7, which differ:

    | statement                | MariaDB          | MySQL            |
    |--------------------------|------------------|------------------|
    | UPDATE of one table      | keeps            | rows matched     |
    | UPDATE of several tables | rows matched     | 0                |
    | DO ...                   | keeps            | 1                |
    | SELECT ... INTO ...      | 0 (1 row)        | rows selected    |
    | INSERT, DELETE, SET, ... | keeps            | keeps            |
    """
    first = _FIRST_WORD.match(sql, start)
    if first is None:
        return None  # a comment first, or no text (a statement unknown to mysqlgate)
    word = first.group(1).upper()
    if word == b"UPDATE":
        matched = _ROWS_MATCHED.search(info)
        tables = _UPDATE_TABLES.match(sql, start)
        if matched is None or tables is None or b"/*" in tables.group(1) or \
                b"#" in tables.group(1) or b"--" in tables.group(1):
            return None
        several = _MANY_TABLES.search(tables.group(1)) is not None
        if mariadb:
            return int(matched.group(1)) if several else KEEPS
        return 0 if several else int(matched.group(1))
    if word == b"DO":
        return KEEPS if mariadb else 1
    if word in (b"SELECT", b"WITH", b"TABLE", b"VALUES"):
        return None  # SELECT ... INTO: how many rows it selected, the server knows
    return KEEPS


# Statements that never commit a transaction, explicitly or implicitly.
_NEVER_COMMITS = frozenset({
    b"SELECT", b"WITH", b"VALUES", b"TABLE", b"INSERT", b"UPDATE", b"DELETE", b"REPLACE",
    b"ROLLBACK", b"SAVEPOINT", b"RELEASE", b"DO", b"SHOW", b"DESCRIBE", b"DESC", b"EXPLAIN",
    b"HANDLER", b"LOAD",
})


def may_commit(sql: bytes, start: int = 0) -> bool:
    """Whether sql[start:] may commit an open transaction: COMMIT, and everything that
    commits implicitly (DDL, BEGIN, SET autocommit = 1, LOCK TABLES, CALL, ...).
    Conservative: only statements known never to commit say no."""
    first = _FIRST_WORD.match(sql, start)
    if first is None:
        return True
    word = first.group(1).upper()
    if word == b"ROLLBACK" and b"RELEASE" in sql.upper():
        return False  # ROLLBACK ... RELEASE ends the session, committing nothing
    return word not in _NEVER_COMMITS


_BARE_END = re.compile(rb"\s*(?:COMMIT|ROLLBACK)(?:\s+WORK)?\s*;?\s*", re.IGNORECASE)


def bare_transaction_end(sql: bytes, start: int = 0) -> bool:
    """COMMIT or ROLLBACK [WORK], nothing more (no AND CHAIN, RELEASE, TO SAVEPOINT)."""
    return _BARE_END.fullmatch(sql, start) is not None
