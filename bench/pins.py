"""How often real application workloads pin a client to an upstream connection.

Usage:  python bench/pins.py [--quick] [--threads 8] [--requests 150] [--pool-size 4]
        [--workloads django,sqlalchemy,...]

A client that holds state which cannot move (user variables, temporary tables, locks, an
open cursor, ...) is pinned to its upstream connection until it resets or leaves; the
fewer pins, the better mysqlgate shares its pool. Each workload below runs in a child
process of its own, --threads client threads each doing --requests "requests", against
a fresh mysqlgate (pool of --pool-size) that is then stopped with SIGTERM: its totals line
gives the commands it served, the pins by reason, the settings statements it answered
itself and the statements it prepared upstream for the executes it forwarded.

Workloads (tables are created directly on the server, not through mysqlgate):

- django: Django ORM, CONN_MAX_AGE = 0 (a connection per request), mysqlclient driver:
  filter, create, atomic() with nested atomic() (one rolled back, one released, one whose
  SAVEPOINT is the outer block's first statement), select_for_update, get_or_create on a
  shared unique name, update(), count(), delete (books, then author, in atomic()).
- django-persistent: the same with CONN_MAX_AGE = None (one connection per thread).
- sqlalchemy: SQLAlchemy 2 ORM over PyMySQL (its own client-side pool): Session with
  begin(), add/flush, begin_nested() rolled back and released, get, update, count,
  delete.
- pymysql: plain PyMySQL, autocommit off (its default): select, insert, update, commit,
  every 5th request a rollback.
- mysqlclient: the same with MySQLdb.
- connector-prepared: mysql-connector-python, cursor(prepared=True), one cursor per
  statement kept for the thread's life (the statement is prepared once, executed many
  times), commits.
- connector-prepared-1cursor: one prepared cursor for all statements (it closes and
  re-prepares whenever the statement text changes, as such code does).
- control-stateful: a check of the measurement, not a real workload: PyMySQL clients
  that set a user variable and take a named lock (GET_LOCK) in every request, which
  must pin (once per client per reason).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from common import (
    DB_NAME,
    DB_PASSWORD,
    DB_USER,
    REPO_ROOT,
    Bench,
    GateTotals,
    create_account,
    environment,
    log,
    report_result,
    run_main,
    start_gate,
    start_mariadb,
    write_result,
)

WORKLOADS = (
    "django",
    "django-persistent",
    "sqlalchemy",
    "pymysql",
    "mysqlclient",
    "connector-prepared",
    "connector-prepared-1cursor",
    "control-stateful",
)
CHILD_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Settings:
    threads: int
    requests: int
    pool_size: int
    workloads: list[str]
    keep_logs: bool
    direct: bool = False


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Pins per 1,000 statements, by workload.")
    parser.add_argument("--threads", type=int, default=8, help="client threads (8)")
    parser.add_argument("--requests", type=int, default=150, help="requests per thread (150)")
    parser.add_argument("--quick", action="store_true", help="15 requests per thread")
    parser.add_argument("--pool-size", type=int, default=4, help="mysqlgate pool size (4)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="comma-separated subset (default: all)")
    parser.add_argument("--keep-logs", action="store_true", help="copy logs to bench/results/")
    parser.add_argument(
        "--direct", action="store_true",
        help="control run: the workloads straight against MariaDB, no mysqlgate (no totals)",
    )
    # Internal: run one workload in this process (what the parent starts).
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db-port", type=int, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.threads < 1 or ns.requests < 1 or ns.pool_size < 1:
        parser.error("--threads, --requests and --pool-size must be positive")
    names = [w.strip() for w in ns.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown or not names:
        parser.error(f"--workloads: unknown {unknown}; choose from {', '.join(WORKLOADS)}")
    ns.workload_list = names
    if ns.quick:
        ns.requests = 15
    return ns


# ===================================== the workloads =====================================
# Each runs in a child process: setup(db_port) creates its tables directly on the server;
# run(port, threads, requests) then works through mysqlgate and returns client-side
# counts. Anything unexpected raises.


class Rollback(Exception):
    """Raised inside a nested atomic()/savepoint to roll it back."""


def run_threads(threads: int, body: Callable[[int], int]) -> int:
    """body(worker) in `threads` threads; the sum of what they return. Re-raises the
    first error of any thread."""
    results: list[int] = [0] * threads
    failures: list[BaseException] = []

    def target(index: int) -> None:
        try:
            results[index] = body(index)
        except BaseException as exc:  # reported by the parent thread
            traceback.print_exc()
            failures.append(exc)

    pool = [threading.Thread(target=target, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} of {threads} threads failed") from failures[0]
    return sum(results)


# -- Django ---------------------------------------------------------------------------------


def django_setup(db_port: int, gate_port: int, conn_max_age: int | None) -> dict[str, Any]:
    import django
    from django.conf import settings

    def database(port: int, max_age: int | None) -> dict[str, Any]:
        return {
            "ENGINE": "django.db.backends.mysql",
            "NAME": DB_NAME,
            "USER": DB_USER,
            "PASSWORD": DB_PASSWORD,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "CONN_MAX_AGE": max_age,
            "OPTIONS": {"charset": "utf8mb4", "connect_timeout": 20},
        }

    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=[],
        DATABASES={
            "default": database(gate_port, conn_max_age),
            "setup": database(db_port, 0),  # direct: creating tables is not the workload
        },
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.db import models

    class Author(models.Model):
        name = models.CharField(max_length=100)
        created = models.DateTimeField(auto_now_add=True)

        class Meta:
            app_label = "pins"
            db_table = "dj_author"

    class Book(models.Model):
        title = models.CharField(max_length=200)
        stock = models.IntegerField(default=0)
        author = models.ForeignKey(Author, on_delete=models.CASCADE)

        class Meta:
            app_label = "pins"
            db_table = "dj_book"

    class Tag(models.Model):
        name = models.CharField(max_length=50, unique=True)

        class Meta:
            app_label = "pins"
            db_table = "dj_tag"

    from django.db import connections

    setup = connections["setup"]
    existing = set(setup.introspection.table_names())
    with setup.schema_editor() as editor:
        for model in (Author, Book, Tag):
            if model._meta.db_table not in existing:
                editor.create_model(model)
    setup.close()
    return {"Author": Author, "Book": Book, "Tag": Tag}


def django_workload(gate_port: int, db_port: int, threads: int, requests: int,
                    conn_max_age: int | None) -> dict[str, Any]:
    m = django_setup(db_port, gate_port, conn_max_age)
    author_model, book_model, tag_model = m["Author"], m["Book"], m["Tag"]
    from django.db import close_old_connections, connection, transaction
    from django.db.models import F

    def worker(w: int) -> int:
        done = 0
        try:
            for i in range(requests):
                close_old_connections()  # request_started
                list(author_model.objects.filter(name__startswith="a-0-")[:5])
                with transaction.atomic():
                    author = author_model.objects.create(name=f"a-{w}-{i}")
                    book_model.objects.create(title=f"b-{w}-{i}", stock=1, author=author)
                    try:
                        with transaction.atomic():  # SAVEPOINT ... ROLLBACK TO SAVEPOINT
                            book_model.objects.create(title="gone", stock=-1, author=author)
                            raise Rollback
                    except Rollback:
                        pass
                    with transaction.atomic():  # SAVEPOINT ... RELEASE SAVEPOINT
                        book_model.objects.filter(author=author).update(stock=F("stock") + 1)
                with transaction.atomic(), transaction.atomic():
                    # The SAVEPOINT is the outer block's first statement.
                    book_model.objects.create(title=f"c-{w}-{i}", stock=0, author=author)
                with transaction.atomic():
                    book = book_model.objects.select_for_update().filter(
                        author=author, title=f"b-{w}-{i}").get()
                    book.stock += 1
                    book.save(update_fields=["stock"])
                tag_model.objects.get_or_create(name=f"tag-{i % 10}")
                author_model.objects.filter(pk=author.pk).update(name=f"a-{w}-{i}-x")
                count = book_model.objects.filter(author=author).count()
                if count != 2:
                    raise RuntimeError(f"author {author.pk} has {count} books, expected 2")
                stock = book_model.objects.get(author=author, title=f"b-{w}-{i}").stock
                if stock != 3:
                    raise RuntimeError(f"stock {stock}, expected 3")
                if i % 2:
                    with transaction.atomic():
                        book_model.objects.filter(author=author).delete()
                        author.delete()
                close_old_connections()  # request_finished
                done += 1
        finally:
            connection.close()
        return done

    done = run_threads(threads, worker)
    return {"requests": done, "driver": "mysqlclient (Django's MySQL backend)"}


# -- SQLAlchemy -----------------------------------------------------------------------------


def sqlalchemy_workload(gate_port: int, db_port: int, threads: int,
                        requests: int) -> dict[str, Any]:
    from sqlalchemy import Column, ForeignKey, Integer, String, create_engine, func, select
    from sqlalchemy.orm import DeclarativeBase, Session

    class Base(DeclarativeBase):
        pass

    class Account(Base):
        __tablename__ = "sa_account"
        id = Column(Integer, primary_key=True)
        name = Column(String(100), nullable=False)
        balance = Column(Integer, nullable=False)

    class Entry(Base):
        __tablename__ = "sa_entry"
        id = Column(Integer, primary_key=True)
        account_id = Column(Integer, ForeignKey("sa_account.id", ondelete="CASCADE"),
                            nullable=False)
        amount = Column(Integer, nullable=False)

    def url(port: int) -> str:
        return f"mysql+pymysql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{port}/{DB_NAME}"

    direct = create_engine(url(db_port))
    Base.metadata.create_all(direct)
    direct.dispose()
    # SQLAlchemy's own pool: one client connection per thread stays open.
    engine = create_engine(url(gate_port), pool_size=threads, max_overflow=0)

    def worker(w: int) -> int:
        done = 0
        for i in range(requests):
            with Session(engine) as session, session.begin():
                account: Any = Account(name=f"acct-{w}-{i}", balance=100)
                session.add(account)
                session.flush()
                nested = session.begin_nested()  # SAVEPOINT
                account.balance -= 50
                session.flush()
                nested.rollback()  # ROLLBACK TO SAVEPOINT
                with session.begin_nested():  # SAVEPOINT ... RELEASE SAVEPOINT
                    session.add(Entry(account_id=account.id, amount=5))
                account_id = account.id
            with Session(engine) as session:
                found: Any = session.get(Account, account_id)
                if found is None or found.balance != 100:
                    raise RuntimeError(f"account {account_id}: {found and found.balance}")
                found.balance += 5
                session.commit()
                entries = session.scalar(
                    select(func.count()).select_from(Entry).where(Entry.account_id == account_id))
                if entries != 1:
                    raise RuntimeError(f"account {account_id} has {entries} entries")
                session.scalars(select(Account).where(Account.name.like(f"acct-{w}-%"))
                                .limit(5)).all()
                if i % 2:
                    session.delete(found)
                    session.commit()
            done += 1
        return done

    try:
        done = run_threads(threads, worker)
    finally:
        engine.dispose()
    return {"requests": done, "driver": "PyMySQL (SQLAlchemy ORM)"}


# -- plain DB-API drivers ---------------------------------------------------------------------


PLAIN_TABLE = (
    "CREATE TABLE IF NOT EXISTS plain_item (id INT AUTO_INCREMENT PRIMARY KEY, "
    "name VARCHAR(100) NOT NULL, qty INT NOT NULL, KEY (name))"
)


def plain_setup(db_port: int) -> None:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=db_port, user=DB_USER, password=DB_PASSWORD,
                           database=DB_NAME, autocommit=True)
    try:
        with conn.cursor() as cursor:
            cursor.execute(PLAIN_TABLE)
    finally:
        conn.close()


def dbapi_worker(connect: Callable[[], Any], requests: int, w: int) -> int:
    """select, insert, update, commit; every 5th request rolls back instead. Autocommit
    is the driver's default (off for PyMySQL and mysqlclient)."""
    conn = connect()
    done = 0
    try:
        cursor = conn.cursor()
        for i in range(requests):
            cursor.execute("SELECT id, name, qty FROM plain_item WHERE name LIKE %s LIMIT 5",
                           (f"p-{w}-%",))
            cursor.fetchall()
            cursor.execute("INSERT INTO plain_item (name, qty) VALUES (%s, %s)", (f"p-{w}-{i}", i))
            new_id = cursor.lastrowid
            cursor.execute("UPDATE plain_item SET qty = qty + 1 WHERE id = %s", (new_id,))
            if cursor.rowcount != 1:
                raise RuntimeError(f"update of {new_id} changed {cursor.rowcount} rows")
            cursor.execute("SELECT qty FROM plain_item WHERE id = %s", (new_id,))
            (qty,) = cursor.fetchone()
            if qty != i + 1:
                raise RuntimeError(f"row {new_id}: qty {qty}, expected {i + 1}")
            if i % 5 == 4:
                conn.rollback()
            else:
                conn.commit()
            done += 1
        cursor.close()
    finally:
        conn.close()
    return done


