"""A TCP relay that delays every chunk by a fixed time in each direction, preserving order.

Usage:  python bench/relay.py --listen-port 4000 --target-port 3306 [--delay-ms 1]
        [--handshake-delay]

This kernel has no netem, so the benchmarks put the server "1 ms away" with this relay:
each chunk read from one side is written to the other `delay` after it was read, in the
order read. Chunks are delayed independently (a burst is not serialised: chunk n+1 leaves
`delay` after it arrived, not `delay` after chunk n left), as on a network link whose
bandwidth is not the limit.

A real network delay also slows TCP's three-way handshake, which this relay, accepting
on loopback, skips by default: a new connection costs one round trip less than on a link
with that delay. With netem on a 1 ms link the server accepts 3 one-way delays (SYN,
SYN-ACK, ACK) after the client called connect(), and its greeting arrives one more delay
later; `--handshake-delay` reproduces that by opening the upstream connection 3 x delay
after accepting (the greeting then takes the usual delay on its way back).

It prints "ready <port>" on stdout once listening, and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal
import sys

# Marks in a pipe's outbox: the peer sent EOF (pass it on), or the peer is gone (close).
EOF_MARK = b""
CLOSE_MARK = None


class Pipe(asyncio.Protocol):
    """One TCP connection of a relayed pair; what it reads goes to `peer`, delayed."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer: Pipe | None = None
        self.early: list[bytes | None] = []  # read before the peer existed
        # (due time, data) to write to our socket. Due times never decrease: order is kept.
        self.outbox: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.eof_in = False  # our socket sent EOF
        self.eof_out = False  # we wrote EOF to our socket
        self.closed = False

    def link(self, peer: Pipe) -> None:
        self.peer = peer
        for data in self.early:
            peer.send_later(data)
        self.early.clear()

    def _to_peer(self, data: bytes | None) -> None:
        if self.peer is None:
            self.early.append(data)
        else:
            self.peer.send_later(data)

    # -- receiving: schedule the chunk on the peer, `delay` from now ---------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._to_peer(data)

    def eof_received(self) -> bool:
        self.eof_in = True
        self._to_peer(EOF_MARK)
        return not self.eof_out  # False: both directions are done, close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        self.outbox.clear()
        self._to_peer(CLOSE_MARK)
        self.relay.pipes.discard(self)

    # -- sending -----------------------------------------------------------------------

    def send_later(self, data: bytes | None) -> None:
        if self.closed:
            return
        self.outbox.append((self.loop.time() + self.relay.delay, data))
        if self.timer is None:
            self.timer = self.loop.call_at(self.outbox[0][0], self.flush)

    def flush(self) -> None:
        self.timer = None
        transport = self.transport
        if transport is None or self.closed:
            return
        # Everything due (asyncio runs timers up to one clock resolution early).
        horizon = self.loop.time() + self.loop._clock_resolution  # type: ignore[attr-defined]
        while self.outbox and self.outbox[0][0] <= horizon:
            _, data = self.outbox.popleft()
            if data:
                transport.write(data)
            elif data is CLOSE_MARK or not transport.can_write_eof():
                transport.close()  # writes what is buffered first
                self.outbox.clear()
                return
            else:
                transport.write_eof()
                self.eof_out = True
                if self.eof_in:
                    transport.close()
        if self.outbox:
            self.timer = self.loop.call_at(self.outbox[0][0], self.flush)

    # -- back-pressure: while we cannot write, our peer stops reading --------------------

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.peer.transport.resume_reading()


class Relay:
    def __init__(self, target_host: str, target_port: int, delay: float,
                 handshake_delay: float) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay = delay
        self.handshake_delay = handshake_delay
        self.pipes: set[Pipe] = set()

    def client_pipe(self) -> Pipe:
        pipe = Pipe(self)
        self.pipes.add(pipe)
        asyncio.get_running_loop().create_task(self._connect_upstream(pipe))
        return pipe

    async def _connect_upstream(self, client: Pipe) -> None:
        # Anything the client sends meanwhile waits in client.early (MySQL clients do not
        # send before the greeting anyway).
        if self.handshake_delay > 0:
            await asyncio.sleep(self.handshake_delay)
        if client.closed:
            return
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(
                lambda: Pipe(self), self.target_host, self.target_port)
        except OSError:
            if client.transport is not None:
                client.transport.abort()
            return
        self.pipes.add(upstream)
        upstream.link(client)
        client.link(upstream)


async def serve(args: argparse.Namespace) -> None:
    delay = args.delay_ms / 1000
    relay = Relay(args.target_host, args.target_port, delay,
                  3 * delay if args.handshake_delay else 0.0)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        relay.client_pipe, args.listen_host, args.listen_port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"ready {port}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    for pipe in list(relay.pipes):
        if pipe.transport is not None:
            pipe.transport.abort()


def main() -> int:
    parser = argparse.ArgumentParser(description="TCP relay adding a fixed delay each way.")
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--listen-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--target-host", default="127.0.0.1")
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=1.0, help="one-way delay (1 ms)")
    parser.add_argument(
        "--handshake-delay", action="store_true",
        help="connect upstream after 3 one-way delays (as a TCP handshake would take)",
    )
    args = parser.parse_args()
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
