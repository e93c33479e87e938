"""TLS towards one client, run on memory BIOs inside the client's own protocol object.

Why not loop.start_tls: a client writes its SSLRequest and its TLS ClientHello back to
back (libmariadb and PyMySQL both do), so the hello is often already in mysqlgate's hands,
read together with the SSLRequest or just after it, before the session has even looked at
the SSLRequest. loop.start_tls cannot be given bytes already read, and the hello fed to the
packet assembler reads as MySQL protocol: the handshake then waits forever. Here the
frontend switches to TLS at the exact byte where the SSLRequest ends, synchronously, and
whatever followed it is the start of the TLS stream.
"""

from __future__ import annotations

import asyncio
import ssl


class ClientTLS:
    """The TLS session with one client over a plain transport: `receive` turns bytes read
    from the socket into plaintext, `send` turns plaintext into bytes written to it.
    `established` completes when the handshake does (or fails with its error)."""

    def __init__(self, context: ssl.SSLContext, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.established: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def receive(self, data: bytes) -> bytes:
        """Plaintext from `data` (b"" while the handshake runs or a record is partial).
        ssl.SSLError when the client's TLS is broken or refused; ConnectionResetError
        when the client ended TLS."""
        self._incoming.write(data)
        try:
            if not self.established.done():
                try:
                    self._tls.do_handshake()
                except ssl.SSLWantReadError:
                    return b""
                self.established.set_result(None)
            chunks = []
            while True:
                try:
                    chunks.append(self._tls.read(65536))
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    raise ConnectionResetError("the client ended TLS") from None
            return b"".join(chunks)
        except (ssl.SSLError, ConnectionResetError) as exc:
            if not self.established.done():
                self.established.set_exception(exc)
                self.established.exception()  # retrieved: the caller closes on it
            raise
        finally:
            self._flush()

    def send(self, data: bytes) -> None:
        self._tls.write(data)
        self._flush()

    def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self._transport.write(pending)
