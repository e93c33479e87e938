"""Write mysqlgate/builtin_names.py: the words that are not stored functions when a
call follows them (`word(`), as MariaDB and MySQL list them: their keywords
(information_schema.KEYWORDS), MariaDB's information_schema.SQL_FUNCTIONS, and the
topics of their help tables (mysql.help_topic: every built-in function).

    .venv/bin/python scripts/builtin_names.py     # starts both test servers (a minute)

A server version with new built-in functions makes the list stale in the safe
direction: a call of a name not listed counts as stored code (sql_effects)."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import FLAVOURS, server_class  # noqa: E402

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
CALL_TOPIC = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def names_of(flavour: str) -> tuple[str, set[str]]:
    with server_class(flavour)({}) as server:
        version = server.query("SELECT VERSION()")[0][0]
        words = [row[0] for row in server.query("SELECT WORD FROM information_schema.KEYWORDS")]
        if flavour == "mariadb":
            words += [row[0] for row in server.query(
                "SELECT FUNCTION FROM information_schema.SQL_FUNCTIONS")]
        for (topic,) in server.query("SELECT name FROM mysql.help_topic"):
            topic = topic.replace("\\_", "_").strip()
            call = CALL_TOPIC.match(topic)
            words.append(call.group(1) if call else topic)
    return f"{flavour} {version}", {w.upper() for w in words if NAME.fullmatch(w)}


def main() -> None:
    sources = []
    names: set[str] = set()
    for flavour in FLAVOURS:
        source, found = names_of(flavour)
        sources.append(source)
        names |= found
    body = textwrap.fill(" ".join(sorted(names)), width=88, break_on_hyphens=False)
    (ROOT / "mysqlgate" / "builtin_names.py").write_text(
        '"""Built-in functions and keywords of MariaDB and MySQL: a word followed by `(`\n'
        "that is not one of these calls a stored function (sql_effects).\n\n"
        "Made by scripts/builtin_names.py (do not edit) from:\n"
        + "".join(f"    {source}\n" for source in sources) +
        '"""\n\nBUILTIN_NAMES = frozenset(b"""\n' + body + '\n""".split())\n')
    print(f"{len(names)} names from {', '.join(sources)}")


if __name__ == "__main__":
    main()
