"""The admin console's language: text in, a Command out (pure; no I/O, no gate).

The console's own commands (SHOW POOLS, SET pool.queue_timeout = 5, PAUSE, ...) and
the chatter drivers and the mariadb CLI send on their own when they connect (SET NAMES,
SET autocommit=0, SELECT @@version_comment LIMIT 1, ROLLBACK), which is answered so that
they work and otherwise ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..settings import SETTINGS_BY_NAME

HELP: tuple[tuple[str, str], ...] = (
    ("SHOW POOLS", "a row per account: size, in use, idle, opening, waiting, longest wait, "
                   "pinned clients, paused"),
    ("SHOW CLIENTS", "a row per client: state, current statement, pin reasons, idle time"),
    ("SHOW SERVERS", "a row per upstream connection: thread id, client, age, idle time"),
    ("SHOW STATS", "counters since start, with rates over the last minute"),
    ("SHOW CONFIG", "every setting, its value and default, and whether SET can change it"),
    ("SHOW VERSION", "mysqlgate, Python and event loop versions; uptime"),
    ("SET <setting> = <value>", "change a reloadable setting now (see SHOW CONFIG)"),
    ("RELOAD", "re-read the configuration file and environment (as SIGHUP)"),
    ("PAUSE", "hand out no upstream connection; close those that come back (e.g. for a "
              "server restart); statements wait until RESUME"),
    ("RESUME", "end PAUSE: waiting statements run"),
    ("KILL CLIENT <id>", "disconnect a client (its transaction is rolled back)"),
    ("SHUTDOWN", "stop mysqlgate as SIGTERM does: running transactions may finish"),
    ("HELP", "this list"),
)
SHOW_WHAT = ("POOLS", "CLIENTS", "SERVERS", "STATS", "CONFIG", "VERSION", "HELP")


class CommandError(Exception):
    """Not a command the console knows; the message says what is."""


@dataclass(frozen=True)
class Command:
    verb: str  # SHOW, SET, RELOAD, PAUSE, RESUME, KILL, SHUTDOWN, SELECT, EMPTY, IGNORE
    target: str = ""  # SHOW's table, SET's setting, KILL's client id
    value: str = ""  # SET's value
    select: tuple[tuple[str, str], ...] = ()  # SELECT's (label, expression) pairs


_COMMENTS = re.compile(r"/\*.*?\*/|--[ \t][^\n]*|#[^\n]*", re.DOTALL)
_SET = re.compile(r"SET\s+(?:GLOBAL\s+|SESSION\s+|@@(?:GLOBAL|SESSION)\.|@@)?"
                  r"([A-Za-z_][\w.]*)\s*(?:=|\bTO\b)\s*(.*)", re.IGNORECASE | re.DOTALL)
# Statements drivers send on their own: acknowledged, with no effect on the console.
_CHATTER = re.compile(
    r"(?:SET\s+(?:NAMES|CHARACTER\s+SET|CHARSET|@(?!@)|(?:SESSION\s+|GLOBAL\s+)?TRANSACTION"
    r"|LOCAL\b)|COMMIT|ROLLBACK|BEGIN|START\s+TRANSACTION|USE\s)", re.IGNORECASE)
_ECHOED_TABLES = re.compile(r"SHOW\s+(?:WARNINGS|ERRORS|(?:SESSION\s+|GLOBAL\s+)?VARIABLES"
                            r"|(?:SESSION\s+|GLOBAL\s+)?STATUS|DATABASES)\b",
                            re.IGNORECASE)


KNOWN_COMMANDS = "; ".join(name for name, _ in HELP)
# SET changes these only: the others need a restart.
RELOADABLE = tuple(name for name, setting in SETTINGS_BY_NAME.items() if setting.reloadable)


def parse(text: str) -> Command:
    sql = _COMMENTS.sub(" ", text).strip().rstrip(";").strip()
    if not sql:
        return Command("EMPTY")
    if ";" in sql:
        raise CommandError(f"{sql.count(';') + 1} commands in one ({_quote(sql)}); the console "
                           "takes one command at a time")
    words = sql.split()
    head = words[0].upper()
    if head == "SHOW" and len(words) == 2 and words[1].upper() in SHOW_WHAT:
        return Command("SHOW", words[1].upper())
    if _ECHOED_TABLES.match(sql):
        return Command("SHOW", "EMPTY")
    if head == "SHOW":
        what = " ".join(words[1:])
        if len(words) > 2 and words[1].upper() in SHOW_WHAT:
            raise CommandError(f"SHOW {words[1].upper()} takes nothing after it, not "
                               f"{' '.join(words[2:])!r}")
        raise CommandError(f"unknown SHOW {what!r}; accepted: SHOW "
                           + ", SHOW ".join(SHOW_WHAT))
    if head == "HELP" and len(words) == 1:
        return Command("SHOW", "HELP")
    if head in ("RELOAD", "PAUSE", "RESUME", "SHUTDOWN", "HELP"):
        if len(words) == 1:
            return Command(head)
        raise CommandError(f"{head} takes nothing after it, not {' '.join(words[1:])!r}")
    if head == "KILL":
        rest = words[1:]
        if rest and rest[0].upper() in ("CLIENT", "CONNECTION"):
            rest = rest[1:]
        if len(rest) == 1 and rest[0].isdigit():
            return Command("KILL", rest[0])
        raise CommandError(f"{_quote(sql)} names no client; accepted: KILL CLIENT <id>, with "
                           "the id SHOW CLIENTS gives")
    if head == "SELECT":
        return Command("SELECT", select=_select_items(sql[6:]))
    if _CHATTER.match(sql):
        return Command("IGNORE")
    if head == "SET":
        return _set(sql)
    raise CommandError(f"unknown command {words[0]!r}; known commands: {KNOWN_COMMANDS}")


def _quote(sql: str, limit: int = 60) -> str:
    """A command as a message quotes it: whole, or its start."""
    return repr(sql if len(sql) <= limit else sql[:limit - 3] + "...")


def _set(sql: str) -> Command:
    match = _SET.fullmatch(sql)
    if match is None:
        raise CommandError(f"cannot read {_quote(sql)} as SET <setting> = <value>; accepted "
                           "e.g.: SET pool.queue_timeout = 5")
    name, value = match.group(1).lower(), match.group(2).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    if "." not in name:
        near = [s for s in SETTINGS_BY_NAME if s.split(".", 1)[1] == name]
        if near:
            raise CommandError(f"unknown setting {name!r}; did you mean {near[0]}?")
        return Command("IGNORE")  # a session variable a driver sets (autocommit, ...)
    if name not in SETTINGS_BY_NAME:
        raise CommandError(f"unknown setting {name!r}; SET takes: {', '.join(RELOADABLE)}")
    if not SETTINGS_BY_NAME[name].reloadable:
        raise CommandError(f"{name} cannot change without a restart; SET takes: "
                           f"{', '.join(RELOADABLE)} (edit the file and restart for the "
                           "others)")
    return Command("SET", name, value)


SELECTABLE = ("the console answers SELECT of @@variables, functions without arguments "
              "(VERSION(), ...), numbers and strings only; its own commands are SHOW POOLS, "
              "SHOW CLIENTS, ... (HELP lists them)")
_ITEM = re.compile(
    r"\s*(@@(?:session\.|global\.|local\.)?\w+|\w+\s*\(\s*\)|-?\d+|'[^']*')"
    r"(?:\s+(?:AS\s+)?(\w+|`[^`]*`|'[^']*'))?\s*", re.IGNORECASE)


def _select_items(text: str) -> tuple[tuple[str, str], ...]:
    """SELECT of @@variables, functions without arguments, numbers and strings: what
    clients ask a server about itself (SELECT @@version_comment LIMIT 1)."""
    body = re.sub(r"\s+LIMIT\s+\d+\s*$", "", text, flags=re.IGNORECASE)
    items = []
    pos = 0
    while True:
        match = _ITEM.match(body, pos)
        if match is None:
            raise _unanswerable(text)
        expression = match.group(1)
        label = match.group(2) or expression
        items.append((label.strip("`'"), expression))
        pos = match.end()
        if pos == len(body):
            return tuple(items)
        if body[pos] != ",":
            raise _unanswerable(text)
        pos += 1


def _unanswerable(text: str) -> CommandError:
    return CommandError(f"cannot answer {_quote('SELECT ' + text.strip())}: {SELECTABLE}")


def evaluate(expression: str, variables: Mapping[str, object],
             functions: Mapping[str, object]) -> object:
    """An item of a console SELECT: unknown variables are NULL, as for a setting the
    server lacks."""
    if expression.startswith("@@"):
        name = expression[2:].lower()
        for scope in ("session.", "global.", "local."):
            name = name.removeprefix(scope)
        return variables.get(name)
    if expression.startswith("'"):
        return expression[1:-1]
    if expression.lstrip("-").isdigit():
        return int(expression)
    name = expression.split("(")[0].strip().upper()
    if name not in functions:
        raise CommandError(f"the console does not know {name}(); it knows "
                           + ", ".join(f"{known}()" for known in functions))
    return functions[name]
