"""Fixtures for every test: real database servers started by the test run (MariaDB and
MySQL), a scratch database and account per test, and mysqlgate processes in front of them.

Every test that uses a server runs once per flavour, `[mariadb]` and `[mysql]` in its id:
what holds on one must hold on the other. A test about a feature only one flavour has is
marked @pytest.mark.only_on("mariadb", why="...") and runs there only (it is not
collected for the other: no skip stands in for it). MYSQLGATE_TEST_SERVERS=mariadb (or
mysql) runs one flavour only, for a quicker look.

    flavour          session: "mariadb" or "mysql", the parameter.
    server           session: the shared server of that flavour (max_connections=1000).
    private_server   function: a server of the test's own, to kill/stop/restart; it takes
                     its startup options from @pytest.mark.server_options(...). When a test
                     requests it, `db` (and so `gate`) live on it instead of `server`.
    db               function: a ScratchDb, user u_<hex> (for '%' and 'localhost') with ALL
                     on database t_<hex>; @pytest.mark.db_options(max_user_connections=3,
                     ...) sets the account's limits (see harness.database.RESOURCE_LIMITS).
    db_factory       function: db_factory(**db_options) -> another ScratchDb on the same
                     server as `db`; all are dropped after the test.
    gate_factory     function: gate_factory(*extra_args, db=None, **gate_kwargs) -> a running
                     Gate (upstream: `db` unless given); all are stopped after the test.
    gate             function: gate_factory() with no extra arguments.

@pytest.mark.server_options(wait_timeout=2, ...) on a test that uses the shared server sets
those globals (SET GLOBAL, so they apply to connections opened afterwards) for the test and
restores them after it; a value written {"mariadb": 1} is for that flavour only. When a
test fails, the logs of its gates and its private server are added to the failure report.

MYSQLGATE_TEST_MARIADBD names the mariadbd binary to use (default: mariadbd on PATH, else
/usr/sbin/mariadbd); MYSQLGATE_TEST_MYSQLD a mysqld (default: Debian sid's, fetched once
into ~/.cache/mysqlgate-tests by harness/mysql_dist.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import FLAVOURS, DbServer, Gate, ScratchDb, server_class

SHARED_SERVER_OPTIONS = {"max_connections": 1000}
ENV_SERVERS = "MYSQLGATE_TEST_SERVERS"

_GATES = pytest.StashKey[list[Gate]]()
_PRIVATE_SERVER = pytest.StashKey[DbServer]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "server_options(**options): server variables for this test: SET GLOBAL on "
        "the shared server (restored after), or startup options of private_server",
    )
    config.addinivalue_line(
        "markers",
        "db_options(**options): options of the `db` account, e.g. max_user_connections=3",
    )
    config.addinivalue_line(
        "markers",
        "only_on(*flavours, why): the test is about a feature only these servers have",
    )


def selected_flavours() -> tuple[str, ...]:
    names = os.environ.get(ENV_SERVERS, "")
    chosen = tuple(n.strip() for n in names.split(",") if n.strip()) or FLAVOURS
    unknown = set(chosen) - set(FLAVOURS)
    if unknown:
        raise pytest.UsageError(f"{ENV_SERVERS}: unknown {sorted(unknown)}; known: "
                                f"{', '.join(FLAVOURS)}")
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that needs a server runs on each flavour (see only_on below)."""
    if "flavour" in metafunc.fixturenames:
        metafunc.parametrize("flavour", selected_flavours(), indirect=True, scope="session")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test (or one of its parameters) marked only_on(...) is not collected for the
    other flavours: it does not exist there, rather than being skipped."""
    kept = []
    for item in items:
        marker = item.get_closest_marker("only_on")
        callspec = getattr(item, "callspec", None)
        if marker is not None:
            if not marker.kwargs.get("why"):
                raise pytest.UsageError(f"{item.nodeid}: only_on needs why=...")
            if callspec is not None and callspec.params.get("flavour") not in marker.args:
                continue
        kept.append(item)
    items[:] = kept


def _marker_options(node: pytest.Item, name: str) -> dict[str, Any]:
    """Keyword arguments of all `name` markers on the test, the closest one winning."""
    options: dict[str, Any] = {}
    for marker in reversed(list(node.iter_markers(name))):
        if marker.args:
            raise TypeError(f"@pytest.mark.{name} takes keyword arguments only")
        options.update(marker.kwargs)
    return {key.replace("-", "_"): value for key, value in options.items()}


def _server_options(node: pytest.Item, flavour: str) -> dict[str, Any]:
    """The server_options for `flavour`: a value given as {"mariadb": 1} applies to the
    flavours it names only (a variable the other one does not have)."""
    options = {}
    for name, value in _marker_options(node, "server_options").items():
        if isinstance(value, dict):
            if flavour not in value:
                continue
            value = value[flavour]
        options[name] = value
    return options


def _uses_private_server(request: pytest.FixtureRequest) -> bool:
    return "private_server" in request.fixturenames


# -- servers ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def flavour(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def server(flavour: str) -> Iterator[DbServer]:
    server = server_class(flavour)(SHARED_SERVER_OPTIONS)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def private_server(request: pytest.FixtureRequest, flavour: str) -> Iterator[DbServer]:
    options = {**SHARED_SERVER_OPTIONS, **_server_options(request.node, flavour)}
    server = server_class(flavour)(options)
    request.node.stash[_PRIVATE_SERVER] = server
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _shared_server_options(request: pytest.FixtureRequest) -> Iterator[None]:
    """Apply @pytest.mark.server_options to the shared server for one test."""
    if not _marker_options(request.node, "server_options") or _uses_private_server(request):
        yield
        return
    server: DbServer = request.getfixturevalue("server")
    options = _server_options(request.node, server.flavour)
    saved: dict[str, Any] = {}
    try:
        for name, value in options.items():
            saved[name] = server.set_global(name, value)
        yield
    finally:
        for name, old_value in reversed(saved.items()):
            server.set_global(name, old_value)


# -- scratch databases ------------------------------------------------------------------------


@pytest.fixture
def db_factory(
    request: pytest.FixtureRequest, flavour: str
) -> Iterator[Callable[..., ScratchDb]]:
    server: DbServer = request.getfixturevalue(
        "private_server" if _uses_private_server(request) else "server"
    )
    created: list[ScratchDb] = []

    def create(**options: Any) -> ScratchDb:
        scratch = ScratchDb(server, options)
        scratch.create()
        created.append(scratch)
        return scratch

    yield create
    if server.running:  # a private server the test left stopped is thrown away whole
        for scratch in reversed(created):
            scratch.drop()


@pytest.fixture
def db(request: pytest.FixtureRequest, db_factory: Callable[..., ScratchDb]) -> ScratchDb:
    return db_factory(**_marker_options(request.node, "db_options"))


# -- mysqlgate --------------------------------------------------------------------------------


@pytest.fixture
def gate_factory(
    request: pytest.FixtureRequest, db: ScratchDb, tmp_path: Path
) -> Iterator[Callable[..., Gate]]:
    # Depending on `db` makes it outlive the gates: they stop before their account goes.
    default_db = db
    gates: list[Gate] = []
    request.node.stash[_GATES] = gates

    def start(*extra_args: str, db: ScratchDb | None = None, **gate_kwargs: Any) -> Gate:
        upstream = db if db is not None else default_db
        workdir = tmp_path / f"gate{len(gates)}"  # kept by pytest for a look afterwards
        gate = Gate(upstream, *extra_args, workdir=workdir, **gate_kwargs)
        gates.append(gate)  # before start(): a gate that fails to start is cleaned up too
        gate.start()
        return gate

    yield start
    for gate in reversed(gates):
        gate.close()


@pytest.fixture
def gate(gate_factory: Callable[..., Gate]) -> Gate:
    return gate_factory()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, append the logs of the test's gates and private server to its report
    (pytest prints report sections with a failed test's captured output)."""
    report: pytest.TestReport = yield
    if report.failed:
        for gate in item.stash.get(_GATES, []):
            report.sections.append((f"mysqlgate log (port {gate.port})", gate.log_tail()))
        server = item.stash.get(_PRIVATE_SERVER, None)
        if server is not None:
            report.sections.append(
                (f"private {server.flavour} log (port {server.port})", server.error_log_tail())
            )
    return report
