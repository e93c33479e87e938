"""A stand-in for mysqlgate that only relays bytes to the upstream server. It takes the same
--upstream and --listen arguments, so the Gate harness can be tested without the proxy."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import urllib.parse


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def _notify_ready() -> None:
    """READY=1 on $NOTIFY_SOCKET, as mysqlgate tells systemd (and the harness) that its
    listeners are open."""
    address = os.environ.get("NOTIFY_SOCKET")
    if address:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"READY=1", address)


async def _serve(upstream: str, listens: list[str]) -> None:
    url = urllib.parse.urlsplit(upstream)
    upstream_host, upstream_port = url.hostname or "127.0.0.1", url.port or 3306

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    servers = []
    for listen in listens:
        if listen.startswith("unix:"):
            servers.append(
                await asyncio.start_unix_server(relay, path=listen.removeprefix("unix:"))
            )
        else:
            host, _, port = listen.rpartition(":")
            servers.append(await asyncio.start_server(relay, host, int(port)))
    print(
        f"stand-in listening on {listens}, relaying to {upstream_host}:{upstream_port}",
        file=sys.stderr,
        flush=True,
    )
    _notify_ready()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print("stand-in stopping on SIGTERM", file=sys.stderr, flush=True)
    for server in servers:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--listen", action="append", required=True)
    args, extra = parser.parse_known_args()
    print(f"stand-in extra arguments: {extra}", file=sys.stderr, flush=True)
    asyncio.run(_serve(args.upstream, args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