def pymysql_workload(gate_port: int, db_port: int, threads: int,
                     requests: int) -> dict[str, Any]:
    import pymysql

    plain_setup(db_port)

    def connect() -> Any:
        return pymysql.connect(host="127.0.0.1", port=gate_port, user=DB_USER,
                               password=DB_PASSWORD, database=DB_NAME, ssl_disabled=True)

    done = run_threads(threads, lambda w: dbapi_worker(connect, requests, w))
    return {"requests": done, "driver": f"PyMySQL {pymysql.__version__}"}


def mysqlclient_workload(gate_port: int, db_port: int, threads: int,
                         requests: int) -> dict[str, Any]:
    import MySQLdb

    plain_setup(db_port)

    def connect() -> Any:
        return MySQLdb.connect(host="127.0.0.1", port=gate_port, user=DB_USER,
                               password=DB_PASSWORD, database=DB_NAME, charset="utf8mb4")

    done = run_threads(threads, lambda w: dbapi_worker(connect, requests, w))
    return {"requests": done, "driver": f"mysqlclient {MySQLdb.version_info}"}


def connector_workload(gate_port: int, db_port: int, threads: int, requests: int,
                       one_cursor: bool) -> dict[str, Any]:
    import mysql.connector

    plain_setup(db_port)
    select_sql = "SELECT id, name, qty FROM plain_item WHERE id = %s"
    insert_sql = "INSERT INTO plain_item (name, qty) VALUES (%s, %s)"
    update_sql = "UPDATE plain_item SET qty = qty + 1 WHERE id = %s"
    implementation: list[str] = []

    def worker(w: int) -> int:
        conn = mysql.connector.connect(host="127.0.0.1", port=gate_port, user=DB_USER,
                                       password=DB_PASSWORD, database=DB_NAME,
                                       ssl_disabled=True)
        if not implementation:
            implementation.append(type(conn).__name__)
        done = 0
        try:
            if one_cursor:
                shared = conn.cursor(prepared=True)
                cursors = {"select": shared, "insert": shared, "update": shared}
            else:
                cursors = {k: conn.cursor(prepared=True) for k in ("select", "insert", "update")}
            for i in range(requests):
                cursors["insert"].execute(insert_sql, (f"c-{w}-{i}", i))
                new_id = cursors["insert"].lastrowid
                cursors["update"].execute(update_sql, (new_id,))
                for _ in range(3):
                    cursors["select"].execute(select_sql, (new_id,))
                    rows: Any = cursors["select"].fetchall()
                    if len(rows) != 1 or rows[0][2] != i + 1:
                        raise RuntimeError(f"row {new_id}: {rows!r}, expected qty {i + 1}")
                conn.commit()
                done += 1
            for cursor in set(cursors.values()):
                cursor.close()
        finally:
            conn.close()
        return done

    done = run_threads(threads, worker)
    return {
        "requests": done,
        "driver": f"mysql-connector-python {mysql.connector.__version__} "
        f"({', '.join(implementation)})",
    }


