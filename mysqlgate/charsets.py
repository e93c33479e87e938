"""Character sets and collations as the upstream server knows them.

A handshake names a collation by id; `SET NAMES cs` and `SET CHARACTER SET cs` choose
the character set's default collation, which the trackers do not report. Both differ
between servers (utf8mb4's default is utf8mb4_general_ci on MariaDB 10.11 and
utf8mb4_0900_ai_ci on MySQL 8 and later, which a client may change with
default_collation_for_utf8mb4), so they are read from the server (issue 14). PyMySQL's
table stands in only until the server was reached.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pymysql.charset import charset_by_id

# MySQL's session variable that overrides utf8mb4's default collation.
UTF8MB4_DEFAULT = "default_collation_for_utf8mb4"
# Reads the server's table: id, collation, character set, whether it is the default.
COLLATIONS_SQL = (b"SELECT ID, COLLATION_NAME, CHARACTER_SET_NAME, IS_DEFAULT"
                  b" FROM information_schema.COLLATIONS")
CHARSET_VARIABLES = ("character_set_client", "character_set_connection",
                     "character_set_results")


@dataclass(frozen=True)
class Charsets:
    by_id: Mapping[int, tuple[str, str]]  # collation id -> (character set, collation)
    defaults: Mapping[str, str]  # character set -> its default collation
    utf8mb4_default: str | None = None  # the server's default_collation_for_utf8mb4

    @classmethod
    def from_rows(cls, rows: Iterable[Iterable[str | None]],
                  utf8mb4_default: str | None = None) -> Charsets:
        by_id: dict[int, tuple[str, str]] = {}
        defaults: dict[str, str] = {}
        for row in rows:
            ident, collation, charset, is_default = row
            if ident is None or collation is None or charset is None:
                continue  # MariaDB lists some collations once per character set, id NULL
            by_id.setdefault(int(ident), (charset, collation))
            if (is_default or "").lower() == "yes":
                defaults[charset] = collation
        return cls(by_id, defaults, utf8mb4_default)

    def handshake_variables(self, charset_id: int) -> dict[str, str]:
        """The variables a handshake's collation id sets (as SET NAMES with COLLATE)."""
        found = self.by_id.get(charset_id)
        if found is None:
            return {}
        charset, collation = found
        values = dict.fromkeys(CHARSET_VARIABLES, charset)
        values["collation_connection"] = collation
        return values

    def default_collation(self, charset: str, variables: Mapping[str, str]) -> str | None:
        """The collation SET NAMES `charset` gives a session with `variables`; None:
        the server does not know the character set."""
        if charset == "utf8mb4":
            chosen = variables.get(UTF8MB4_DEFAULT, self.utf8mb4_default)
            if chosen:
                return chosen
        return self.defaults.get(charset)

    def charset_of(self, collation: str) -> str | None:
        for charset, name in self.by_id.values():
            if name == collation:
                return charset
        return None

    def collation_id(self, collation: str | None) -> int | None:
        """The id a handshake would give for `collation` (None: unknown)."""
        for ident, (_, name) in self.by_id.items():
            if name == collation:
                return ident
        return None


@functools.cache
def builtin() -> Charsets:
    """PyMySQL's table (MariaDB's defaults): until the server was reached."""
    by_id: dict[int, tuple[str, str]] = {}
    defaults: dict[str, str] = {}
    for ident in range(1, 2048):
        try:
            cs = charset_by_id(ident)
        except KeyError:
            continue
        charset = "utf8mb3" if cs.name == "utf8" else cs.name
        collation = cs.collation.replace("utf8_", "utf8mb3_", 1)
        by_id[ident] = (charset, collation)
        if cs.is_default:
            defaults[charset] = collation
    return Charsets(by_id, defaults)
