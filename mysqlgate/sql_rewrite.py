"""Statements rewritten before they go upstream, so that a pooled connection behaves
as the client's own would.

`SET @@x = 1` becomes `SET @@session.x = 1` (the same change, which the session
trackers then report); `SELECT ROW_COUNT()` and `FOUND_ROWS()` read the values the
client's previous statement left, which the upstream connection may not hold; and a
client's `KILL n` is read for its target.
"""

from __future__ import annotations

from .sql_tokens import DIAGNOSTIC_FUNCTIONS, plain_svar_targets, spans, tokens


def with_session_scope(sql: bytes, start: int = 0) -> bytes:
    """SET @@name = ... written SET @@session.name = ...: the same change, which the
    trackers then report."""
    found = spans(sql, start, True)
    if b"\\" in sql and spans(sql, start, False) != found:
        return sql  # ambiguous: left as it is (the client stays pinned instead)
    statements: list[list[tuple[str, bytes, int, int]]] = [[]]
    for span in found:
        if span[:2] == ("punct", b";"):
            statements.append([])
        else:
            statements[-1].append(span)
    out = bytearray()
    last = 0
    for statement in statements:
        if not statement or statement[0][:2] != ("word", b"SET"):
            continue
        for index in plain_svar_targets([(kind, text) for kind, text, _, _ in statement]):
            begin = statement[index][2]
            out += sql[last:begin + 2] + b"session."
            last = begin + 2
    return bytes(out + sql[last:])


_SELECT_MODIFIERS = frozenset({
    b"SELECT", b"ALL", b"DISTINCT", b"DISTINCTROW", b"HIGH_PRIORITY", b"STRAIGHT_JOIN",
    b"SQL_SMALL_RESULT", b"SQL_BIG_RESULT", b"SQL_BUFFER_RESULT", b"SQL_CACHE",
    b"SQL_NO_CACHE", b"SQL_CALC_FOUND_ROWS",
})


# What may follow a select-list item that has no alias of its own.
_AFTER_ITEM = frozenset({
    b"FROM", b"INTO", b"UNION", b"EXCEPT", b"INTERSECT", b"WHERE", b"GROUP", b"HAVING",
    b"ORDER", b"LIMIT", b"FOR", b"LOCK", b"WINDOW",
})


def with_diagnostic_values(sql: bytes, start: int, row_count: int, found_rows: int
                           ) -> bytes | None:
    """sql with each ROW_COUNT() and FOUND_ROWS() call replaced by the value the
    client's own previous statement left, for a statement that runs on a connection
    where another statement ran since. A call that is a whole select-list item keeps
    its column name (an alias of its original text). None when the text cannot be
    read unambiguously (backslashes that read differently under NO_BACKSLASH_ESCAPES)."""
    calls = _diagnostic_calls(sql, start, True)
    if b"\\" in sql and calls != _diagnostic_calls(sql, start, False):
        return None
    out = bytearray()
    last = 0
    for name, begin, end, whole_item in calls:
        out += sql[last:begin]
        # IF(1, n, ROW_COUNT()) has the function's own column type, BIGINT(21) NOT NULL
        # (a bare literal would be an INT of another length).
        value = row_count if name == b"ROW_COUNT" else found_rows
        out += b"IF(1,%d,%s())" % (value, name)
        if whole_item:
            out += b" AS `" + sql[begin:end].replace(b"`", b"``") + b"`"
        last = end
    out += sql[last:]
    return bytes(out)


def _diagnostic_calls(sql: bytes, start: int, backslash_escapes: bool
                      ) -> list[tuple[bytes, int, int, bool]]:
    """(name, start, end, whole select item) of each ROW_COUNT() / FOUND_ROWS() call."""
    toks = spans(sql, start, backslash_escapes)
    calls = []
    depth = 0
    in_select_list = {0: False}  # per parenthesis depth
    for i, (kind, text, begin, _) in enumerate(toks):
        if kind == "punct":
            if text == b"(":
                depth += 1
                in_select_list[depth] = False
            elif text == b")":
                depth = max(0, depth - 1)
            elif text == b";":
                # Later statements of the packet read what the ones before them left,
                # which the server knows: only the first one's calls are the client's
                # previous statement's.
                break
            continue
        if kind != "word":
            continue
        if text == b"SELECT":
            in_select_list[depth] = True
        elif text in _AFTER_ITEM:
            in_select_list[depth] = False
        elif text in DIAGNOSTIC_FUNCTIONS and \
                [t[1] for t in toks[i + 1:i + 3]] == [b"(", b")"]:
            end = toks[i + 2][3]
            before = toks[i - 1][1] if i else b""
            after = toks[i + 3] if i + 3 < len(toks) else None
            whole = in_select_list.get(depth, False) and (
                before in _SELECT_MODIFIERS or before == b","
            ) and (
                after is None or after[1] in (b",", b";", b")") or
                after[0] == "word" and after[1] in _AFTER_ITEM
            )
            calls.append((text, begin, end, whole))
    return calls


def kill_target(sql: bytes, start: int = 0) -> tuple[str, int | None]:
    """What `KILL [HARD|SOFT] [CONNECTION|QUERY] n` asks: ('connection' or 'query', n).
    ('other', None) for any other form (KILL USER, KILL QUERY ID, an expression, several
    statements): those would reach connections that serve other clients."""
    toks = tokens(sql, start)
    if toks and toks[-1] == ("punct", b";"):
        toks = toks[:-1]
    words = [text for kind, text in toks if kind == "word"]
    if len(words) != len(toks) or not words or words[0] != b"KILL":
        return "other", None
    rest = words[1:]
    if rest[:1] in ([b"HARD"], [b"SOFT"]):
        rest = rest[1:]
    kind = "connection"
    if rest[:1] in ([b"CONNECTION"], [b"QUERY"]):
        kind = rest[0].decode().lower()
        rest = rest[1:]
    if len(rest) == 1 and rest[0].isdigit():
        return kind, int(rest[0])
    return "other", None