def stateful_workload(gate_port: int, threads: int, requests: int) -> dict[str, Any]:
    import pymysql

    def worker(w: int) -> int:
        conn = pymysql.connect(host="127.0.0.1", port=gate_port, user=DB_USER,
                               password=DB_PASSWORD, database=DB_NAME, autocommit=True,
                               ssl_disabled=True)
        done = 0
        try:
            with conn.cursor() as cursor:
                for i in range(requests):
                    cursor.execute("SET @seen = %s", (i,))
                    cursor.execute("SELECT GET_LOCK(%s, 5)", (f"lock-{w}",))
                    cursor.execute("SELECT @seen, RELEASE_LOCK(%s)", (f"lock-{w}",))
                    row = cursor.fetchone()
                    if row is None or row[0] != i or row[1] != 1:
                        raise RuntimeError(f"user variable/lock lost: {row!r}")
                    done += 1
        finally:
            conn.close()
        return done

    done = run_threads(threads, worker)
    return {"requests": done, "driver": f"PyMySQL {pymysql.__version__}"}


def run_child(name: str, gate_port: int, db_port: int, threads: int, requests: int) -> int:
    started = time.monotonic()
    result: dict[str, Any]
    if name == "django":
        result = django_workload(gate_port, db_port, threads, requests, 0)
    elif name == "django-persistent":
        result = django_workload(gate_port, db_port, threads, requests, None)
    elif name == "sqlalchemy":
        result = sqlalchemy_workload(gate_port, db_port, threads, requests)
    elif name == "pymysql":
        result = pymysql_workload(gate_port, db_port, threads, requests)
    elif name == "mysqlclient":
        result = mysqlclient_workload(gate_port, db_port, threads, requests)
    elif name == "connector-prepared":
        result = connector_workload(gate_port, db_port, threads, requests, one_cursor=False)
    elif name == "connector-prepared-1cursor":
        result = connector_workload(gate_port, db_port, threads, requests, one_cursor=True)
    elif name == "control-stateful":
        result = stateful_workload(gate_port, threads, requests)
    else:
        raise SystemExit(f"unknown workload {name}")
    result["seconds"] = round(time.monotonic() - started, 2)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ======================================= the parent ======================================


