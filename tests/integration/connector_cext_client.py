"""A mysql-connector-python session with its C extension, driven by test_error_codes.py
over stdin and stdout, one JSON object a line each way.

A process of its own: the extension links against the OpenSSL it ships with (3.2 or
later), which the dynamic loader can use only if no other libssl.so.3 was loaded first;
the test process has loaded the system's (Python's ssl module, through PyMySQL). Here
the extension is imported before anything else.

    python connector_cext_client.py '{"host": ..., "port": ..., ...}'
    in:  {"op": "connect"} | {"op": "run", "sql": "..."} | {"op": "close"}
    out: {"rows": [[...], ...]} | {"error": {"errno", "sqlstate", "msg", "category",
         "disconnect"}}
"""

from __future__ import annotations

import json
import sys
from typing import Any

import _mysql_connector  # noqa: F401  (before anything that loads ssl: see above)
import mysql.connector
from sqlalchemy import create_engine


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes | bytearray):
        return value.decode()
    return str(value)


def main() -> None:
    params = json.loads(sys.argv[1])
    if not mysql.connector.HAVE_CEXT:
        raise SystemExit("mysql-connector-python's C extension did not load")
    # The dialect SQLAlchemy uses for this driver: what it makes of each error.
    dialect = create_engine("mysql+mysqlconnector://", module=mysql.connector).dialect
    conn: Any = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "connect":
                conn = mysql.connector.connect(use_pure=False, **params)
                assert type(conn).__name__ == "CMySQLConnection", type(conn)
                reply: dict[str, Any] = {"rows": []}
            elif request["op"] == "run":
                cursor = conn.cursor()
                try:
                    cursor.execute(request["sql"])
                    rows = cursor.fetchall() if cursor.with_rows else []
                finally:
                    cursor.close()
                reply = {"rows": [[_text(v) for v in row] for row in rows]}
            else:
                if conn is not None:
                    conn.close()
                reply = {"rows": []}
        except mysql.connector.Error as exc:
            reply = {"error": {
                "errno": exc.errno, "sqlstate": exc.sqlstate, "msg": exc.msg,
                "category": type(exc).__name__,
                "disconnect": bool(dialect.is_disconnect(exc, None, None)),
            }}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if request["op"] == "close":
            return


if __name__ == "__main__":
    main()
