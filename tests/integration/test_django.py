"""Django's ORM (mysqlclient backend) through mysqlgate with a pool smaller than the number
of concurrent clients (issue 6, "Tests" item 2; SPEC section 7).

Django is configured once per process (settings.configure() below, a unique app label).
Four database aliases exist: `default` and `other` go through the gate started for the
test, `direct` and `direct_other` to the server itself (the same two databases), so the
same code can be run directly as the reference. Each test points the aliases at its own
gate and scratch databases (`_route`); every thread closes its Django connections when
it is done.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
import unittest
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import django
import pytest
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import IntegrityError, OperationalError, connections, models, transaction
from django.test import TestCase
from harness import Gate, ScratchDb
from pool_load import DEADLINE, ConnectionSampler, PoolLoad

APP_LABEL = "mysqlgate_django_it"
GATE_ALIASES = ("default", "other")
DIRECT_ALIASES = ("direct", "direct_other")
ALIASES = GATE_ALIASES + DIRECT_ALIASES


def _configure_django() -> None:
    if settings.configured:
        missing = set(ALIASES) - set(settings.DATABASES)
        if missing:
            raise RuntimeError(f"Django was configured elsewhere without {sorted(missing)}")
        return
    placeholder = {
        "ENGINE": "django.db.backends.mysql",
        "NAME": "unset",
        "HOST": "127.0.0.1",
        "PORT": "9",
        "USER": "unset",
        "PASSWORD": "",
    }
    settings.configure(
        DATABASES={alias: dict(placeholder) for alias in ALIASES},
        INSTALLED_APPS=[],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        SECRET_KEY="mysqlgate-tests",
    )
    django.setup()


_configure_django()


class Item(models.Model):
    name = models.CharField(max_length=100)

    class Meta:
        app_label = APP_LABEL


class Counter(models.Model):
    value = models.IntegerField(default=0)

    class Meta:
        app_label = APP_LABEL


class Tag(models.Model):
    key = models.CharField(max_length=64, unique=True)
    note = models.CharField(max_length=64)

    class Meta:
        app_label = APP_LABEL


class Job(models.Model):
    worker = models.IntegerField(null=True)

    class Meta:
        app_label = APP_LABEL


MODELS = (Item, Counter, Tag, Job)
T = TypeVar("T")


class _Undo(Exception):
    """Raised inside an atomic block to roll it back."""


# -- routing the aliases ------------------------------------------------------------------------


@pytest.fixture
def other_database(db: ScratchDb, db_factory: Callable[..., ScratchDb]) -> str:
    """A second database that `db`'s user may use (dropped after the test): mysqlgate
    serves one account, so Django's second database lives on the same account."""
    other = db_factory()
    with contextlib.closing(db.root()) as conn, conn.cursor() as cur:
        for host in ("%", "localhost"):
            cur.execute(f"GRANT ALL ON `{other.database}`.* TO %s@%s", (db.user, host))
    return other.database


@pytest.fixture
def route(db: ScratchDb, other_database: str) -> Iterator[Callable[[Gate], None]]:
    """route(gate): point `default`/`other` at `gate` and `direct`/`direct_other` at the
    server, for db.database and other_database, and create the models' tables in both."""

    def point(gate: Gate) -> None:
        _close_connections()
        targets = {
            "default": (gate.host, gate.port, db.database),
            "other": (gate.host, gate.port, other_database),
            "direct": (db.host, db.port, db.database),
            "direct_other": (db.host, db.port, other_database),
        }
        for alias, (host, port, name) in targets.items():
            # The wrappers keep a reference to this very dict: update it in place.
            connections.settings[alias].update(
                HOST=host,
                PORT=str(port),
                NAME=name,
                USER=db.user,
                PASSWORD=db.password,
                CONN_MAX_AGE=0,
                OPTIONS={"connect_timeout": 30, "read_timeout": 60, "write_timeout": 60},
            )
        for alias in DIRECT_ALIASES:
            with connections[alias].schema_editor() as editor:
                for model in MODELS:
                    editor.create_model(model)
        _close_connections()

    yield point
    _close_connections()