@dataclasses.dataclass
class WorkloadResult:
    name: str
    ok: bool
    client: dict[str, Any]
    totals: GateTotals | None
    error: str = ""
    gate_problems: list[str] = dataclasses.field(default_factory=list)


def run_workload(bench: Bench, name: str, settings: Settings) -> WorkloadResult:
    gate = None
    port = bench.db_port
    if not settings.direct:
        gate = start_gate(bench, bench.db_port, settings.pool_size, name=f"mysqlgate-{name}")
        port = gate.port
    log(f"{name}: {settings.threads} threads x {settings.requests} requests "
        f"{'directly' if gate is None else 'through mysqlgate'} (:{port})")
    argv = [sys.executable, __file__, "--child", name, "--port", str(port),
            "--db-port", str(bench.db_port), "--threads", str(settings.threads),
            "--requests", str(settings.requests)]
    error = ""
    client: dict[str, Any] = {}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                              cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                client = json.loads(line[len("RESULT "):])
        if proc.returncode != 0 or not client:
            error = f"child exited {proc.returncode}: {(proc.stderr or proc.stdout)[-3000:]}"
    except subprocess.TimeoutExpired:
        error = f"workload hung: no end after {CHILD_TIMEOUT_S} s"
    if gate is None:
        return WorkloadResult(name, not error, client, None, error)
    totals: GateTotals | None = None
    try:
        totals = gate.stop()
    except RuntimeError as exc:
        error = (error + "\n" if error else "") + str(exc)
    problems = gate.problems()
    if totals is not None and (totals.lost or totals.retried):
        error = (error + "\n" if error else "") + \
            f"mysqlgate lost {totals.lost} upstream connections, retried {totals.retried}"
    return WorkloadResult(name, not error, client, totals, error, problems[:50])


