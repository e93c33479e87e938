"""What the same test says in MariaDB's and in MySQL's SQL: the names of variables that
differ, features only one of them has. Tests ask `server.dialect` (or a ScratchDb's
`db.server.dialect`) instead of branching on the flavour everywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass

_STATEMENT_TIME = re.compile(r"\bmax_statement_time\s*=\s*([0-9.]+)", re.IGNORECASE)
# MariaDB's names of MySQL's variables (MySQL 8 dropped the old ones).
_RENAMED = {"max_statement_time": "max_execution_time", "tx_isolation": "transaction_isolation",
            "tx_read_only": "transaction_read_only"}
_RENAMED_NAMES = re.compile(r"\b(" + "|".join(_RENAMED) + r")\b", re.IGNORECASE)


@dataclass(frozen=True)
class Dialect:
    flavour: str
    isolation: str  # the session variable holding the isolation level
    read_only: str  # ... and the transaction access mode
    in_transaction: str  # an expression: 1 inside a transaction (MySQL has no variable)
    statement_time: str  # the session variable that limits a statement's time
    statement_time_unit: int  # ... in seconds (1) or milliseconds (1000)
    sequences: bool  # CREATE SEQUENCE, NEXTVAL(), LASTVAL()
    execute_immediate: bool
    set_statement: bool  # SET STATEMENT var = value FOR ...
    int_type: str  # what CAST(... AS ?) takes for an integer

    def statement_time_sql(self, seconds: float) -> str:
        """`max_statement_time = 5` / `max_execution_time = 5000`."""
        return f"{self.statement_time} = {seconds * self.statement_time_unit:g}"

    def translate(self, sql: str) -> str:
        """A statement written for MariaDB said in this flavour's words: MySQL's names of
        the variables for a statement's time limit (in ms), the isolation level and the
        access mode; @@in_transaction, which MySQL lacks, becomes NULL. What has no
        counterpart stays as it is (both sides of a comparison then get the error)."""
        if self.flavour == "mariadb":
            return sql
        sql = _STATEMENT_TIME.sub(
            lambda m: f"max_execution_time = {round(float(m.group(1)) * 1000)}", sql)
        sql = _RENAMED_NAMES.sub(lambda m: _RENAMED[m.group(1).lower()], sql)
        return sql.replace("@@in_transaction", "NULL")

    def numbers(self, first: int, last: int) -> str:
        """A table expression of the integers first..last in column `seq` (MariaDB's
        Sequence engine; on MySQL a JSON_TABLE of as many elements)."""
        if self.flavour == "mariadb":
            return f"seq_{first}_to_{last}"
        count = last - first + 1
        return (f"(SELECT seq + {first - 1} AS seq FROM JSON_TABLE(CONCAT('[',"
                f" REPEAT('0,', {count - 1}), '0]'), '$[*]' COLUMNS (seq FOR ORDINALITY))"
                " AS elements) AS numbers")

    def role_name(self, role: str) -> str:
        """What CURRENT_ROLE() answers for a role granted to '%'."""
        return role if self.flavour == "mariadb" else f"`{role}`@`%`"

    def format(self, template: str, **more: object) -> str:
        """A statement written with {isolation}, {read_only}, {in_transaction},
        {statement_time}, {int_type} for this flavour."""
        return template.format(isolation=self.isolation, read_only=self.read_only,
                               in_transaction=self.in_transaction,
                               statement_time=self.statement_time, int_type=self.int_type,
                               **more)


MARIADB = Dialect("mariadb", "tx_isolation", "tx_read_only", "@@in_transaction",
                  "max_statement_time", 1, True, True, True, "INT")
MYSQL = Dialect("mysql", "transaction_isolation", "transaction_read_only", "NULL",
                "max_execution_time", 1000, False, False, False, "SIGNED")
DIALECTS = {"mariadb": MARIADB, "mysql": MYSQL}
