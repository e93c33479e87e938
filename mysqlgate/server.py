"""The running daemon: probe the upstreams, build their pools, listen, maintain, stop.

serve -> startup (probe, pools, listeners) -> main loop (janitor) -> shutdown
(close listeners, let transactions finish up to a deadline, cancel the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from . import janitor
from .accounts import Account, pool_settings, probe, read_facts
from .admin.console import AdminConsole
from .admin.views import describe_command, show_value
from .backend import BackendConnection, open_backend
from .config import Config, Upstream, is_loopback, parse_listener
from .context import ClientHandle, GateContext
from .errors import MysqlgateError, ServerError, UpstreamAuthError
from .frontend import ClientConnection
from .metrics import MetricsServer
from .pool import UpstreamPool
from .protocol import results
from .settings import SETTINGS, SETTINGS_BY_NAME, ConfigError, parse_setting
from .upstream_session import UpstreamSession, reset_upstream

log = logging.getLogger("mysqlgate.server")
T = TypeVar("T")

SHUTDOWN_GRACE = 30.0  # seconds for running transactions to finish on SIGTERM
# While it drains, mysqlgate says this often what it still waits for: a silent wait of
# up to 30 s looks like a hang to whoever pressed Ctrl-C.
DRAIN_REPORT_EVERY = 5.0
DRAIN_CLIENTS_NAMED = 5  # clients described in a drain report; the rest are counted


class Gate:
    """One running mysqlgate."""

    def __init__(self, config: Config, load: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.load = load  # reads the configuration again (SIGHUP, RELOAD)
        self.ctx: GateContext | None = None
        self.servers: list[asyncio.Server] = []
        self._stop = asyncio.Event()
        # A second stop request while draining: stop at once, rolling transactions back.
        self._hurry = asyncio.Event()
        self.stop_reason = ""
        self._janitor: asyncio.Task[None] | None = None
        self.metrics: MetricsServer | None = None
        self.admin: AdminConsole | None = None

    async def start(self) -> None:
        """Reach each upstream once, then listen whether or not it answered: a sidecar or
        a service may start before its database (clients wait for it up to
        pool.queue_timeout, then get a clear error; the pool keeps trying)."""
        config = self.config
        accounts = [self._account(upstream) for upstream in config.upstreams]
        ctx = self.ctx = GateContext(config, tuple(accounts), tls=client_tls(config))
        for account in accounts:
            try:
                account.learned(await probe(account.upstream))
            except UpstreamAuthError:
                raise
            except (MysqlgateError, ServerError, OSError) as exc:
                account.pool.mark_unreachable(str(exc))
                continue
            facts, settings = account.facts, account.pool.settings
            assert facts is not None
            log.info(
                "upstream %s: %s, wait_timeout %gs, max_user_connections %d; pool size %d, "
                "idle timeout %gs, queue timeout %gs", account.upstream.address,
                facts.info.version.decode(errors="replace"), facts.wait_timeout,
                facts.max_user_connections, settings.size, settings.idle_timeout,
                settings.queue_timeout)
        loop = asyncio.get_running_loop()
        # Which code steps over result rows: a missing compiler at install time shows
        # here, not only as slower large results.
        log.info("event loop %s; result rows stepped over by %s", type(loop).__module__,
                 "compiled code (protocol/_scan.c)" if results.COMPILED
                 else "pure Python (no compiled extension, or MYSQLGATE_PURE_PYTHON set)")
        for listener in config.listeners:
            if listener.path:
                if os.path.exists(listener.path):
                    os.unlink(listener.path)
                server = await _bind("listen.addresses", listener, loop.create_unix_server(
                    partial(ClientConnection, ctx, True), listener.path))
                os.chmod(listener.path, 0o660)
            else:
                assert listener.port is not None
                server = await _bind("listen.addresses", listener, loop.create_server(
                    partial(ClientConnection, ctx, is_loopback(listener.host or "")),
                    listener.host, listener.port, reuse_address=True, backlog=1024))
            self.servers.append(server)
            log.info("listening on %s", listener)
        if config["admin.listen"]:
            address = parse_listener(config["admin.listen"])
            self.admin = AdminConsole(ctx, self)
            await _bind("admin.listen", address, self.admin.start(address))
            log.info("admin console on %s (user %s, %s)", address, config["admin.user"],
                     "password" if config["admin.password"] else
                     "no password: this OS user only")
        if config["metrics.listen"]:
            address = parse_listener(config["metrics.listen"])
            assert address.host is not None and address.port is not None
            self.metrics = MetricsServer(ctx, self.health_problem)
            await _bind("metrics.listen", address, self.metrics.start(address.host,
                                                                      address.port))
            log.info("metrics on http://%s/metrics (health: /healthz)", address)
        assert self.ctx is not None
        self._janitor = loop.create_task(janitor.run(self.ctx))
        notify_systemd("READY=1")

    def health_problem(self) -> str | None:
        """Why mysqlgate is not healthy, or None: it accepts clients and every upstream
        answers (a busy pool with clients waiting is healthy)."""
        if self._stop.is_set() or not self.servers:
            return "not accepting clients (stopping)"
        assert self.ctx is not None
        down = [f"{a.name}: {a.pool.unreachable}" for a in self.ctx.accounts
                if a.pool.unreachable is not None]
        return "upstream unreachable: " + "; ".join(down) if down else None

    def _account(self, upstream: Upstream) -> Account:
        async def connect(key: int) -> BackendConnection:
            backend = await open_backend(upstream, key)
            if account.facts is None:  # the server answers for the first time
                try:
                    account.learned(await read_facts(backend))
                except BaseException:
                    backend.abort()
                    raise
                log.info("upstream %s: %s; pool size %d", upstream.address,
                         account.server.version.decode(errors="replace"),
                         account.pool.settings.size)
            backend.session = UpstreamSession(account.fresh, account.restore_role,
                                              account.statement_limit)
            return backend

        pool = UpstreamPool(f"{upstream.user}@{upstream.address}", connect, reset_upstream,
                            pool_settings(self.config, None))
        account = Account(upstream, self.config, None, pool)
        return account

    def reload(self) -> None:
        """SIGHUP: re-read the settings; reloadable ones apply at once, clients stay."""
        try:
            self.reload_config()
        except (ConfigError, OSError) as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)

    def reload_config(self) -> str:
        """Re-read the configuration; apply the reloadable settings that changed; say
        which changed and which would need a restart."""
        if self.load is None:
            raise ConfigError("no configuration source to reload from")
        new = self.load()
        fixed = [s.name for s in SETTINGS
                 if not s.reloadable and new.values[s.name] != self.config.values[s.name]]
        if fixed:
            log.warning("reload: %s cannot change without a restart; ignored",
                        ", ".join(fixed))
        changed = {s.name: new.values[s.name] for s in SETTINGS
                   if s.reloadable and new.values[s.name] != self.config.values[s.name]}
        self._apply(changed)
        log.info("configuration reloaded%s",
                 f": {', '.join(changed)} changed" if changed else ", nothing changed")
        outcome = f"reloaded; changed: {', '.join(changed) or 'nothing'}"
        if fixed:
            outcome += f"; needing a restart (ignored): {', '.join(fixed)}"
        return outcome

    def set_setting(self, name: str, raw: str) -> str:
        """SET from the admin console: one reloadable setting, now (until the next
        reload or restart, which read the configuration again)."""
        setting = SETTINGS_BY_NAME.get(name)
        if setting is None:
            raise ConfigError(f"unknown setting {name}")
        if not setting.reloadable:
            raise ConfigError(f"{name} cannot change without a restart (settings SET can "
                              "change: those SHOW CONFIG marks reloadable)")
        value = parse_setting(name, raw)
        self._apply({name: value})
        return show_value(value) or "auto"

    def _apply(self, changes: dict[str, Any]) -> None:
        """Reloadable settings take effect: the pools' timeouts, the sessions' view of
        the configuration, the log level."""
        if not changes:
            return
        config = self.config = replace(self.config, values={**self.config.values, **changes})
        if self.ctx is None:
            return
        self.ctx.config = config
        for account in self.ctx.accounts:
            pool = account.pool
            account.config = config
            fresh = pool_settings(config, account.facts)
            pool.settings.queue_timeout = fresh.queue_timeout
            pool.settings.idle_timeout = fresh.idle_timeout
            pool.settings.max_lifetime = fresh.max_lifetime
            pool.settings.ping_after = fresh.ping_after
        logging.getLogger("mysqlgate").setLevel(config["log.level"].upper())

    def stop(self, reason: str = "SHUTDOWN from the admin console") -> None:
        """Stop as SIGTERM does; asked again while draining, stop at once."""
        if self._stop.is_set():
            if not self._hurry.is_set():
                log.warning("%s again: stopping now; transactions still open are rolled "
                            "back", reason)
            self._hurry.set()
            return
        self.stop_reason = reason
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def shutdown(self) -> None:
        notify_systemd("STOPPING=1")
        for server in self.servers:
            server.close()
        if self.metrics is not None:
            await self.metrics.close()
        if self.admin is not None:
            await self.admin.close()
        ctx = self.ctx
        if ctx is None:
            return
        await self._drain(ctx)
        for session in list(ctx.sessions.values()):
            session.on_client_gone()
        await asyncio.sleep(0)
        if self._janitor is not None:
            self._janitor.cancel()
        for account in ctx.accounts:
            if account.fleet is not None:
                await account.fleet.stop()
            await account.pool.close()
        for listener in self.config.listeners:
            if listener.path and os.path.exists(listener.path):
                os.unlink(listener.path)
        log.info("stopped; totals: %s", ctx.summary())


    async def _drain(self, ctx: GateContext) -> None:
        """Let clients holding an upstream connection (a statement running, a transaction
        open, pinned) finish, up to SHUTDOWN_GRACE; the others can go now. Says what it
        waits for, and how a second signal ends the wait."""
        start = time.monotonic()
        deadline = start + SHUTDOWN_GRACE
        next_report = start
        while True:
            busy = [s for s in ctx.sessions.values() if s.backend is not None]
            now = time.monotonic()
            if not busy:
                if now - start >= 1.0:
                    log.info("every client finished after %.0f s", now - start)
                return
            if self._hurry.is_set():
                log.warning("not waiting for %d client(s): %s", len(busy),
                            describe_holders(busy, now))
                return
            if now >= deadline:
                log.warning("waited %.0f s (the most a stop waits); stopping now, rolling "
                            "back what is still open: %s", SHUTDOWN_GRACE,
                            describe_holders(busy, now))
                return
            if now >= next_report:
                log.warning("stopping: waiting up to %.0f s more for %d client(s) holding an "
                            "upstream connection to finish: %s. Another SIGTERM or Ctrl-C "
                            "stops at once, rolling their transactions back",
                            deadline - now, len(busy), describe_holders(busy, now))
                next_report = now + DRAIN_REPORT_EVERY
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._hurry.wait()


def describe_holders(sessions: list[ClientHandle], now: float) -> str:
    """`client 3 (app@127.0.0.1:51234) idle in transaction for 12 s; ...`: who holds
    connections during a stop, and since when (at most DRAIN_CLIENTS_NAMED of them)."""
    parts = []
    for session in sorted(sessions, key=lambda s: s.last_command_at)[:DRAIN_CLIENTS_NAMED]:
        what = session.activity()
        statement = describe_command(session.current) if session.busy else None
        if statement:
            what += f" ({statement[:60]})"
        who = f"{session.user}@{session.peer}" if session.user else session.peer
        parts.append(f"client {session.id} ({who}) {what} for "
                     f"{now - session.last_command_at:.0f} s")
    more = len(sessions) - DRAIN_CLIENTS_NAMED
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def client_tls(config: Config) -> ssl.SSLContext | None:
    """The TLS mysqlgate offers clients, when listen.tls_cert and tls_key are set."""
    if not config["listen.tls_cert"]:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config["listen.tls_cert"], config["listen.tls_key"])
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"listen.tls_cert / listen.tls_key: {exc}") from None
    return context


async def _bind(setting: str, address: object, start: Coroutine[Any, Any, T]) -> T:
    """Start a listener of `setting`; a port in use is a configuration error."""
    try:
        return await start
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot listen on {address}: {exc.strerror or exc}")\
            from None


def notify_systemd(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("cannot notify systemd: %s", exc)


async def serve(config: Config, load: Callable[[], Config] | None = None) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP re-reads the configuration with `load`."""
    gate = Gate(config, load)
    loop = asyncio.get_running_loop()
    for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT (Ctrl-C)")):
        loop.add_signal_handler(sig, gate.stop, name)
    if load is not None:
        loop.add_signal_handler(signal.SIGHUP, gate.reload)
    try:
        await gate.start()
    except UpstreamAuthError as exc:
        log.error("%s", exc.message)
        return 2
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    await gate.wait_stopped()
    log.info("shutting down (%s): no new clients; those holding an upstream connection may "
             "finish for up to %.0f s", gate.stop_reason, SHUTDOWN_GRACE)
    await gate.shutdown()
    return 0