def table_rows(results: list[WorkloadResult]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        t = r.totals
        row: dict[str, Any] = {"workload": r.name, "ok": r.ok}
        if t is not None:
            row.update({
                "clients": t.clients,
                "commands": t.commands,
                "pins": dict(sorted(t.pins.items())),
                "pins_total": t.pin_total,
                "pins_per_1000": round(t.per_1000_commands(t.pin_total), 2),
                "pins_per_1000_by_reason": {
                    k: round(t.per_1000_commands(v), 2) for k, v in sorted(t.pins.items())
                },
                "answered_locally": t.answered_locally,
                "answered_locally_per_1000": round(t.per_1000_commands(t.answered_locally), 1),
                "executes": t.executes,
                "prepared_upstream": t.prepared_upstream,
                "prepared_per_1000_executes": (
                    None if t.prepared_per_1000_executes is None
                    else round(t.prepared_per_1000_executes, 1)
                ),
                "upstream_connects": t.upstream_connects,
                "resets": t.resets,
            })
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], settings: Settings) -> None:
    where = ("directly against MariaDB (control run: no mysqlgate, no totals)" if settings.direct
             else f"each against a fresh mysqlgate with a pool of {settings.pool_size}")
    print(f"\n{settings.threads} client threads x {settings.requests} requests per workload, "
          f"{where}")
    header = (f"{'workload':<28}{'commands':>9}{'pins/1000':>10}{'local':>8}{'executes':>9}"
              f"{'prep/1000 ex':>13}{'upstr conn':>11}{'resets':>7}  pins by reason")
    print(header)
    print("-" * len(header))
    for row in rows:
        if "commands" not in row:
            print(f"{row['workload']:<28}  {'ok' if row['ok'] else 'FAILED'} (no totals)")
            continue
        prep = "-" if row["prepared_per_1000_executes"] is None \
            else f"{row['prepared_per_1000_executes']:.1f}"
        reasons = ", ".join(f"{k} {v} ({row['pins_per_1000_by_reason'][k]:.2f}/1000)"
                            for k, v in row["pins"].items()) or "none"
        flag = "" if row["ok"] else "  FAILED"
        print(f"{row['workload']:<28}{row['commands']:>9}{row['pins_per_1000']:>10.2f}"
              f"{row['answered_locally']:>8}{row['executes']:>9}{prep:>13}"
              f"{row['upstream_connects']:>11}{row['resets']:>7}  {reasons}{flag}")
    print("\ncommands: every command mysqlgate served (queries, prepares, executes, closes, "
          "quits, ...);\nlocal: settings statements mysqlgate answered without the server; "
          "prep/1000 ex: statements prepared upstream per 1,000 COM_STMT_EXECUTE")


