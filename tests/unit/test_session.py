"""The session's decisions without a server (issue 17): a real Session and pool over fake
upstream connections (tests/unit/fake_upstream.py) and a fake client port. The
integration tests prove the same against MariaDB and MySQL; these say, case by case and
in milliseconds, which decision does what."""

from __future__ import annotations

import asyncio
import struct
import time
from collections import Counter
from types import SimpleNamespace

import pytest

from mysqlgate import janitor
from mysqlgate.protocol import auth
from mysqlgate.protocol.constants import CLIENT, COM_RESET_CONNECTION, COMMAND
from mysqlgate.protocol.framing import Packet, encode_packet
from mysqlgate.protocol.messages import ERR, OK, Handshake, HandshakeResponse, SessionState
from mysqlgate.session import Session
from mysqlgate.session.client_state import (
    HOLD_KILL,
    HOLD_LOCAL_INFILE,
    HOLD_PINNED,
    HOLD_SAVEPOINT,
    HOLD_TRANSACTION,
    ClientState,
)
from mysqlgate.session_state import Tracking, VariableKinds

from .fake_upstream import FakePort, World, is_err, ok_of, settle

# -- the one answer to "must this client keep its connection?" ----------------------------


def _state() -> ClientState:
    stats = SimpleNamespace(pins=Counter())
    return ClientState(1, None, Tracking(None, True, True), stats)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setup", "reason", "leaves_state"),
    [
        (lambda s: None, None, False),
        (lambda s: setattr(s, "in_transaction", True), HOLD_TRANSACTION, True),
        (lambda s: setattr(s, "savepoints", True), HOLD_SAVEPOINT, True),
        (lambda s: s.pins.add("user_variables"), HOLD_PINNED, True),
        (lambda s: setattr(s, "relay_infile", True), HOLD_LOCAL_INFILE, False),
        (lambda s: setattr(s, "kill_pending", 1), HOLD_KILL, False),
    ],
    ids=["nothing", "transaction", "savepoint", "pinned", "local_infile", "kill_pending"],
)
def test_hold_reason(setup: object, reason: str | None, leaves_state: bool) -> None:
    state = _state()
    setup(state)  # type: ignore[operator]
    assert state.hold_reason() == reason
    assert state.leaves_state() is leaves_state


def test_forget_drops_what_lived_on_the_connection() -> None:
    state = _state()
    state.in_transaction = state.savepoints = state.left_untracked = True
    state.pins.add("named_locks")
    state.diagnostics.conditions = True
    state.forget()
    assert state.hold_reason() is None and not state.left_untracked
    assert not state.diagnostics.conditions


# -- attach, keep, give back -------------------------------------------------------------


async def test_a_statement_takes_a_connection_and_gives_it_back() -> None:
    world = World()
    alice = world.client()
    reply = await alice.query("SELECT 1")
    assert reply[-1][:1] in (b"\x00", b"\xfe")  # answered
    assert alice.session.client.backend is None
    assert world.account.pool.idle_count == 1 and world.account.pool.lent_count == 0


async def test_a_transaction_keeps_its_connection_until_it_ends() -> None:
    world = World()
    alice = world.client()
    await alice.query("BEGIN")
    assert alice.session.client.hold_reason() == HOLD_TRANSACTION
    held = alice.session.client.backend
    assert held is not None and world.account.pool.lent_count == 1
    await alice.query("SELECT 1")
    assert alice.session.client.backend is held
    await alice.query("COMMIT")
    assert alice.session.client.backend is None
    assert world.account.pool.idle_count == 1


async def test_pinned_state_keeps_the_connection_and_is_reset_when_the_client_goes() -> None:
    world = World(pool_size=1)
    alice = world.client()
    await alice.query("SET @x = 1")
    assert alice.session.client.hold_reason() == HOLD_PINNED
    server = world.server_of(alice)
    assert server is not None
    alice.session.on_client_gone()
    bob = world.client()
    await bob.query("SELECT 1")
    # The one connection was reset after Alice's statement, before Bob's ran on it.
    log = server.log
    assert "RESET" not in log[:log.index("QUERY SET @x = 1")]  # Alice's needed none
    assert log.index("QUERY SET @x = 1") < log.index("RESET") < log.index("QUERY SELECT 1")


# -- replay ------------------------------------------------------------------------------


async def test_settings_follow_the_client_to_another_connection() -> None:
    world = World(pool_size=2)
    alice, bob = world.client(), world.client()
    await alice.query("SET time_zone = '+01:00'")
    first = world.server_of(alice) or world.servers[0]
    await bob.query("BEGIN")  # Bob takes the idle connection Alice just used
    assert world.server_of(bob) is world.servers[0]
    await alice.query("SELECT 1")  # on the other one, behind a replay
    second = world.servers[1]
    assert second is not first or len(world.servers) == 2
    assert any(line.startswith("QUERY SET SESSION `time_zone`='+01:00'")
               for line in second.log), second.log
    assert second.log[-1] == "QUERY SELECT 1"


