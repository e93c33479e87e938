"""Client connections with particular habits, for tests that need them."""

from __future__ import annotations

import pymysql


class LoginOnly(pymysql.connections.Connection):  # type: ignore[misc]
    """PyMySQL without its SET NAMES after the login (pass autocommit=None, or it sends
    SET AUTOCOMMIT too): nothing reaches the server but the login itself."""

    def set_character_set(self, charset: str, collation: str | None = None) -> None:
        pass