def _close_connections() -> None:
    """Close this thread's Django connections and forget them."""
    connections.close_all()
    for alias in ALIASES:
        with contextlib.suppress(AttributeError):
            del connections[alias]


def _threaded(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` for a worker thread: its Django connections are closed when it returns."""

    def run(*args: Any) -> T:
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return run


def _run_threads(count: int, fn: Callable[[int], T]) -> list[T]:
    """Run fn(0) ... fn(count - 1) in `count` threads at once; their results in order."""
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(_threaded(fn), index) for index in range(count)]
        return [future.result(timeout=DEADLINE * 2) for future in futures]


def _names(db: ScratchDb, database: str, prefix: str = "") -> list[str]:
    """Committed Item names (starting with `prefix`) in `database`, seen directly."""
    with contextlib.closing(db.connect(database=database)) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT name FROM {APP_LABEL}_item WHERE name LIKE %s ORDER BY name",
            (prefix + "%",),
        )
        return [row[0] for row in cur.fetchall()]


# -- nested atomic() ----------------------------------------------------------------------------


def _nested_atomic_rounds(using: str, tag: str, rounds: int) -> list[str]:
    """Outer atomic blocks whose first statement is the inner block's SAVEPOINT.

    Each round: (1) outer block, inner block inserts and is rolled back (exception caught
    outside it), the outer block inserts and a second inner block inserts and is
    released; committed. (2) outer block whose inner block succeeds, then the outer block
    rolls back. Returns what the client itself saw, for comparison with a direct run."""
    items = Item.objects.using(using)
    seen: list[str] = []
    for r in range(rounds):
        mine = items.filter(name__startswith=f"{tag}-{r}-")
        with transaction.atomic(using=using):
            try:
                with transaction.atomic(using=using):  # SAVEPOINT first: nothing ran before
                    items.create(name=f"{tag}-{r}-inner-undone")
                    seen.append(f"inside inner: {mine.count()}")
                    raise _Undo
            except _Undo:
                pass
            seen.append(f"after inner rollback: {sorted(mine.values_list('name', flat=True))}")
            items.create(name=f"{tag}-{r}-outer")
            with transaction.atomic(using=using):
                items.create(name=f"{tag}-{r}-inner-kept")
            seen.append(f"before commit: {mine.count()}")
        try:
            with transaction.atomic(using=using):
                with transaction.atomic(using=using):  # SAVEPOINT first again
                    items.create(name=f"{tag}-{r}-outer-undone")
                raise _Undo
        except _Undo:
            pass
        seen.append(f"end: {mine.count()}")
    return [line.replace(tag, "TAG") for line in seen]


def test_nested_atomic_savepoint_first(
    gate_factory: Callable[..., Gate], db: ScratchDb, route: Callable[[Gate], None]
) -> None:
    rounds = 10
    gate = gate_factory("--pool-size", "2")
    route(gate)

    reference = _threaded(_nested_atomic_rounds)("direct", "direct", rounds)
    expected = sorted(
        name for r in range(rounds) for name in (f"direct-{r}-inner-kept", f"direct-{r}-outer")
    )
    assert _names(db, db.database, "direct-") == expected
    assert reference[:4] == [
        "inside inner: 1",
        "after inner rollback: []",
        "before commit: 2",
        "end: 2",
    ]

    # Through the gate: two Django clients at once and three clients keeping the pool of
    # two busy, so that consecutive statements of a client meet different connections.
    with PoolLoad(gate, clients=3) as load:
        seen = _run_threads(
            2, lambda index: _nested_atomic_rounds("default", f"gate{index}", rounds)
        )
    assert load.statements > 0
    for index in range(2):
        assert seen[index] == reference, f"Django client {index}"
        assert _names(db, db.database, f"gate{index}-") == [
            name.replace("direct", f"gate{index}") for name in expected
        ]


# -- django.test.TestCase with two databases ----------------------------------------------------


def _two_database_case(first: str, second: str, db: ScratchDb, other: str) -> type[TestCase]:
    """A TestCase on databases `first` and `second`; class data only in `first`, so that
    on `second` the per-test SAVEPOINT is the first statement of the class transaction."""

    def names(alias: str) -> list[str]:
        return sorted(Item.objects.using(alias).values_list("name", flat=True))

    class TwoDatabases(TestCase):
        databases = {first, second}

        @classmethod
        def setUpTestData(cls) -> None:
            Item.objects.using(first).create(name="class-data")

        def test_a_writes_both(self) -> None:
            Item.objects.using(first).create(name="a")
            Item.objects.using(second).create(name="a")
            self.assertEqual(names(first), ["a", "class-data"])
            self.assertEqual(names(second), ["a"])
            # Nothing is committed: the server shows no row to anyone else.
            self.assertEqual(_names(db, db.database), [])
            self.assertEqual(_names(db, other), [])
            # A nested block rolled back inside the test.
            with self.assertRaises(_Undo), transaction.atomic(using=second):
                Item.objects.using(second).create(name="a-undone")
                raise _Undo
            self.assertEqual(names(second), ["a"])

        def test_b_sees_only_class_data(self) -> None:
            self.assertEqual(names(first), ["class-data"])
            self.assertEqual(names(second), [])
            Item.objects.using(second).create(name="b")
            Tag.objects.using(second).create(key="b", note="b")
            with self.assertRaises(IntegrityError), transaction.atomic(using=second):
                Tag.objects.using(second).create(key="b", note="again")
            self.assertEqual(names(second), ["b"])

        def test_c_sees_only_class_data(self) -> None:
            self.assertEqual(names(first), ["class-data"])
            self.assertEqual(names(second), [])
            self.assertEqual(Tag.objects.using(second).count(), 0)

    return TwoDatabases


def _run_case(case: type[TestCase]) -> None:
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    stream = io.StringIO()
    result = unittest.TextTestRunner(stream=stream, verbosity=2, warnings="error").run(suite)
    assert result.testsRun == 3
    assert result.wasSuccessful(), stream.getvalue()


def test_testcase_with_two_databases(
    gate_factory: Callable[..., Gate],
    db: ScratchDb,
    other_database: str,
    route: Callable[[Gate], None],
) -> None:
    # The first database's client holds a connection for the whole class (its class
    # data opened the transaction); the second's shares the other two with the load.
    gate = gate_factory("--pool-size", "3")
    route(gate)

    def nothing_left() -> None:
        assert _names(db, db.database) == []
        assert _names(db, other_database) == []

    _run_case(_two_database_case("direct", "direct_other", db, other_database))
    nothing_left()
    _close_connections()

    with PoolLoad(gate, clients=3) as load:
        for _ in range(6):
            _run_case(_two_database_case("default", "other", db, other_database))
            nothing_left()
    assert load.statements > 0
    _close_connections()


# -- select_for_update() ------------------------------------------------------------------------


def _lock_waits(db: ScratchDb) -> int:
    """Transactions of db's user that wait for a row lock now."""
    rows = db.server.query(
        "SELECT COUNT(*) FROM information_schema.INNODB_TRX t"
        " JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id"
        " WHERE t.trx_state = 'LOCK WAIT' AND p.USER = %s",
        (db.user,),
    )
    return int(rows[0][0])


def test_select_for_update(
    gate_factory: Callable[..., Gate], db: ScratchDb, route: Callable[[Gate], None]
) -> None:
    gate = gate_factory("--pool-size", "2")
    route(gate)
    pk = Counter.objects.using("direct").create(value=0).pk
    _close_connections()
    counters = Counter.objects.using("default")

    # One client holds the row lock; the other's SELECT ... FOR UPDATE waits for it and
    # then sees the first one's committed value.
    locked = threading.Event()
    release = threading.Event()

    def holder() -> int:
        with transaction.atomic(using="default"):
            counter = counters.select_for_update().get(pk=pk)
            counter.value += 1
            counter.save(update_fields=["value"])
            locked.set()
            assert release.wait(DEADLINE), "never released"
        return int(counter.value)

    def waiter() -> int:
        with transaction.atomic(using="default"):
            counter = counters.select_for_update().get(pk=pk)
            seen = int(counter.value)
            counter.value += 1
            counter.save(update_fields=["value"])
        return seen

    def without_waiting() -> tuple[list[int], int]:
        """SKIP LOCKED passes the locked row by; NOWAIT fails at once."""
        with transaction.atomic(using="default"):
            skipped = list(counters.select_for_update(skip_locked=True).values_list(
                "pk", flat=True))
        try:
            with transaction.atomic(using="default"):
                counters.select_for_update(nowait=True).get(pk=pk)
        except OperationalError as exc:
            return skipped, exc.args[0]
        return skipped, 0

    with ThreadPoolExecutor(3) as pool:
        held = pool.submit(_threaded(holder))
        assert locked.wait(DEADLINE), "the holder never got the lock"
        # NOWAIT on a locked row: MariaDB answers ER_LOCK_WAIT_TIMEOUT (1205), MySQL
        # ER_LOCK_NOWAIT (3572).
        nowait_code = 1205 if db.server.is_mariadb else 3572
        assert pool.submit(_threaded(without_waiting)).result(timeout=DEADLINE) == (
            [], nowait_code)
        waiting = pool.submit(_threaded(waiter))
        deadline = time.monotonic() + DEADLINE
        while _lock_waits(db) < 1:
            assert time.monotonic() < deadline, "the second client never waited for the lock"
            assert not waiting.done(), f"the second client did not wait: {waiting.result()}"
            time.sleep(0.02)
        assert not waiting.done()
        release.set()
        assert held.result(timeout=DEADLINE) == 1
        assert waiting.result(timeout=DEADLINE) == 1  # it saw the holder's committed write
    assert Counter.objects.using("direct").get(pk=pk).value == 2

    # No lost update: K threads increment N times each, through a pool of two.
    threads, increments = 4, 20

    def increment(_: int) -> None:
        for _ in range(increments):
            with transaction.atomic(using="default"):
                counter = counters.select_for_update().get(pk=pk)
                counter.value += 1
                counter.save(update_fields=["value"])

    with ConnectionSampler(db) as sampler:
        _run_threads(threads, increment)
    assert Counter.objects.using("direct").get(pk=pk).value == 2 + threads * increments
    assert sampler.peak <= 2 + 1  # the pool, plus the direct alias's connection

    # A job queue: workers claim jobs with SKIP LOCKED; each job is done exactly once.
    jobs = 120
    Job.objects.using("direct").bulk_create([Job() for _ in range(jobs)])

    def claim(index: int) -> list[int]:
        done = []
        while True:
            with transaction.atomic(using="default"):
                job = (Job.objects.using("default").select_for_update(skip_locked=True)
                       .filter(worker__isnull=True).order_by("pk").first())
                if job is None:
                    return done
                job.worker = index
                job.save(update_fields=["worker"])
                done.append(job.pk)

    claimed = _run_threads(threads, claim)
    all_claimed = sorted(pk for worker_claimed in claimed for pk in worker_claimed)
    rows = dict(Job.objects.using("direct").values_list("pk", "worker"))
    assert all_claimed == sorted(rows), "a job was done twice or not at all"
    for index, worker_claimed in enumerate(claimed):
        assert all(rows[pk] == index for pk in worker_claimed)
    _close_connections()


# -- get_or_create() ----------------------------------------------------------------------------


def test_get_or_create_under_concurrency(
    gate_factory: Callable[..., Gate], db: ScratchDb, route: Callable[[Gate], None]
) -> None:
    gate = gate_factory("--pool-size", "2")
    route(gate)
    threads, rounds = 6, 8
    barrier = threading.Barrier(threads, timeout=DEADLINE)

    def worker(index: int) -> list[tuple[int, bool, str]]:
        got = []
        for r in range(rounds):
            barrier.wait()  # all threads ask for the same new key at once
            tag, created = Tag.objects.using("default").get_or_create(
                key=f"round-{r}", defaults={"note": f"thread-{index}"}
            )
            got.append((tag.pk, created, tag.note))
        return got

    results = _run_threads(threads, worker)
    rows = {
        key: (pk, note) for pk, key, note in Tag.objects.using("direct").values_list(
            "pk", "key", "note")
    }
    _close_connections()
    assert sorted(rows) == sorted(f"round-{r}" for r in range(rounds))
    for r in range(rounds):
        pk, note = rows[f"round-{r}"]
        answers = [results[index][r] for index in range(threads)]
        assert sum(created for _, created, _ in answers) == 1, f"round {r}: {answers}"
        assert {(got_pk, got_note) for got_pk, _, got_note in answers} == {(pk, note)}, (
            f"round {r}: {answers}"
        )
        creator = next(index for index in range(threads) if results[index][r][1])
        assert note == f"thread-{creator}"


# -- CONN_MAX_AGE = 0: a connection per request -------------------------------------------------


def _requests(using: str, tag: str, count: int) -> list[tuple[str, int, int]]:
    """`count` requests as Django serves them with CONN_MAX_AGE = 0: the connection opens
    with the request's first query and closes when the request finishes."""
    seen = []
    for i in range(count):
        request_started.send(sender=None)
        try:
            item = Item.objects.using(using).create(name=f"{tag}-{i:03}")
            # Saving an unchanged object: Django's UPDATE must report the row as matched
            # (CLIENT_FOUND_ROWS), or Django goes on to INSERT it again (IntegrityError).
            item.save(using=using)
            mine = Item.objects.using(using).filter(name__startswith=f"{tag}-").count()
            with connections[using].cursor() as cursor:
                variable = "tx_isolation" if connections[using].mysql_is_mariadb \
                    else "transaction_isolation"
                cursor.execute(f"SELECT @@{variable}, DATABASE()")
                isolation, database = cursor.fetchone()
            seen.append((isolation, database, mine))
        finally:
            request_finished.send(sender=None)
        assert connections[using].connection is None, "the request's connection stayed open"
    return seen


def test_conn_max_age_zero_connection_per_request(
    gate_factory: Callable[..., Gate],
    db: ScratchDb,
    other_database: str,
    route: Callable[[Gate], None],
) -> None:
    gate = gate_factory("--pool-size", "2")
    route(gate)
    # The other alias's sessions use another isolation level (Django sets it right after
    # connecting): each client must keep its own across the shared connections.
    for alias in ("other", "direct_other"):
        connections.settings[alias]["OPTIONS"]["isolation_level"] = "serializable"
    requests = 20
    expectation = {
        "default": ("READ-COMMITTED", db.database),
        "other": ("SERIALIZABLE", other_database),
    }

    reference = _threaded(_requests)("direct", "direct", 3)
    assert reference == [("READ-COMMITTED", db.database, n) for n in (1, 2, 3)]
    reference = _threaded(_requests)("direct_other", "direct", 3)
    assert reference == [("SERIALIZABLE", other_database, n) for n in (1, 2, 3)]

    threads = 6

    def worker(index: int) -> tuple[str, list[tuple[str, int, int]]]:
        alias = GATE_ALIASES[index % 2]
        return alias, _requests(alias, f"req{index}", requests)

    # PyMySQL clients (no CLIENT_FOUND_ROWS) share the pool with the Django ones.
    with PoolLoad(gate, clients=2), ConnectionSampler(db) as sampler:
        results = _run_threads(threads, worker)
    for index, (alias, seen) in enumerate(results):
        isolation, database = expectation[alias]
        assert seen == [(isolation, database, n) for n in range(1, requests + 1)], (
            f"thread {index} ({alias})"
        )
    for index in range(threads):
        database = db.database if index % 2 == 0 else other_database
        assert _names(db, database, f"req{index}-") == [
            f"req{index}-{i:03}" for i in range(requests)
        ]
    assert 1 <= sampler.peak <= 2, f"upstream connections: {sampler.samples}"
    with contextlib.closing(db.connect()) as direct, direct.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM " + APP_LABEL + "_item")
        assert cur.fetchone() == (threads // 2 * requests + 3,)
