"""KILL [CONNECTION | QUERY] n and COM_PROCESS_KILL n from a client: n names a client
(its greeting's id, or the upstream thread id its CONNECTION_ID() showed), never an
upstream connection that serves someone else, so no other form of KILL is passed on.
"""

from __future__ import annotations

import logging

from ..context import ClientHandle, GateContext
from ..errors import (
    ER_CONNECTION_KILLED,
    ER_KILL_DENIED_ERROR,
    ER_NO_SUCH_THREAD,
    ER_NOT_SUPPORTED_YET,
)
from ..protocol.constants import COMMAND
from ..protocol.framing import Packet, encode_packet
from ..sql_effects import Effect
from .attach import Attachment
from .client_state import ClientState
from .replies import Replies

log = logging.getLogger("mysqlgate.session")


class Kill:
    """One client's KILLs, and the one in flight."""

    def __init__(self, ctx: GateContext, me: ClientHandle, client: ClientState,
                 replies: Replies, attachment: Attachment) -> None:
        self.ctx = ctx
        self.me = me
        self.client = client
        self.replies = replies
        self.attachment = attachment
        self.aimed_at: ClientHandle | None = None  # whose statement its KILL QUERY stops

    def kill(self, kind: str, target_id: int | None) -> None:
        """KILL QUERY interrupts that client's running statement on its upstream
        connection; KILL ends that client."""
        replies = self.replies
        if target_id is None:
            replies.error(ER_NOT_SUPPORTED_YET,
                          "mysqlgate: only KILL [CONNECTION | QUERY] <id> is supported "
                          "through the proxy (KILL USER and KILL QUERY ID would reach "
                          "connections that serve other clients)", "42000")
            return
        target = self.ctx.client_named(target_id)
        if target is None:
            replies.error(ER_NO_SUCH_THREAD, f"Unknown thread id: {target_id}")
            return
        if target.account is not self.client.account:
            replies.error(ER_KILL_DENIED_ERROR, f"You are not owner of thread {target_id}")
            return
        backend = target.backend
        running = target.busy and backend is not None
        if target is self.me:
            if kind == "query":
                replies.ok()
            else:
                replies.error(ER_CONNECTION_KILLED, "Connection was killed", "70100")
                self.me.on_client_gone()
            return
        log.info("client %d: KILL %s of client %d", self.client.id, kind.upper(), target.id)
        if kind == "connection":
            target.on_client_gone()  # its upstream connection is closed if a statement ran
        if not running:
            replies.ok()  # nothing runs upstream for it: nothing more to stop
            return
        assert backend is not None
        if kind == "query":
            # Until the KILL has run, the connection stays the target's: handed to
            # another client, the KILL would interrupt that one's statement.
            target.kill_query_sent()
            self.aimed_at = target
        sql = b"\x03KILL QUERY %d" % backend.thread_id
        self.client.effects = Effect.NONE
        self.attachment.run(Packet(0, sql, encode_packet(sql, 0)[0]), COMMAND.COM_QUERY)

    def done(self) -> None:
        """This client's command is over: a KILL QUERY it sent has run."""
        target = self.aimed_at
        if target is not None:
            self.aimed_at = None
            target.kill_query_ran()
