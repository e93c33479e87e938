"""Client sockets: a thin asyncio.Protocol around a Session.

Bytes from the client become packets (checked for size and framing) handed to the
session; the session writes replies back through `write`. Flow control: when the
client's socket buffer fills past pool.result_buffer, the session stops reading from
the server until the client has caught up.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import cast

from .client_tls import ClientTLS
from .context import GateContext
from .errors import ER_CON_COUNT_ERROR
from .protocol.errors import ProtocolViolation
from .protocol.framing import MAX_PACKET_PAYLOAD, Packet, PacketAssembler, encode_packet
from .protocol.messages import ERR, HandshakeResponse
from .session import Session

log = logging.getLogger("mysqlgate.frontend")


def _is_ssl_request(payload: bytes) -> bool:
    try:
        return HandshakeResponse.parse(payload).ssl_request
    except ProtocolViolation:
        return False


class ClientConnection(asyncio.Protocol):
    def __init__(self, ctx: GateContext, local: bool) -> None:
        self.ctx = ctx
        self.local = local  # on a unix socket or a loopback listener
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.closed = False
        self.writes_paused = False  # its read-ahead is full (pool.result_buffer)
        self._packets = PacketAssembler(ctx.config["limits.max_packet"])
        # Set by the session while its greeting offers TLS and the client's first packet
        # has not come: an SSLRequest then switches this connection to TLS on the spot.
        self.tls_offer: ssl.SSLContext | None = None
        self._tls: ClientTLS | None = None

    def offer_tls(self, context: ssl.SSLContext | None) -> None:
        """The session's greeting offers TLS: an SSLRequest as the client's first packet
        switches this connection to TLS on the spot."""
        self.tls_offer = context

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername") or "unix socket"
        if isinstance(peer, tuple):
            peer = f"{peer[0]}:{peer[1]}"
        ctx = self.ctx
        limit = ctx.config["limits.max_clients"]
        if len(ctx.sessions) >= limit:
            ctx.stats.clients_rejected += 1
            err = ERR(ER_CON_COUNT_ERROR, f"mysqlgate: too many client connections ({limit}, "
                      "limits.max_clients); close idle ones or raise the limit", "08004")
            transport.write(encode_packet(err.build(), 0)[0])
            transport.close()
            self.closed = True
            return
        transport.set_write_buffer_limits(high=ctx.config["pool.result_buffer"])
        session = Session(ctx, self, str(peer))
        self.session = session
        session.task = asyncio.get_running_loop().create_task(session.run())
        log.debug("%s: connected", session)

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None or self.closed:
            return
        if self._tls is not None:
            try:
                data = self._tls.receive(data)
            except (ssl.SSLError, ConnectionResetError) as exc:
                log.debug("%s: TLS: %s", session, exc)
                self.close()
                return
            if not data:
                return
        elif self.tls_offer is not None:
            self._first_packet(session, data)
            return
        packets = self._packets
        if not packets.buffered:
            # The usual case: one whole small command in one read; no copying.
            size = len(data)
            if size >= 4:
                length = data[0] | (data[1] << 8) | (data[2] << 16)
                if length + 4 == size and length < MAX_PACKET_PAYLOAD:
                    session.on_packet(Packet(data[3], data[4:], data))
                    return
        packets.feed(data)
        try:
            while (packet := packets.next_packet()) is not None:
                session.on_packet(packet)
        except ProtocolViolation as exc:
            session.protocol_violation(exc)

    def _first_packet(self, session: Session, data: bytes) -> None:
        """The client's first packet, where TLS may begin: after an SSLRequest, every
        byte is TLS, including those already read with it."""
        packets = self._packets
        packets.feed(data)
        try:
            packet = packets.next_packet()
        except ProtocolViolation as exc:
            session.protocol_violation(exc)
            return
        if packet is None:
            return
        context, self.tls_offer = self.tls_offer, None
        assert context is not None and self.transport is not None
        if len(packet.payload) == 32 and _is_ssl_request(packet.payload):
            self._tls = ClientTLS(context, self.transport)
        session.on_packet(packet)
        rest = packets.take_buffered()
        if rest:
            self.data_received(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.writes_paused:  # it leaves a full read-ahead behind, freed now
            self.ctx.memory.freed()
        if self.session is not None:
            self.session.on_client_gone()

    def pause_writing(self) -> None:
        self.writes_paused = True
        if self.session is not None:
            self.session.pause_upstream()

    def resume_writing(self) -> None:
        self.writes_paused = False
        self.ctx.memory.freed()  # a read-ahead of up to pool.result_buffer drained
        if self.session is not None:
            self.session.resume_upstream()

    async def tls_established(self) -> None:
        """Once the client's SSLRequest has come: wait for the TLS handshake."""
        if self._tls is None:
            raise ConnectionResetError("the client asked for TLS that was not offered")
        await self._tls.established

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            if self._tls is not None:
                self._tls.send(data)
            else:
                self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.closed = True
