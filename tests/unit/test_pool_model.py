"""The pool against a reference model (issue 16): a hypothesis state machine drives
UpstreamPool with fake connections and a fake clock (tests/unit/fake_backend.py) through
whatever can happen to it, in any order, and checks after every step what must always
hold. No socket, no real time: a step is microseconds, and a failure shrinks to the
shortest sequence of steps that shows it.

What can happen (the rules): clients ask for connections (the fast path `take_ready`
first, or `request`) and go away while they wait; they give connections back, with or
without a reset, or still busy; connects succeed, fail as a server that is down or
restarting would (refused, timed out, 1053), say the account is full (1226, 1040), are
refused for good (a wrong password, a host not allowed), or hang (they are simply never
settled); pings and resets succeed or fail; any connection dies at any moment (idle, in
use, being pinged or reset), its loss noticed or not yet, and the server closes those
idle longer than its wait_timeout; time passes (idle timeout, lifetime, ping_after,
queue timeouts, probe and back-off timers); the janitor runs; the size changes
(`resize`); PAUSE and RESUME; a holder lets its connection be preempted.

The reference model is the world outside the pool: which client asked what and when,
what each got, which connections exist and who holds them, what is in flight, and what
each event should have done (take_ready's answer, a request served at once from idle, a
connection given back going to the first client waiting for its key). The invariants:

- never more connections than the size (opening ones included; after the size is
  lowered, never more than there were, going down to it);
- clients asking for the same capability key are served in the order they asked;
- every request is answered exactly once, by a connection or an error: the pool-full
  error at its deadline, or the unreachable error at its deadline while the server
  cannot be reached (a restart is waited out, never an error at once), a refusal's
  error only after a connect was refused; and it is answered by its deadline, unless
  paused;
- no connection is both idle and in use; none is handed out closed, past its idle
  timeout or with another key, and none idle past its idle timeout is even pinged (it
  is closed); every connection the pool opened is idle, in use, being checked or reset,
  or was closed and counted: none lost, none leaked;
- a waiting client is not left waiting while an idle connection of its key, or room for
  a connect, would serve it (unless the server is unreachable or the pool backs off);
- once a connection died, the idle ones are checked before anyone gets them (a restart
  kills them all: a statement run again must not meet a second dead one);
- while the server cannot be reached, one connect at a time tries again (never a storm),
  and one is always due within PROBE_MAX;
- the statistics match what happened.

MYSQLGATE_POOL_MODEL_EXAMPLES=2000 runs that many random programs (new ones each run)
instead of the fixed set CI runs. MYSQLGATE_POOL_MODEL_SHRINK=0 reports a failure as
found, unshrunk: in seconds instead of minutes (for the mutation runs).
"""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from mysqlgate.errors import PoolTimeout, ServerError, UpstreamAuthError, UpstreamUnavailable
from mysqlgate.pool import UpstreamPool
from mysqlgate.pool_reconnect import PROBE_MAX, PROBE_MIN
from mysqlgate.pool_types import PoolSettings, Request
from mysqlgate.protocol.messages import ERR

from .fake_backend import FakeBackend, FakeLoop, Pending

KEYS = (0, 8)  # two capability keys (e.g. without and with CLIENT_FOUND_ROWS)
SIZE = 2
QUEUE_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
WAIT_TIMEOUT = 40.0  # the server's: it closes connections idle longer
MAX_LIFETIME = 120.0
PING_AFTER = 5.0

EXAMPLES = 200  # x STEPS: up to 8,000 steps (some runs end early), the same ones every run
STEPS = 40
EXPLORE = int(os.environ.get("MYSQLGATE_POOL_MODEL_EXAMPLES", "0"))
SHRINK = os.environ.get("MYSQLGATE_POOL_MODEL_SHRINK", "1") != "0"

