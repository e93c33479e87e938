"""Periodic maintenance, as PgBouncer's janitor.c: idle upstream connections aged out,
quiet connections that clients hold kept alive before the server's wait_timeout, and
the idle policy for quiet clients (their own wait_timeout, transactions left open while
others wait).
"""

from __future__ import annotations

import asyncio
import logging
import time

from .accounts import Account
from .backend import BackendConnection
from .config import Config
from .context import ClientHandle, GateContext
from .protocol.constants import CLIENT
from .upstream_session import close_unused_statements

log = logging.getLogger("mysqlgate.janitor")

IDLE_CHECK_SLICE = 500  # clients checked between two yields


async def run(ctx: GateContext) -> None:
    """The janitor's loop: until cancelled."""
    accounts = ctx.accounts
    interval = max(0.2, min(1.0, min(a.pool.settings.idle_timeout for a in accounts) / 4))
    while True:
        await asyncio.sleep(interval)
        ctx.memory.maybe()
        for account in accounts:
            maintain_account(account)
        clients = list(ctx.sessions.values())
        for start in range(0, len(clients), IDLE_CHECK_SLICE):
            if start:
                # 10,000 idle clients take ~15 ms to check: in slices, so that the
                # statements of busy clients are not held up behind them.
                await asyncio.sleep(0)
            now = time.monotonic()
            for client in clients[start:start + IDLE_CHECK_SLICE]:
                check_idle(client, now, ctx.config)


def maintain_account(account: Account) -> None:
    pool = account.pool
    pool.expire_idle()
    for backend in pool.idle():
        close_unused_statements(backend, account.statements)
    now = time.monotonic()
    for backend in pool.lent():
        # A client in a transaction or pinned may stay quiet for long; ping
        # before the server's wait_timeout would end the connection.
        if not backend.busy and not backend.closed and \
                now - backend.last_active > pool.settings.idle_timeout:
            asyncio.ensure_future(_ping_quietly(backend))


async def _ping_quietly(backend: BackendConnection) -> None:
    try:
        await backend.ping()
    except Exception as exc:  # the session learns of it at its next statement
        log.info("keepalive ping of upstream %s failed: %s", backend.thread_id, exc)


def check_idle(client: ClientHandle, now: float, config: Config) -> None:
    """A look at a quiet client.

    Its own wait_timeout (interactive_timeout for an interactive client), if it set
    one: it is disconnected after that long without a command, as the server would.
    The server's own default never applies: that is the point.

    A client that holds a connection in a transaction (or pinned by session state)
    and goes quiet: after pool.idle_transaction_timeout the transaction is rolled
    back and the connection goes back to the pool; `auto` does so only while other
    clients wait for a connection that nothing else will bring them, and only after
    the server's own wait_timeout, never sooner than a direct connection would have
    failed (issue 7)."""
    if client.busy or client.closed:
        return
    idle = now - client.last_command_at
    name = "interactive_timeout" if client.capabilities & CLIENT.INTERACTIVE \
        else "wait_timeout"
    value = client.variables.get(name)
    if value is not None:
        try:
            timeout = float(value)
        except ValueError:
            timeout = 0.0
        if timeout and idle > timeout:
            log.info("client %d: idle for more than its %s of %gs; disconnecting it",
                     client.id, name, timeout)
            client.on_client_gone()
            return
    if client.backend is None or not client.leaves_state():
        return
    setting = config["pool.idle_transaction_timeout"]
    if setting == "off":
        return
    if setting is None:  # auto
        account = client.account
        facts = account.facts
        # Only for clients that nothing else will serve: one whose connection is being
        # opened (slowly, on a loaded machine) would cost this client its transaction
        # for a wait of a few milliseconds more.
        if not account.pool.unserved_count or facts is None:
            return
        limit = facts.wait_timeout
    else:
        limit = float(setting)
    if idle > limit:
        client.end_idle_transaction(idle)
