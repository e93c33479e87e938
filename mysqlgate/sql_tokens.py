"""SQL text as tokens: the one tokenizer that sql_effects, sql_rewrite and sql_outcomes share.

Not a parser: string literals, quoted identifiers and comments are recognised so that
nothing inside them counts as code; executable comments (`/*! */`, `/*M! */`) do count,
because the server runs them. Both readings of a backslash are offered: with
NO_BACKSLASH_ESCAPES in sql_mode it is an ordinary character, and the callers read an
ambiguous text both ways.
"""

from __future__ import annotations

import re


def _token_pattern(backslash_escapes: bool) -> re.Pattern[bytes]:
    if backslash_escapes:
        single, double = rb"'(?:[^'\\]|\\.|'')*'?", rb'"(?:[^"\\]|\\.|"")*"?'
    else:  # sql_mode NO_BACKSLASH_ESCAPES: a backslash is an ordinary character
        single, double = rb"'(?:[^']|'')*'?", rb'"(?:[^"]|"")*"?'
    quoted = single + b"|" + double + rb"|`(?:[^`]|``)*`?"
    return re.compile(
        rb"(?P<string>" + single + b"|" + double + rb")"
        rb"|(?P<skip>\s+|\#[^\n]*|--(?=\s|\Z)[^\n]*"
        # A comment, unless executable: /*! */, /*!50100 */, /*M! */, /*M!100400 */.
        rb"|/\*(?!M?!).*?(?:\*/|\Z)"
        rb"|/\*M?!M?\d*|\*/|`(?:[^`]|``)*`?)"
        rb"|(?P<uvar>@(?:[\w$\x80-\xff.]+|" + quoted + rb"))"
        rb"|(?P<svar>@@[\w$.]+)"
        rb"|(?P<word>[\w$\x80-\xff]+)"
        rb"|(?P<punct>:=|.)",
        re.DOTALL,
    )


_TOKENS = _token_pattern(backslash_escapes=True)


_TOKENS_NO_BACKSLASH = _token_pattern(backslash_escapes=False)


Token = tuple[str, bytes]  # kind ('word' upper-cased, 'uvar', 'svar', 'punct'), text


def spans(sql: bytes, start: int, backslash_escapes: bool
           ) -> list[tuple[str, bytes, int, int]]:
    pattern = _TOKENS if backslash_escapes else _TOKENS_NO_BACKSLASH
    out = []
    for match in pattern.finditer(sql, start):
        kind = match.lastgroup
        if kind == "skip" or kind == "string" or kind is None:
            continue
        text = match.group()
        out.append((kind, text.upper() if kind == "word" else text, match.start(), match.end()))
    return out


def tokens(sql: bytes, start: int = 0, backslash_escapes: bool = True) -> list[Token]:
    """(kind, text) of each code token. Strings, quoted identifiers and comments are
    left out."""
    return [(kind, text) for kind, text, _, _ in spans(sql, start, backslash_escapes)]


def string_literals(sql: bytes, start: int) -> list[bytes]:
    out = []
    for backslash_escapes in (True, False):
        pattern = _TOKENS if backslash_escapes else _TOKENS_NO_BACKSLASH
        for match in pattern.finditer(sql, start):
            if match.lastgroup == "string":
                text = match.group()
                quote = text[:1]
                body = text[1:-1] if len(text) > 1 and text.endswith(quote) else text[1:]
                body = body.replace(quote + quote, quote)
                if backslash_escapes:
                    body = re.sub(rb"\\(.)", rb"\1", body, flags=re.DOTALL)
                out.append(body)
    return out


def plain_svar_targets(toks: list[Token]) -> list[int]:
    """Indexes of `@@name` tokens (no session./local./global.) that a SET assigns."""
    found = []
    expect_target = True  # after SET, or after a comma
    for index, (kind, text) in enumerate(toks[1:], 1):
        if kind == "punct" and text == b",":
            expect_target = True
        elif expect_target:
            # (SET SESSION @@name is no SQL: after a scope word nothing is counted.)
            if kind == "svar" and b"." not in text:
                found.append(index)
            expect_target = False
    return found


def comma_separated(toks: list[Token]) -> list[list[Token]]:
    parts: list[list[Token]] = [[]]
    for token in toks:
        if token == ("punct", b","):
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def split_statements(toks: list[Token]) -> list[list[Token]]:
    statements: list[list[Token]] = [[]]
    for token in toks:
        if token == ("punct", b";"):
            if statements[-1]:
                statements.append([])
        else:
            statements[-1].append(token)
    return [s for s in statements if s]


def svar_name(text: bytes) -> bytes:
    """@@session.warning_count -> warning_count."""
    return text.rsplit(b".", 1)[-1].lstrip(b"@").lower()


# The previous statement's ROW_COUNT() and FOUND_ROWS(), and the counts of its conditions.
DIAGNOSTIC_FUNCTIONS = (b"ROW_COUNT", b"FOUND_ROWS")
DIAGNOSTIC_VARIABLES = (b"warning_count", b"error_count")
