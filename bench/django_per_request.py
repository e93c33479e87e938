"""Django with CONN_MAX_AGE = 0 (a connection per request), direct vs through mysqlgate.

Usage:  python bench/django_per_request.py [--rounds 5] [--time 10] [--quick]
        [--workers 4] [--pool-size 4] [--delay-ms 1] [--variants relay]

Django's default: each request opens a database connection with its first query and
closes it when the request ends. Here a "request", run back to back by each of
--workers threads, is what Django's request handler does around a view that reads one
row through the ORM:

    close_old_connections()              # request_started
    Item.objects.using(alias).get(pk=n)  # opens the connection: connect, SET NAMES,
                                         # autocommit, SET SESSION TRANSACTION ISOLATION
                                         # LEVEL READ COMMITTED, then the SELECT
    close_old_connections()              # request_finished: CONN_MAX_AGE = 0 closes it

with Django's MySQL backend (mysqlclient) and a minimal in-process settings.configure().
The network set-ups, alternation and report are those of connect_per_request.py (by
default only the relay: the server 1 ms away each way).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pymysql
from common import DB_NAME, DB_PASSWORD, DB_USER, Bench, run_main
from connect_per_request import body, parse_args

ROWS = 1000

_Item: Any = None  # the model, defined once Django is set up


def setup_django() -> None:
    """settings.configure() with two aliases whose PORT is set per run (see request_on)."""
    global _Item
    import django
    from django.conf import settings

    database = {
        "ENGINE": "django.db.backends.mysql",
        "NAME": DB_NAME,
        "USER": DB_USER,
        "PASSWORD": DB_PASSWORD,
        "HOST": "127.0.0.1",
        "PORT": "",
        "CONN_MAX_AGE": 0,  # Django's default, spelled out: a connection per request
        "OPTIONS": {"charset": "utf8mb4", "connect_timeout": 20},
    }
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=[],
        DATABASES={"default": dict(database), "bench": dict(database)},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.db import models

    class Item(models.Model):
        name = models.CharField(max_length=100)
        qty = models.IntegerField(default=0)

        class Meta:
            app_label = "bench"
            db_table = "bench_item"

    _Item = Item


def prepare(bench: Bench) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=bench.db_port, user=DB_USER,
                           password=DB_PASSWORD, database=DB_NAME, autocommit=True)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "CREATE TABLE bench_item (id INT AUTO_INCREMENT PRIMARY KEY, "
                "name VARCHAR(100) NOT NULL, qty INT NOT NULL)"
            )
            cursor.executemany("INSERT INTO bench_item (name, qty) VALUES (%s, %s)",
                               [(f"item {n}", n) for n in range(1, ROWS + 1)])
    finally:
        conn.close()


def request_on(port: int) -> Callable[[int], None]:
    from django.db import close_old_connections, connections

    # The wrappers are per thread and made lazily; each reads settings_dict at connect.
    connections.settings["bench"]["PORT"] = str(port)
    item_model = _Item

    def request(_worker: int) -> None:
        close_old_connections()
        try:
            pk = random.randint(1, ROWS)
            item = item_model.objects.using("bench").get(pk=pk)
            if item.qty != pk:
                raise RuntimeError(f"row {pk} has qty {item.qty}")
        finally:
            close_old_connections()

    return request


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(
        argv,
        description="Django CONN_MAX_AGE = 0 requests, direct vs through mysqlgate.",
        default_variants="relay",
    )
    setup_django()
    what = "Django threads (CONN_MAX_AGE = 0), one ORM get() per request"
    return run_main(
        lambda bench: body(bench, settings, "django_per_request", request_on, what, prepare),
        "django_per_request",
    )


if __name__ == "__main__":
    sys.exit(main())
