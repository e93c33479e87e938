"""Which OS user is at the other end of a local connection.

Without admin.password the console admits only the OS user mysqlgate runs as (as a
database's peer authentication does): on a unix socket the kernel says who connected
(SO_PEERCRED); on loopback TCP, /proc/net/tcp names the owner of the client's socket.
Elsewhere (not Linux, or not local) the answer is None and the login is refused.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path
from typing import Any

PROC_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def peer_uid(sock: Any) -> int | None:
    """The uid owning the peer of `sock` (a socket or asyncio's TransportSocket)."""
    try:
        if sock.family == socket.AF_UNIX:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            return int(struct.unpack("3i", creds)[1])
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            peer, local = sock.getpeername(), sock.getsockname()
            if not _address(peer[0]).is_loopback:
                return None
            return tcp_owner((_address(peer[0]), peer[1]), (_address(local[0]), local[1]))
    except (OSError, AttributeError, ValueError):
        return None
    return None


Endpoint = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def tcp_owner(client: Endpoint, server: Endpoint,
              tables: tuple[Path, ...] = PROC_TABLES) -> int | None:
    """The uid of the socket whose local end is `client` and remote end `server`."""
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            uid = match_line(line, client, server)
            if uid is not None:
                return uid
    return None


def match_line(line: str, client: Endpoint, server: Endpoint) -> int | None:
    """The uid of one /proc/net/tcp{,6} line if it is the client's socket."""
    fields = line.split()
    if len(fields) < 8:
        return None
    try:
        if decode_endpoint(fields[1]) == client and decode_endpoint(fields[2]) == server:
            return int(fields[7])
    except ValueError:
        return None
    return None


def decode_endpoint(text: str) -> Endpoint:
    """`0100007F:1F90` -> (127.0.0.1, 8080); IPv6 as four little-endian 32-bit words."""
    host, _, port = text.partition(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = \
            ipaddress.IPv4Address(raw[::-1])
    elif len(raw) == 16:
        address = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    else:
        raise ValueError(f"not an address: {text!r}")
    return address, int(port, 16)