# How a connect ends: the exception, or None for a connection.
OUTCOMES: dict[str, Any] = {
    "ok": None,
    "refused": lambda: UpstreamUnavailable(
        "cannot connect to upstream 127.0.0.1:3306: [Errno 111] Connection refused"),
    "timed out": lambda: UpstreamUnavailable(
        "connecting to upstream 127.0.0.1:3306 took longer than 5s"),
    "reset": lambda: ConnectionResetError("upstream closed the connection during login"),
    "shutting down": lambda: ServerError(ERR(1053, "Server shutdown in progress", "08S01")),
    "1226": lambda: ServerError(ERR(1226, "User has exceeded the 'max_user_connections' "
                                          "resource", "42000")),
    "1040": lambda: ServerError(ERR(1040, "Too many connections", "08004")),
    "wrong password": lambda: UpstreamAuthError(
        "the upstream server refused mysqlgate's login: 1045 Access denied"),
    "host not allowed": lambda: ServerError(ERR(1130, "Host is not allowed", "HY000")),
}
# Half of the connects succeed (a healthy pool has connections to lend), the rest fail
# each way as often.
CONNECT_OUTCOMES = ["ok"] * (len(OUTCOMES) - 1) + sorted(set(OUTCOMES) - {"ok"})
REFUSALS = ("wrong password", "host not allowed")
LIMITS = ("1226", "1040")

Answer = FakeBackend | BaseException


@dataclass(eq=False)
class Ask:
    """A client's request, as the model sees it."""

    number: int
    key: int
    asked: float
    deadline: float | None  # None while paused: no queue timeout then
    request: Request | None = None
    answer: Answer | None = None
    answered_at: float = 0.0
    cancelled: bool = False

    @property
    def waiting(self) -> bool:
        return self.answer is None and not self.cancelled


@dataclass(eq=False)
class Connect:
    key: int
    pending: Pending
    started: float
    while_unreachable: bool


class PoolModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = FakeLoop()
        self.settings = PoolSettings(SIZE, QUEUE_TIMEOUT, IDLE_TIMEOUT, MAX_LIFETIME, PING_AFTER)
        jitter = itertools.cycle([0.0, 0.5, 0.99, 0.25, 0.75])
        self.pool = UpstreamPool("model", self._connect, self._reset, self.settings,
                                 clock=self.loop.time, scheduler=self.loop,
                                 jitter=lambda: next(jitter))
        self.asks: list[Ask] = []
        self.held: dict[FakeBackend, Ask] = {}
        self.connections: list[FakeBackend] = []
        self.connects: list[Connect] = []  # in flight
        self.resets: dict[FakeBackend, Pending] = {}
        self.ceiling = SIZE  # open connections at most (above SIZE only after a resize)
        self.refused = {key: 0 for key in KEYS}  # refusals not yet told to a client
        self.last_connect_start: float | None = None
        self.limited = False  # the last connect to end was refused for the account's limit
        self.outages = 0  # times the pool was seen to turn unreachable
        self.was_unreachable = False
        # What happened, to check the statistics against.
        self.count = {"connects": 0, "connect_failures": 0, "limit_rejections": 0,
                      "pings_failed": 0, "resets": 0, "preemptions": 0, "timeouts": 0}

    # -- the pool's collaborators ------------------------------------------------------------

    async def _connect(self, key: int) -> Any:
        now = self.loop.now
        unreachable = self.pool.unreachable is not None
        if unreachable and self.last_connect_start is not None:
            # Never a storm: while the server cannot be reached, tries are spaced.
            assert now - self.last_connect_start >= PROBE_MIN * 0.75 - 1e-9, \
                "connects in a burst while the server is unreachable"
        self.last_connect_start = now
        pending = Pending(self.loop, f"connect with key {key}")
        self.connects.append(Connect(key, pending, now, unreachable))
        return await pending

    async def _reset(self, backend: Any) -> None:
        pending = Pending(self.loop, f"reset of {backend.thread_id}")
        self.resets[backend] = pending
        try:
            await pending
        finally:
            del self.resets[backend]

    def _answer(self, ask: Ask, result: Answer) -> None:
        """A request's delivery: checked as it happens."""
        now = self.loop.now
        assert not ask.cancelled, f"{ask.number} answered after its client went away"
        assert ask.answer is None, f"{ask.number} answered twice: {ask.answer!r}, {result!r}"
        ask.answer, ask.answered_at = result, now
        if isinstance(result, BaseException):
            self._check_error(ask, result)
            return
        backend = result
        assert backend.key == ask.key, f"{ask.number} (key {ask.key}) got {backend!r}"
        assert not backend.closed, f"{ask.number} got a closed connection {backend!r}"
        assert now - backend.last_active <= IDLE_TIMEOUT, f"{ask.number} got an expired one"
        assert backend not in self.held, f"{backend!r} lent twice"
        assert backend not in self.pool.idle(), f"{backend!r} lent and idle"
        assert not self.pool.paused, "a connection handed out while paused"
        earlier = [a.number for a in self.asks
                   if a.key == ask.key and a.number < ask.number and a.waiting]
        assert not earlier, f"{ask.number} served before {earlier} (same key): not FIFO"
        self.held[backend] = ask

    def _check_error(self, ask: Ask, error: BaseException) -> None:
        now = self.loop.now
        if isinstance(error, PoolTimeout) or \
                isinstance(error, UpstreamUnavailable) and "cannot be reached" in str(error):
            assert ask.deadline is not None and now == ask.deadline, \
                f"{ask.number}: {error!r} at {now}, the deadline is {ask.deadline}"
            self.count["timeouts"] += 1
            # Which error: the one true at the deadline.
            assert isinstance(error, UpstreamUnavailable) == \
                (self.pool.unreachable is not None), f"{ask.number}: {error!r}"
            return
        # Otherwise only a refusal for good, told to the first client waiting for its key.
        assert isinstance(error, UpstreamAuthError) or "refused a connection" in str(error), \
            f"{ask.number} got {error!r} at {now} (deadline {ask.deadline})"
        assert self.refused[ask.key] > 0, f"{ask.number} got {error!r} with no refusal"
        self.refused[ask.key] -= 1
        earlier = [a.number for a in self.asks
                   if a.key == ask.key and a.number < ask.number and a.waiting]
        assert not earlier, f"a refusal went to {ask.number} before {earlier}"

    def _preempted(self, backend: FakeBackend) -> None:
        self.count["preemptions"] += 1
        self._give_back(backend, reset=False)

    # -- helpers -------------------------------------------------------------------------------

    def settle(self) -> None:
        self.loop.run_ready()

    def waiting(self) -> list[Ask]:
        return [ask for ask in self.asks if ask.waiting]

    def pings(self) -> dict[FakeBackend, Pending]:
        return {b: b.ping_pending for b in self.connections
                if b.ping_pending is not None and not b.ping_pending.done}

    def incoming(self, key: int) -> int:
        return (sum(1 for c in self.connects if c.key == key)
                + sum(1 for b in self.pings() if b.key == key)
                + sum(1 for b in self.resets if b.key == key))

    def usable(self, backend: FakeBackend) -> bool:
        """Idle and fit to be handed out (after a ping, maybe)."""
        now = self.loop.now
        return not backend.closed and now - backend.last_active <= IDLE_TIMEOUT and \
            now - backend.created_at <= self.pool._lifetime(backend)  # type: ignore[arg-type]

    def _give_back(self, backend: FakeBackend, reset: bool) -> None:
        """A session releases its connection; what must happen is checked."""
        del self.held[backend]
        pool = self.pool
        fine = not backend.closed and not backend.busy and \
            self.loop.now - backend.created_at <= pool._lifetime(backend)  # type: ignore[arg-type]
        first = next((a for a in self.waiting() if a.key == backend.key), None)
        quiet = self.loop.now - backend.last_active > PING_AFTER
        opening = pool.opening_count
        pool.release(backend, reset=reset)  # type: ignore[arg-type]
        if not fine or pool.paused:
            assert backend.closed, "a broken, expired or paused-out connection was kept"
            assert backend not in pool.idle()
            if backend.closed_how == "died":  # the others may be dying too: all checked
                assert not pool.idle(), "a connection died; the idle ones are not checked"
        elif reset:
            assert not backend.closed and backend not in pool.idle()
        elif first is not None and not pool._above_size and quiet:
            # Quiet a while in its holder's hands: checked (or closed) before a waiter
            # gets it, as an idle one would be.
            assert backend not in self.held and \
                (backend.closed or pool.opening_count == opening + 1), \
                "a connection quiet for a while went to a waiting client unchecked"
        elif first is not None and not pool._above_size:
            assert self.held.get(backend) is first, \
                f"given back with {first.number} waiting for its key, went elsewhere"
        elif not self.waiting() and not pool._above_size:
            assert pool.idle()[-1] is backend, "given back, not the first idle one to take"

    # -- rules: clients ------------------------------------------------------------------------

    @initialize(cold=st.sampled_from([False, False, False, True]))
    def start(self, cold: bool) -> None:
        if cold:  # mysqlgate started while its server was down (server.py's probe failed)
            self.pool.mark_unreachable("cannot connect: [Errno 111] Connection refused")
        self.settle()

    @rule(key=st.sampled_from(KEYS), fast=st.booleans(), hold=st.booleans(),
          reset=st.booleans(), connect=st.sampled_from(["hangs", *CONNECT_OUTCOMES]))
    def ask(self, key: int, fast: bool, hold: bool, reset: bool, connect: str) -> None:
        """A client's statement: a connection from the queue (request), trying the fast
        path first (take_ready) as a session does, or not. A connect it starts ends
        (`connect`) or hangs (settled later by connect_ends, or never). Served, the
        client holds its connection (a transaction), or gives it back when its
        statement is over (reset, if it left state behind): what most statements do."""
        started = len(self.connects)
        self._ask(key, fast)
        if connect != "hangs":
            # (Bounded: a pool gone wrong may connect again after each connect.)
            for _ in range(2 * SIZE + 2):
                if len(self.connects) <= started:
                    break
                self.connect_ends(started, connect)
        ask = self.asks[-1]
        if not hold and isinstance(ask.answer, FakeBackend) and ask.answer in self.held:
            self.give_back(list(self.held).index(ask.answer), reset, busy=False, used=True)

    @precondition(lambda self: bool(self.pool.idle()) and not self.waiting())
    @rule(other_key=st.booleans(), reset=st.booleans())
    def statement(self, other_key: bool, reset: bool) -> None:
        """The path of most statements: a client finds an idle connection on the fast
        path (take_ready), runs its statement, gives the connection back."""
        key = self.pool.idle()[-1].key
        self.ask(KEYS[(KEYS.index(key) + other_key) % len(KEYS)], fast=True, hold=False,
                 reset=reset, connect="ok")

    def _ask(self, key: int, fast: bool) -> None:
        pool, now = self.pool, self.loop.now
        ask = Ask(len(self.asks), key, now, None if pool.paused else now + QUEUE_TIMEOUT)
        self.asks.append(ask)
        queue_empty = not [a for a in self.asks[:-1] if a.waiting]
        idle = pool.idle()
        if fast:
            # take_ready: the most recently used idle connection, if it has this key, is
            # open and was used within ping_after; nothing when anyone waits or paused.
            expect = idle[-1] if idle and queue_empty and not pool.paused and \
                idle[-1].key == key and not idle[-1].closed and \
                now - idle[-1].last_active <= PING_AFTER else None
            got = pool.take_ready(key)
            assert got is expect, f"take_ready gave {got!r}, expected {expect!r}"
            if got is not None:
                ask.answer, ask.answered_at = got, now  # type: ignore[assignment]
                self.held[got] = ask  # type: ignore[index]
                self.settle()
                return
        # request: at once from idle when no one waits: the most recently used fit
        # connection of its key, if it was used within ping_after (else it is pinged).
        candidates = [b for b in reversed(idle) if b.key == key and self.usable(b)]
        expect_now = candidates[0] if candidates and queue_empty and not pool.paused and \
            now - candidates[0].last_active <= PING_AFTER else None
        ask.request = pool.request(key, lambda result: self._answer(ask, result))
        if expect_now is not None:
            assert ask.answer is expect_now, f"{ask.number} got {ask.answer!r}, " \
                f"expected {expect_now!r} at once"
        self.settle()
        if candidates and expect_now is None and queue_empty and not pool.paused:
            assert candidates[0] in self.pings(), "an idle connection not pinged before use"

    @precondition(lambda self: any(a.waiting and a.request is not None for a in self.asks))
    @rule(pick=st.integers(0, 1000))
    def client_goes_away(self, pick: int) -> None:
        waiting = [a for a in self.asks if a.waiting and a.request is not None]
        ask = waiting[pick % len(waiting)]
        ask.cancelled = True
        assert ask.request is not None
        self.pool.cancel(ask.request)
        self.settle()

    @precondition(lambda self: bool(self.held))
    @rule(pick=st.integers(0, 1000), reset=st.booleans(), busy=st.booleans(),
          used=st.booleans(), died=st.sampled_from([False, False, True]))
    def give_back(self, pick: int, reset: bool, busy: bool, used: bool,
                  died: bool = False) -> None:
        """A client is done with its connection: used for its statements or not, with a
        command still in flight (its client left mid-result), or dead (the statement met
        a lost connection, a server going away)."""
        backend = list(self.held)[pick % len(self.held)]
        if used and not backend.closed:
            backend.last_active = self.loop.now  # it ran the client's statements
        if died and not backend.closed:
            self._dies(backend, noticed=True)
        backend.busy = busy and not backend.closed  # a command still in flight
        self._give_back(backend, reset)
        self.settle()

    @precondition(lambda self: bool(self.held))
    @rule(pick=st.integers(0, 1000), after=st.sampled_from([0.0, 0.2, 3.0]),
          forbid=st.booleans())
    def preemptible(self, pick: int, after: float, forbid: bool) -> None:
        """A session keeps its connection only for its client's diagnostics: the pool
        may ask for it back (the session gives it back at once)."""
        backend = list(self.held)[pick % len(self.held)]
        if forbid:
            self.pool.forbid_preemption(backend)  # type: ignore[arg-type]
        else:
            self.pool.allow_preemption(backend,  # type: ignore[arg-type]
                                       lambda: self._preempted(backend), after)
        self.settle()

    # -- rules: the server -----------------------------------------------------------------------

    @precondition(lambda self: bool(self.connects))
    @rule(pick=st.integers(0, 1000), outcome=st.sampled_from(CONNECT_OUTCOMES))
    def connect_ends(self, pick: int, outcome: str) -> None:
        """A connection, or: refused, timed out, cut, shutting down, full (1226, 1040),
        refused for good; a connect that hangs is one never settled."""
        connect = self.connects.pop(pick % len(self.connects))
        if outcome == "ok":
            backend = FakeBackend(1000 + len(self.connections), connect.key,
                                  clock=self.loop.time)
            backend.loop = self.loop
            self.connections.append(backend)
            self.count["connects"] += 1
            connect.pending.resolve(backend)
        else:
            self.count["connect_failures"] += 1
            if outcome in LIMITS:
                self.count["limit_rejections"] += 1
            if outcome in REFUSALS:
                self.refused[connect.key] += 1
            connect.pending.fail(OUTCOMES[outcome]())
        self.limited = outcome in LIMITS
        self.settle()
        if outcome == "ok":
            assert self.pool.unreachable is None, "a connect worked: the server is reachable"
        # A refusal the pool had no one to tell about is forgotten.
        for key in KEYS:
            if not any(a.waiting and a.key == key for a in self.asks):
                self.refused[key] = 0

    @precondition(lambda self: bool(self.connects))
    @rule(pick=st.integers(0, 1000), code=st.sampled_from(LIMITS))
    def the_account_is_full(self, pick: int, code: str) -> None:
        """Someone outside holds the account's last connection: a connect is refused
        with 1226 (or 1040), and the back-off passes."""
        self.connect_ends(pick, code)
        self.time_passes(0.25)

    @precondition(lambda self: bool(self.pings()))
    @rule(pick=st.integers(0, 1000), ok=st.booleans())
    def ping_ends(self, pick: int, ok: bool) -> None:
        pings = list(self.pings().items())
        backend, pending = pings[pick % len(pings)]
        if ok:
            pending.resolve()
        else:
            self.count["pings_failed"] += 1
            pending.fail(ConnectionResetError("no answer to the ping"))
        self.settle()

    @precondition(lambda self: bool(self.resets))
    @rule(pick=st.integers(0, 1000), ok=st.booleans())
    def reset_ends(self, pick: int, ok: bool) -> None:
        resets = list(self.resets.items())
        backend, pending = resets[pick % len(resets)]
        if ok:
            self.count["resets"] += 1
            backend.last_active = self.loop.now  # its commands ran
            pending.resolve()
        else:
            pending.fail(ServerError(ERR(1105, "reset refused")))
        self.settle()

    @precondition(lambda self: any(not b.closed for b in self.connections))
    @rule(pick=st.integers(0, 1000), noticed=st.booleans(),
          where=st.sampled_from(["idle", "in use", "pinged", "reset", "any"]))
    def connection_dies(self, pick: int, noticed: bool, where: str) -> None:
        """KILL, a restart, a network cut: idle, in use, being pinged or reset; its loss
        noticed at once (connection_lost) or not yet (only its flag says so)."""
        alive = [b for b in self.connections if not b.closed]
        place = {"idle": self.pool.idle(), "in use": list(self.held),
                 "pinged": list(self.pings()), "reset": list(self.resets)}.get(where, alive)
        chosen = [b for b in alive if b in place] or alive
        self._dies(chosen[pick % len(chosen)], noticed)  # type: ignore[arg-type]

    @precondition(lambda self: bool(self.pool.idle()))
    @rule(then=st.sampled_from(["a client asks", "the janitor", "nothing"]))
    def an_idle_connection_expires(self, then: str) -> None:
        """Time passes until the most recently used idle connection is past the pool's
        idle timeout, not yet the server's wait_timeout; then a client asks for its key,
        or the janitor's round comes first."""
        backend = self.pool.idle()[-1]
        self.time_passes(max(0.0, backend.last_active + IDLE_TIMEOUT + 1 - self.loop.now))
        if then == "a client asks":
            self._ask(backend.key, fast=True)
        elif then == "the janitor":
            self.pool.expire_idle()
            self.settle()

    @precondition(lambda self: bool(self.pool.idle()))
    @rule(other_key=st.sampled_from([False, False, True]), noticed=st.booleans())
    def idle_connection_dies_as_it_is_asked_for(self, other_key: bool, noticed: bool) -> None:
        """The race of issue 16: the most recently used idle connection, used a moment
        ago, dies (its loss noticed, or not yet) when a client asks (for its key, or
        the other; the fast path, then the queue)."""
        backend = self.pool.idle()[-1]
        if not backend.closed:
            backend.last_active = self.loop.now
        self._dies(backend, noticed)  # type: ignore[arg-type]
        self._ask(KEYS[(KEYS.index(backend.key) + other_key) % len(KEYS)], fast=True)

    @rule()
    def server_says_it_shuts_down(self) -> None:
        """A statement was answered 1053 (the server shuts down): the session runs it
        again elsewhere, and the pool drops its idle connections."""
        self.pool.server_going_away()
        self.settle()
        assert not self.pool.idle()

    def _dies(self, backend: FakeBackend, noticed: bool) -> None:
        reset = self.resets.get(backend)
        if backend in self.pings():
            self.count["pings_failed"] += 1
        was_idle = backend in self.pool.idle()
        backend.die(notify=noticed)
        if was_idle and noticed:  # the others may be dying too: all checked
            assert not self.pool.idle(), "a connection died; the idle ones are not checked"
        if reset is not None:
            reset.fail(ConnectionResetError("upstream closed the connection"))
        self.settle()

    # -- rules: time, maintenance, operators ------------------------------------------------

    @rule(seconds=st.sampled_from([0.001, 0.001, 0.02, 0.1, 0.3, 1.0, 2.5, 6.0, 10.0, 20.0,
                                   125.0]),
          then=st.sampled_from(["nothing"] * 6 + ["janitor"] * 3 + ["pause"] + ["resume"] * 6 +
                               ["resize 1", "resize 2", "resize 3", "resize 4"]))
    def time_passes(self, seconds: float, then: str = "nothing") -> None:
        """Time passes (timers run: queue timeouts, probes, back-off, preemption; the
        server closes connections idle past its wait_timeout); then maybe the janitor's
        round, PAUSE, RESUME, or a size learned from the server (resize)."""
        self.loop.advance(seconds)
        for backend in self.connections:  # the server's wait_timeout
            if not backend.closed and self.loop.now - backend.last_active > WAIT_TIMEOUT:
                self._dies(backend, noticed=True)
        self.maintenance(then)

    def maintenance(self, action: str) -> None:
        if action == "nothing":
            return
        if action == "janitor":
            self.pool.expire_idle()
            self.settle()
        elif action == "pause":
            if not self.pool.paused:
                self.pause()
        elif action == "resume":
            if self.pool.paused:
                self.resume()
        else:
            self.resize(int(action.split()[1]))

    def resize(self, size: int) -> None:
        self.settings = PoolSettings(size, QUEUE_TIMEOUT, IDLE_TIMEOUT, MAX_LIFETIME, PING_AFTER)
        self.pool.resize(self.settings)
        self.settle()
        self.ceiling = max(size, self.pool.open_count)
        self.limited = False

    def pause(self) -> None:
        self.pool.pause()
        for ask in self.waiting():
            ask.deadline = None
        self.settle()
        assert not self.pool.idle(), "paused with idle connections"

    def resume(self) -> None:
        for ask in self.waiting():
            ask.deadline = self.loop.now + QUEUE_TIMEOUT
        self.pool.resume()
        self.settle()

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def within_the_size(self) -> None:
        pool = self.pool
        assert pool.open_count <= self.ceiling, \
            f"{pool.open_count} connections open, the size is {self.settings.size}"
        self.ceiling = max(self.settings.size, min(self.ceiling, pool.open_count))

    @invariant()
    def every_connection_accounted_for(self) -> None:
        pool = self.pool
        idle, lent = pool.idle(), set(pool.lent())
        pings, resets = self.pings(), self.resets
        assert len(idle) == len(set(idle)), "a connection idle twice"
        assert not set(idle) & lent, "a connection both idle and in use"
        assert lent == set(self.held), "in use for the pool is not what clients hold"
        assert pool.opening_count == len(self.connects) + len(pings) + len(resets), \
            "opening is not what is being opened, checked or reset"
        places = {b: 0 for b in self.connections}
        for group in (idle, lent, pings, resets):
            for backend in group:
                places[backend] += 1  # type: ignore[index]
        for backend, count in places.items():
            assert count <= 1, f"{backend!r} in two places"
            if count == 0:
                assert backend.closed, f"{backend!r} lost: open, and neither idle nor in use"
            elif backend.closed_how in ("close", "abort"):
                assert backend in lent, f"the pool closed {backend!r} and kept it"
        for backend in idle:
            assert not backend.loss_noticed, f"{backend!r} died, was told so, and stays idle"
        for backend in pings:
            assert backend.pinged_idle_for is not None and \
                backend.pinged_idle_for <= IDLE_TIMEOUT, \
                f"{backend!r} idle past the idle timeout was pinged for reuse, not closed"
        stats = pool.stats
        dropped = sum(1 for count in places.values() if count == 0)
        closed = (stats.closed_idle + stats.closed_lifetime + stats.closed_broken
                  + stats.key_evictions + stats.closed_paused + stats.closed_excess
                  + stats.pings_failed)
        assert closed == dropped, f"{dropped} connections dropped, {closed} counted closed"

    @invariant()
    def statistics_match(self) -> None:
        if self.pool.unreachable is not None and not self.was_unreachable:
            self.outages += 1
        self.was_unreachable = self.pool.unreachable is not None
        assert self.pool.stats.outages == self.outages
        stats, count = self.pool.stats, self.count
        assert stats.acquires == len(self.asks)
        assert stats.waited == sum(1 for a in self.asks if isinstance(a.answer, FakeBackend))
        assert stats.wait_timeouts == count["timeouts"]
        assert stats.connects == count["connects"]
        assert stats.connect_failures == count["connect_failures"]
        assert stats.limit_rejections == count["limit_rejections"]
        assert stats.resets == count["resets"]
        assert stats.pings_failed == count["pings_failed"]
        assert stats.preemptions == count["preemptions"]
        assert self.pool.waiting_count == len(self.waiting())
        assert self.pool.idle_count == len(self.pool.idle())
        assert self.pool.lent_count == len(self.held)

    @invariant()
    def answered_by_the_deadline(self) -> None:
        now = self.loop.now
        for ask in self.waiting():
            if self.pool.paused:
                assert ask.deadline is None
            else:
                assert ask.deadline is not None and now < ask.deadline, \
                    f"{ask.number} still waits past its deadline {ask.deadline} (now {now})"

    @invariant()
    def no_one_waits_in_vain(self) -> None:
        """Work conserving: a waiting client that nothing on its way covers has no idle
        connection of its key, and no room for a connect (unless the server is
        unreachable or the pool backs off after a 1226)."""
        pool = self.pool
        if pool.paused:
            return
        for key in KEYS:
            waiting = sum(1 for a in self.waiting() if a.key == key)
            if waiting <= self.incoming(key):
                continue
            assert not [b for b in pool.idle() if b.key == key], \
                f"a client waits for key {key} beside an idle connection of that key"
            if pool.unreachable is None and not pool.backing_off:
                assert pool.open_count >= pool.effective_size, \
                    f"a client waits for key {key} and there is room for a connect"
                assert not pool.idle() or pool.open_count - 1 >= pool.effective_size, \
                    "a client waits while an idle connection could make room"
                if self.limited and pool.open_count < self.settings.size:
                    # The account said it was full: the size kept comes back only if a
                    # connect tries beyond it, once the back-off is over.
                    assert self.connects, "a client waits; no connect tries beyond the " \
                        "size lowered after a 1226, though the back-off is over"

    @invariant()
    def the_server_is_looked_for(self) -> None:
        pool = self.pool
        if pool.unreachable is None:
            return
        tries = [c for c in self.connects if c.while_unreachable]
        assert len(tries) <= 1, f"{len(tries)} connects at once while unreachable"
        reconnect = pool._reconnect
        due = reconnect.next_probe()
        assert reconnect.probing or due is not None, "no one looks for the server"
        if due is not None:
            assert due <= self.loop.now + PROBE_MAX * 1.25 + 1e-9

    def teardown(self) -> None:
        """Everything settles: the server answers, clients give back what they hold;
        then every request has its answer and every connection is idle or closed."""
        if sys.exc_info()[0] is not None:
            self.loop.close()
            return  # a step failed: that is the finding
        if self.pool.paused:
            self.resume()
        for _ in range(200):
            if self.connects:
                self.connect_ends(0, "ok")
            elif self.pings():
                self.ping_ends(0, True)
            elif self.resets:
                self.reset_ends(0, True)
            elif self.held:
                self.give_back(0, reset=False, busy=False, used=True)
            elif self.waiting() or self.pool.unreachable is not None:
                self.time_passes(0.1)
            else:
                break
            self.every_connection_accounted_for()
            self.no_one_waits_in_vain()
        self.loop.close()
        assert not self.waiting(), "requests left unanswered"
        assert self.pool.unreachable is None
        assert self.pool.open_count == self.pool.idle_count
        assert all(b.closed for b in self.connections if b not in self.pool.idle())


PoolModel.TestCase.settings = settings(
    max_examples=EXPLORE or EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    derandomize=not EXPLORE,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=list(Phase) if SHRINK else [Phase.explicit, Phase.reuse, Phase.generate],
)
test_pool_model = PoolModel.TestCase


@pytest.fixture(autouse=True)
def _quiet_pool_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="mysqlgate.pool")