async def test_a_write_waits_for_a_replay_and_does_not_run_if_it_is_refused() -> None:
    world = World(pool_size=2)
    alice, bob = world.client(), world.client()
    await alice.query("SET time_zone = '+01:00'")
    await bob.query("BEGIN")
    world.account.pool.settings  # noqa: B018 - the pool opens the second one on demand
    # The next connection refuses Alice's time zone.
    original = world._connect

    async def refusing(key: int):  # type: ignore[no-untyped-def]
        backend = await original(key)
        world.servers[-1].errors["SET SESSION `time_zone`='+01:00'"] = ERR(
            1298, "Unknown or incorrect time zone: '+01:00'", "HY000")
        return backend

    world.account.pool._connect = refusing  # type: ignore[assignment]
    reply = await alice.query("INSERT INTO t VALUES (1)")
    assert is_err(reply[-1])
    assert b"the statement was not run" in reply[-1]
    assert not any("INSERT" in line for line in world.servers[-1].log)


# -- local answers and diagnostics ---------------------------------------------------------


async def test_a_setting_the_server_accepted_is_answered_locally_the_next_time() -> None:
    world = World(pool_size=1)
    alice = world.client()
    await alice.query("SET autocommit = 1")
    server = world.servers[0]
    before = list(server.log)
    bob = world.client()
    reply = await bob.query("SET autocommit = 1")
    assert ok_of(reply[-1]).status & 0x0002  # autocommit, as the server said
    assert server.log == before  # nothing reached the server
    assert world.ctx.stats.local_answers == 1


async def test_warnings_keep_the_connection_a_moment_for_show_warnings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The moment is 0 here: the pool may take the connection as soon as someone waits.
    monkeypatch.setattr("mysqlgate.session.attach.DIAGNOSTICS_GRACE", 0.0)
    world = World(pool_size=1)
    alice = world.client()
    await alice.query("SELECT 1")
    world.servers[0].warnings["DO 1/0"] = 1
    await alice.query("DO 1/0")
    assert alice.session.client.backend is not None  # held for its own SHOW WARNINGS
    assert alice.session.activity() == "holding"
    bob = world.client()
    bob.send(COMMAND.COM_QUERY, b"SELECT 1")  # waits: the pool asks Alice to give it back
    await settle(lambda: not bob.session.client.busy)
    assert alice.session.client.backend is None
    assert not is_err(bob.port.payloads[-1])


# -- kill, idle and stuck clients ----------------------------------------------------------


async def test_kill_query_holds_the_victims_connection_until_it_ran() -> None:
    world = World(pool_size=2)
    victim, killer = world.client(), world.client()
    await victim.query("SELECT 1")
    world.servers[0].hold = True  # the victim's next statement runs long
    victim.send(COMMAND.COM_QUERY, b"SELECT 2")
    await settle(lambda: victim.session.client.backend is not None)
    reply = await killer.query(f"KILL QUERY {victim.session.id}")
    assert not is_err(reply[-1])
    assert any(line.startswith("QUERY KILL QUERY 100") for s in world.servers for line in s.log)
    world.servers[0].release_held()
    await settle(lambda: not victim.session.client.busy)
    assert victim.session.client.kill_pending == 0
    assert victim.session.client.backend is None


async def test_a_client_idle_past_its_own_wait_timeout_is_disconnected() -> None:
    world = World()
    alice = world.client()
    await alice.query("SET wait_timeout = 5")
    now = time.monotonic()
    janitor.check_idle(alice.session, now + 1, world.config)
    assert not alice.session.closed
    janitor.check_idle(alice.session, now + 6, world.config)
    assert alice.session.closed and alice.port.closed


async def test_a_stuck_transaction_is_ended_while_others_wait() -> None:
    world = World(pool_size=1, **{"pool.idle_transaction_timeout": "2"})
    alice, bob = world.client(), world.client()
    await alice.query("BEGIN")
    bob.send(COMMAND.COM_QUERY, b"SELECT 1")  # waits for the one connection
    await settle(lambda: world.account.pool.waiting_count == 1)
    janitor.check_idle(alice.session, time.monotonic() + 3, world.config)
    await settle(lambda: not bob.session.client.busy)
    assert not is_err(bob.port.payloads[-1])
    reply = await alice.query("SELECT 1")
    assert is_err(reply[-1]) and reply[-1][1:3] == (1213).to_bytes(2, "little")