def body(bench: Bench, settings: Settings) -> int:
    start_mariadb(bench)
    create_account(bench)
    results = []
    for name in settings.workloads:
        result = run_workload(bench, name, settings)
        if result.error:
            log(f"{name}: FAILED: {result.error}")
        results.append(result)
    rows = table_rows(results)
    print_table(rows, settings)
    document = {
        "settings": dataclasses.asdict(settings),
        "environment": environment(bench),
        "workloads": [
            {**row, "client": r.client, "error": r.error, "gate_log_problems": r.gate_problems,
             "totals": dataclasses.asdict(r.totals) if r.totals else None}
            for row, r in zip(rows, results, strict=True)
        ],
    }
    problems = [f"{r.name}: {r.error.splitlines()[-1] if r.error else ''}"
                for r in results if not r.ok]
    return report_result(bench, write_result("pins", document), problems, settings.keep_logs)


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    if ns.child:
        return run_child(ns.child, ns.port, ns.db_port, ns.threads, ns.requests)
    settings = Settings(threads=ns.threads, requests=ns.requests, pool_size=ns.pool_size,
                        workloads=ns.workload_list, keep_logs=ns.keep_logs, direct=ns.direct)
    return run_main(lambda bench: body(bench, settings), "pins")


if __name__ == "__main__":
    sys.exit(main())
