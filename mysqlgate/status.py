"""Asking a running mysqlgate, found through the same configuration (file, environment,
flags) as the daemon's:

- `mysqlgate status`: what the admin console says, as tables on a terminal or as JSON.
  It is a client of the console like any other (PyMySQL), so it shows exactly what SHOW
  POOLS, SHOW CLIENTS, SHOW SERVERS and SHOW STATS return.
- `mysqlgate health`: GET /healthz on metrics.listen; exit status 0 when healthy (the
  container image's HEALTHCHECK).
"""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import pymysql
import pymysql.cursors

from .config import Config, parse_listener
from .settings import ConfigError

CR_CONN_HOST_ERROR = 2003  # PyMySQL's code when nothing answers at the address

SECTIONS = ("POOLS", "CLIENTS", "SERVERS", "STATS")
# Columns shown on a terminal (JSON has them all), with their headings.
TERMINAL_COLUMNS = {
    "POOLS": ("pool", "size", "effective_size", "in_use", "idle", "opening", "waiting",
              "longest_wait_s", "clients", "pinned", "in_transaction", "paused", "status",
              "fleet", "account_connections", "share"),
    "CLIENTS": ("id", "user", "address", "state", "autocommit", "idle_s", "connected_s",
                "pins", "upstream_thread", "statement"),
    "SERVERS": ("pool", "thread_id", "state", "client", "age_s", "idle_s"),
    "STATS": ("stat", "total", "per_second_recent", "per_second_average"),
}


def read(config: Config, address: str | None, timeout: float = 5.0) -> dict[str, Any]:
    """Every section as a list of rows (dicts), plus `version`."""
    target = parse_listener(address or config["admin.listen"] or "127.0.0.1:6032",
                            "--admin" if address else "admin.listen")
    params: dict[str, Any] = {
        "user": config["admin.user"], "password": config["admin.password"] or "",
        "connect_timeout": timeout, "read_timeout": timeout, "autocommit": True,
        "cursorclass": pymysql.cursors.DictCursor,
    }
    if target.path:
        params["unix_socket"] = target.path
    else:
        params.update(host=target.host, port=target.port)
    out: dict[str, Any] = {}
    with pymysql.connect(**params) as conn, conn.cursor() as cursor:
        cursor.execute("SHOW VERSION")
        out["version"] = cursor.fetchone()
        for section in SECTIONS:
            cursor.execute(f"SHOW {section}")
            out[section.lower()] = list(cursor.fetchall())
    return out


def main(config: Config, address: str | None, as_json: bool, out: TextIO = sys.stdout) -> int:
    where = address or config["admin.listen"]
    if not where:
        print("mysqlgate status: admin.listen is off; give the console's address with "
              "--admin host:port", file=sys.stderr)
        return 2
    try:
        facts = read(config, address)
    except ConfigError as exc:
        print(f"mysqlgate status: {exc}", file=sys.stderr)
        return 2
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args else ""
        detail = exc.args[1] if len(exc.args) > 1 else exc
        hint = ""
        if code == CR_CONN_HOST_ERROR:
            hint = ("; is mysqlgate running, with this admin.listen? Give its --config, or "
                    "the console's address with --admin host:port or unix:/path")
        print(f"mysqlgate status: cannot read the admin console at {where}: ({code}) "
              f"{detail}{hint}", file=sys.stderr)
        return 1
    if as_json:
        json.dump(facts, out, indent=2, default=str)
        out.write("\n")
        return 0
    version = facts["version"]
    out.write(f"{version['version']} ({version['python']}, {version['event_loop']}), up "
              f"{_duration(version['uptime_s'])}, admin console {where}\n")
    for section in SECTIONS:
        rows = facts[section.lower()]
        out.write(f"\n{section} ({len(rows)})\n")
        if rows:
            out.write(render(TERMINAL_COLUMNS[section], rows))
        if section == "CLIENTS":
            out.write(autocommit_note(rows))
    return 0


def autocommit_note(clients: Sequence[dict[str, Any]]) -> str:
    """Clients idle in a transaction with autocommit off, and what to do about them: the
    usual reason a pool stays full (a driver's default, not a slow query)."""
    holders = [row for row in clients
               if row.get("state") == "idle in transaction" and row.get("autocommit") == 0]
    if not holders:
        return ""
    ids = ", ".join(str(row["id"]) for row in holders)
    return (f"\n{len(holders)} client(s) ({ids}) hold an upstream connection idle in a "
            "transaction with autocommit off: PyMySQL and mysqlclient start that way, so a "
            "first statement, even a SELECT, keeps the connection until COMMIT or ROLLBACK. "
            "Turn autocommit on in the driver (autocommit=True), or commit after reads too.\n")


def render(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """An aligned text table: numbers right, text left, NULL as '-'."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    numeric = [all(isinstance(row.get(c), int | float) or row.get(c) is None for row in rows)
               for c in columns]
    widths = [max(len(columns[i]), *(len(line[i]) for line in cells))
              for i in range(len(columns))]
    lines = []
    for line in [list(columns), *cells]:
        parts = [text.rjust(w) if num else text.ljust(w)
                 for text, w, num in zip(line, widths, numeric, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 or value == 0 else f"{value:.2f}"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s"


def health(config: Config, address: str | None, timeout: float = 3.0,
           out: TextIO = sys.stdout) -> int:
    """0 when /healthz answers 200; 1 otherwise, saying why."""
    where = address or config["metrics.listen"]
    if not where:
        print("mysqlgate health: metrics.listen is off; set it (the health check is served "
              "there) or give --metrics host:port", file=sys.stderr)
        return 2
    try:
        target = parse_listener(where, "--metrics" if address else "metrics.listen")
    except ConfigError as exc:
        print(f"mysqlgate health: {exc}", file=sys.stderr)
        return 2
    if target.path is not None:
        print(f"mysqlgate health: --metrics {where} is a unix socket; accepted: host:port, "
              "where /healthz is served", file=sys.stderr)
        return 2
    host = target.host if target.host not in (None, "", "0.0.0.0", "::") else "127.0.0.1"
    try:
        conn = http.client.HTTPConnection(host, target.port, timeout=timeout)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read().decode(errors="replace").strip()
    except OSError as exc:
        print(f"mysqlgate health: no answer from {where}: {exc}", file=out)
        return 1
    print(f"{response.status} {body}", file=out)
    return 0 if response.status == 200 else 1