async def test_auto_ends_a_stuck_transaction_only_for_a_client_nothing_else_serves() -> None:
    """`auto`: past the server's wait_timeout, and only while a client waits that no
    connection being opened will serve. On a loaded machine a login takes a while; a
    transaction once paid for that wait (CI, against MySQL)."""
    world = World(pool_size=2)
    alice, bob = world.client(), world.client()
    await alice.query("BEGIN")
    world.connects_wait_for = asyncio.Event()
    bob.send(COMMAND.COM_QUERY, b"SELECT 1")  # its connection is on its way
    pool = world.account.pool
    await settle(lambda: pool.waiting_count == 1 and pool.opening_count == 1)
    assert pool.unserved_count == 0
    janitor.check_idle(alice.session, time.monotonic() + 301, world.config)
    assert alice.session.client.backend is not None  # still in its transaction
    world.connects_wait_for.set()
    await settle(lambda: not bob.session.client.busy)
    # Now at the size: a third client waits for what only alice can give back.
    carol = world.client()
    await bob.query("BEGIN")
    carol.send(COMMAND.COM_QUERY, b"SELECT 1")
    await settle(lambda: pool.unserved_count == 1)
    janitor.check_idle(alice.session, time.monotonic() + 299, world.config)
    assert alice.session.client.backend is not None  # not before wait_timeout
    janitor.check_idle(alice.session, time.monotonic() + 301, world.config)
    await settle(lambda: not carol.session.client.busy)
    assert not is_err(carol.port.payloads[-1])
    reply = await alice.query("SELECT 1")
    assert is_err(reply[-1]) and reply[-1][1:3] == (1213).to_bytes(2, "little")


async def test_com_reset_connection_gives_the_connection_back_reset() -> None:
    world = World(pool_size=1)
    alice = world.client()
    await alice.query("SET @x = 1")
    reply = await alice.command(COM_RESET_CONNECTION)
    assert ok_of(reply[-1]).header == 0
    assert alice.session.client.hold_reason() is None
    await settle(lambda: "RESET" in world.servers[0].log)


# -- login, prepared statements, tracking ----------------------------------------------------


async def _log_in(world: World, password: str) -> tuple[Session, list[bytes]]:
    port = FakePort()
    session = Session(world.ctx, port, "test")
    task = asyncio.get_running_loop().create_task(session.run())
    await settle(lambda: bool(port.payloads))
    greeting = Handshake.parse(port.payloads[0])
    caps = CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.PLUGIN_AUTH
    response = HandshakeResponse(caps, 1 << 24, 45, b"app", auth.scramble(
        greeting.auth_plugin, password.encode(), greeting.auth_data), None,
        greeting.auth_plugin).build()
    session.on_packet(Packet(1, response, encode_packet(response, 1)[0]))
    await settle(lambda: len(port.payloads) > 1 or session.closed, steps=2000)
    await task
    return session, port.payloads[1:]


async def test_login_with_the_accounts_password_and_refused_without() -> None:
    world = World()
    session, replies = await _log_in(world, "secret")
    assert ok_of(replies[-1]).header == 0 and session.authenticated
    assert world.servers == []  # no upstream connection for a login
    session, replies = await _log_in(world, "wrong")
    assert is_err(replies[-1]) and replies[-1][1:3] == (1045).to_bytes(2, "little")
    assert session.closed


async def test_an_unknown_statement_id_gets_the_servers_text() -> None:
    world = World()
    alice = world.client()
    reply = await alice.command(COMMAND.COM_STMT_EXECUTE, struct.pack("<IBI", 77, 0, 1))
    assert is_err(reply[-1])
    err = ERR.parse(reply[-1])
    assert (err.code, err.message) == (
        1243, "Unknown prepared statement handler (77) given to mysqld_stmt_execute")
    assert world.servers == []  # answered without a connection


async def test_a_change_the_trackers_cannot_describe_pins() -> None:
    world = World()
    alice = world.client()
    await alice.query("SET @u = 5")  # the fake server reports state_changed only
    assert alice.session.client.pins == {"user_variables"}
    bob = world.client()
    bob.session.client.effects = 0
    await bob.query("DO 1")
    bob.session.tracker.note_ok(OK(status=0x4002, session_state=SessionState(
        state_changed=True)), world.account.pool.idle()[0])
    assert bob.session.client.pins == {"session_state"}


async def test_what_the_server_sets_itself_is_not_the_clients_session() -> None:
    world = World()
    world.account.facts = world.facts = type(world.facts)(
        world.facts.info, 300.0, 0, 151, charsets=world.facts.charsets,
        variables=VariableKinds(server_set=frozenset({"statement_id"})))
    alice = world.client()
    await alice.query("SELECT 1")
    backend = world.account.pool.idle()[0]
    alice.session.tracker.note_ok(OK(status=0x4002, session_state=SessionState(
        [("statement_id", "41"), ("time_zone", "+01:00")], state_changed=True)), backend)
    variables = alice.session.client.state.variables
    assert variables["time_zone"] == "+01:00" and "statement_id" not in variables
    assert not alice.session.client.pins
