"""TLS (SPEC section 6, issue 7), with certificates the test makes itself (trustme).

Towards clients: with listen.tls_cert / listen.tls_key, clients that verify mysqlgate's
certificate (PyMySQL, mysqlclient, mysql-connector, the `mariadb` CLI) get TLS and a
working session; a client that asks for TLS when mysqlgate has no certificate gets a
clear error; listen.require_tls refuses clients without TLS beyond loopback only.
`SHOW STATUS LIKE 'Ssl_cipher'` sent through mysqlgate cannot prove the client side (it
runs on the upstream connection), so TLS to mysqlgate is proven from the client's end:
its socket, its own report, a CA that did not sign the certificate being refused, and a
client that requires TLS getting in where a client without it is refused.

Towards the server: each upstream.ssl_mode against a MariaDB that offers TLS with a
certificate made here. There `SHOW SESSION STATUS LIKE 'Ssl_cipher'` through mysqlgate
is the proof: it runs on the upstream connection and names its cipher (empty without
TLS); the server's `Ssl_accepts` counter says whether mysqlgate did any TLS at all. A
certificate that fails verification stops mysqlgate at startup and fails `check-config`,
with the reason and the settings to look at.

The servers with TLS are started once for the module (each start costs ~2 s); the tests
that use them create accounts of their own on them.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mysql.connector
import MySQLdb
import pymysql
import pytest
from harness import (
    CertAuthority,
    DbServer,
    Gate,
    GateError,
    ScratchDb,
    ServerCert,
    free_port,
    server_class,
)
from pymysql.constants import CLIENT, CR

REPO_ROOT = Path(__file__).resolve().parents[2]
MARIADB_CLI = shutil.which("mariadb") or shutil.which("mysql")

MiB = 1024 * 1024
TIMEOUT = 20.0  # seconds for one connect or statement: a hang fails the test, not the run
# PyMySQL bounds its TLS handshake by write_timeout (it is the socket's timeout after the
# SSLRequest was written), the rest by connect_timeout and read_timeout.
PYMYSQL_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": TIMEOUT,
    "read_timeout": TIMEOUT,
    "write_timeout": TIMEOUT,
}
# Logins per client in the client tests: the TLS upgrade depends on how the SSLRequest and
# the TLS hello reach mysqlgate, which varies from one connection to the next.
LOGINS = 5

ER_NOT_SUPPORTED_YET = 1235
ER_SECURE_TRANSPORT_REQUIRED = 3159
WRONG_NAME = "db.example.invalid"  # a name no server here has


# -- certificates and addresses ---------------------------------------------------------------


def _non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine beyond loopback that can be listened on, or None.

    The host name often resolves to 127.0.x.x only, so the interfaces are asked too."""
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    ip_command = shutil.which("ip")
    if ip_command is not None:
        result = subprocess.run(
            [ip_command, "-4", "-o", "addr", "show", "scope", "global"],
            capture_output=True, text=True, timeout=10, check=False,
        )
        for line in result.stdout.splitlines():
            fields = line.split()
            if "inet" in fields:
                candidates.append(fields[fields.index("inet") + 1].split("/")[0])
    for address in candidates:
        if ipaddress.ip_address(address).is_loopback:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address, 0))
            except OSError:
                continue
        return address
    return None


REMOTE_ADDRESS = _non_loopback_ipv4()


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA that signed every certificate served here
    other_ca: Path  # a CA that signed none of them
    local: ServerCert  # 127.0.0.1, localhost (and REMOTE_ADDRESS, if there is one)
    wrong_name: ServerCert  # WRONG_NAME only


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("certs")
    ca = CertAuthority(directory)
    other = CertAuthority(directory, "other-ca")
    names = ["127.0.0.1", "localhost"] + ([REMOTE_ADDRESS] if REMOTE_ADDRESS else [])
    return Certs(
        ca=ca.ca_file,
        other_ca=other.ca_file,
        local=ca.issue("local", *names),
        wrong_name=ca.issue("wrong-name", WRONG_NAME),
    )


def _client_tls_args(certs: Certs) -> tuple[str, ...]:
    return ("--listen-tls-cert", str(certs.local.cert), "--listen-tls-key", str(certs.local.key))


# -- servers with TLS, and accounts on them ---------------------------------------------------


def _tls_server(cert: ServerCert, flavour: str) -> Iterator[DbServer]:
    options = {"ssl_cert": cert.cert, "ssl_key": cert.key}
    with server_class(flavour)(options) as server:
        assert server.offers_tls, server.error_log_tail()
        yield server


@pytest.fixture(scope="module")
def tls_mariadb(certs: Certs, flavour: str) -> Iterator[DbServer]:
    """A server with a certificate for 127.0.0.1 and localhost."""
    yield from _tls_server(certs.local, flavour)


@pytest.fixture(scope="module")
def wrong_name_mariadb(certs: Certs, flavour: str) -> Iterator[DbServer]:
    """A server whose certificate (signed by the same CA) is for another name."""
    yield from _tls_server(certs.wrong_name, flavour)


@pytest.fixture
def scratch_on() -> Iterator[Callable[[DbServer], ScratchDb]]:
    """scratch_on(server) -> a fresh database and account there, dropped after the test."""
    created: list[ScratchDb] = []

    def create(server: DbServer) -> ScratchDb:
        scratch = ScratchDb(server)
        scratch.create()
        created.append(scratch)
        return scratch

    yield create
    for scratch in reversed(created):
        scratch.drop()


@pytest.fixture
def upstream_gate(
    scratch_on: Callable[[DbServer], ScratchDb], gate_factory: Callable[..., Gate]
) -> Callable[..., Gate]:
    """upstream_gate(db, *args) -> a gate in front of `db`, an account from scratch_on.
    (Depending on scratch_on before gate_factory makes the accounts outlive the gates.)"""

    def start(db: ScratchDb, *args: str) -> Gate:
        return gate_factory(*args, db=db)

    return start


# -- helpers ----------------------------------------------------------------------------------


def _one(conn: Any, sql: str, args: Any = None) -> Any:
    """Run `sql` on a DB-API connection and return its single row."""
    cursor = conn.cursor()
    try:
        cursor.execute(sql, args)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    assert len(rows) == 1, rows
    return tuple(rows[0])


def _session_status(conn: Any, name: str) -> str:
    row = _one(conn, f"SHOW SESSION STATUS LIKE '{name}'")
    return str(row[1])


def _ssl_accepts(root: Any) -> int:
    """TLS handshakes the server has accepted since it started."""
    return int(_one(root, "SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")[1])


def _pymysql_tls(gate: Gate, ca: Path, **kwargs: Any) -> pymysql.connections.Connection:
    """PyMySQL through `gate` with TLS, verifying the certificate and the host name."""
    return gate.connect(ssl={"ca": str(ca), "check_hostname": True}, **PYMYSQL_TIMEOUTS, **kwargs)


def _pymysql_plain(gate: Gate, **kwargs: Any) -> pymysql.connections.Connection:
    """PyMySQL through `gate` without TLS (PyMySQL would use it whenever offered)."""
    return gate.connect(ssl_disabled=True, **PYMYSQL_TIMEOUTS, **kwargs)


def _mysqldb(gate: Gate, host: str | None = None, port: int | None = None, **kwargs: Any) -> Any:
    """A mysqlclient (MySQLdb) connection through `gate` over TCP."""
    return MySQLdb.connect(
        host=host or gate.host, port=port or gate.port, user=gate.db.user,
        password=gate.db.password, database=gate.db.database, autocommit=True,
        connect_timeout=int(TIMEOUT), read_timeout=int(TIMEOUT), write_timeout=int(TIMEOUT),
        **kwargs,
    )


def _connector(gate: Gate, host: str | None = None, port: int | None = None,
               **kwargs: Any) -> Any:
    """A mysql-connector connection through `gate` over TCP."""
    return mysql.connector.connect(
        host=host or gate.host, port=port or gate.port, user=gate.db.user,
        password=gate.db.password, database=gate.db.database, autocommit=True,
        connection_timeout=int(TIMEOUT), **kwargs,
    )


def _cli(gate: Gate, *args: str, host: str | None = None, port: int | None = None
         ) -> subprocess.CompletedProcess[str]:
    """The `mariadb` command-line client through `gate` over TCP."""
    assert MARIADB_CLI is not None, "the mariadb command-line client is not installed"
    argv = [
        MARIADB_CLI, "--no-defaults", f"--host={host or gate.host}", f"--port={port or gate.port}",
        "--protocol=TCP", f"--user={gate.db.user}", f"--password={gate.db.password}",
        f"--connect-timeout={int(TIMEOUT)}", "--batch", "--skip-column-names", *args,
        gate.db.database,
    ]
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=2 * TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the mariadb CLI hung for {exc.timeout:g} s: {argv[-2]!r}; stdout "
                    f"{exc.stdout!r}, stderr {exc.stderr!r}\n{gate.log_tail()}")


def _run_mysqlgate(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m mysqlgate ARGS` to its end, for startups that must fail (the harness's
    Gate expects a start)."""
    env = {**os.environ, "MYSQLGATE_LOG_LEVEL": "info", "MYSQLGATE_ADMIN_LISTEN": "off"}
    return subprocess.run(
        [sys.executable, "-m", "mysqlgate", *args], cwd=REPO_ROOT, env=env,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )


def _free_port_on(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_accepts(address: str, port: int, gate: Gate) -> None:
    """Poll until a listener the harness does not wait for accepts connections."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            try:
                probe.connect((address, port))
                return
            except OSError:
                pass
        assert time.monotonic() < deadline, (
            f"mysqlgate does not listen on {address}:{port}\n{gate.log_tail()}")
        time.sleep(0.05)


# -- a MySQL client by hand, for what drivers do not let a test choose ------------------------


@dataclass(frozen=True)
class _Greeting:
    capabilities: int
    nonce: bytes
    plugin: str


@dataclass(frozen=True)
class _Err:
    code: int
    sqlstate: str
    message: str


def _parse_greeting(payload: bytes) -> _Greeting:
    assert payload[0] == 10, f"not a protocol-10 greeting: {payload[:16]!r}"
    pos = payload.index(b"\0", 1) + 1 + 4  # server version, connection id
    nonce = payload[pos:pos + 8]
    pos += 9  # nonce part 1, filler
    capabilities = int.from_bytes(payload[pos:pos + 2], "little")
    pos += 2 + 1 + 2  # capabilities (low), character set, status
    capabilities |= int.from_bytes(payload[pos:pos + 2], "little") << 16
    auth_length = payload[pos + 2]
    pos += 2 + 1 + 10  # capabilities (high), auth data length, reserved
    part2 = max(13, auth_length - 8)
    nonce += payload[pos:pos + part2].rstrip(b"\0")
    plugin = payload[pos + part2:].split(b"\0")[0].decode()
    return _Greeting(capabilities, nonce, plugin)


def _parse_err(payload: bytes) -> _Err:
    assert payload[:1] == b"\xff", f"not an ERR packet: {payload[:32]!r}"
    code = int.from_bytes(payload[1:3], "little")
    if payload[3:4] == b"#":
        return _Err(code, payload[4:9].decode(), payload[9:].decode("utf-8", "replace"))
    return _Err(code, "", payload[3:].decode("utf-8", "replace"))


def _native_scramble(password: str, nonce: bytes) -> bytes:
    stage1 = hashlib.sha1(password.encode()).digest()
    mix = hashlib.sha1(nonce + hashlib.sha1(stage1).digest()).digest()
    return bytes(a ^ b for a, b in zip(stage1, mix, strict=True))


LOGIN_CAPABILITIES = (
    CLIENT.LONG_PASSWORD | CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.PLUGIN_AUTH
    | CLIENT.CONNECT_WITH_DB
)
UTF8MB4_GENERAL_CI = 45


def _ssl_request() -> bytes:
    return struct.pack("<IIB23x", LOGIN_CAPABILITIES | CLIENT.SSL, 1 << 24, UTF8MB4_GENERAL_CI)


class _RawClient:
    """Just enough of the client side of the protocol, plain or through TLS, to send an
    SSLRequest where and how a test wants it, then log in and run a statement."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self._buffer = b""
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()

    def close(self) -> None:
        self.sock.close()

    def _recv(self) -> bytes:
        if self._tls is None:
            return self.sock.recv(65536)
        while True:
            try:
                return self._tls.read(65536)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                if not data:
                    return b""
                self._incoming.write(data)
            except ssl.SSLZeroReturnError:
                return b""

    def _send(self, data: bytes) -> None:
        if self._tls is None:
            self.sock.sendall(data)
        else:
            self._tls.write(data)
            self.sock.sendall(self._outgoing.read())

    def read_packet(self) -> tuple[int, bytes]:
        """(sequence id, payload); ConnectionError when the peer closed."""
        while True:
            if len(self._buffer) >= 4:
                length = int.from_bytes(self._buffer[:3], "little")
                if len(self._buffer) >= 4 + length:
                    seq, payload = self._buffer[3], self._buffer[4:4 + length]
                    self._buffer = self._buffer[4 + length:]
                    return seq, payload
            data = self._recv()
            if not data:
                raise ConnectionError("the connection was closed")
            self._buffer += data

    def write_packet(self, seq: int, payload: bytes) -> None:
        self._send(len(payload).to_bytes(3, "little") + bytes([seq]) + payload)

    def start_tls(self, ca: Path, ssl_request_seq: int) -> None:
        """Send the SSLRequest and the TLS ClientHello in one write, as a client that
        writes both before the server had a chance to read either may; then complete the
        handshake. TimeoutError: the hello was never answered."""
        assert not self._buffer, "bytes left over before TLS"
        context = ssl.create_default_context(cafile=str(ca))
        tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=self.host)
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        request = _ssl_request()
        self.sock.sendall(len(request).to_bytes(3, "little") + bytes([ssl_request_seq])
                          + request + self._outgoing.read())
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = self._outgoing.read()
                if pending:
                    self.sock.sendall(pending)
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the TLS handshake") from None
                self._incoming.write(data)
        pending = self._outgoing.read()
        if pending:
            self.sock.sendall(pending)
        self._tls = tls

    @property
    def tls_version(self) -> str | None:
        return self._tls.version() if self._tls is not None else None

    def login(self, greeting: _Greeting, seq: int, db: ScratchDb) -> bytes:
        """Send the HandshakeResponse (mysql_native_password); returns the reply payload."""
        assert greeting.plugin == "mysql_native_password", greeting.plugin
        caps = LOGIN_CAPABILITIES | (CLIENT.SSL if self._tls is not None else 0)
        scramble = _native_scramble(db.password, greeting.nonce)
        payload = (
            struct.pack("<IIB23x", caps, 1 << 24, UTF8MB4_GENERAL_CI)
            + db.user.encode() + b"\0" + bytes([len(scramble)]) + scramble
            + db.database.encode() + b"\0" + b"mysql_native_password\0"
        )
        self.write_packet(seq, payload)
        return self.read_packet()[1]

    def query_one_value(self, sql: str) -> bytes:
        """COM_QUERY of a statement returning one row of one column: its text value."""
        self.write_packet(0, b"\x03" + sql.encode())
        packets = [self.read_packet()[1] for _ in range(5)]  # count, column, EOF, row, EOF
        assert packets[0] == b"\x01", packets
        row = packets[3]
        return row[1:1 + row[0]]


@contextlib.contextmanager
def _raw(host: str, port: int) -> Iterator[_RawClient]:
    client = _RawClient(host, port)
    try:
        yield client
    finally:
        client.close()


# -- client side: verifying clients -----------------------------------------------------------


@pytest.fixture
def tls_gate(gate_factory: Callable[..., Gate], certs: Certs) -> Gate:
    """A gate that offers TLS to clients, with the certificate for 127.0.0.1."""
    return gate_factory(*_client_tls_args(certs))


def test_pymysql_verifies_the_certificate_and_uses_tls(
    tls_gate: Gate, certs: Certs, db: ScratchDb
) -> None:
    for _ in range(LOGINS):
        with contextlib.closing(_pymysql_tls(tls_gate, certs.ca)) as conn:
            sock = conn._sock
            assert isinstance(sock, ssl.SSLSocket), type(sock)
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
            peer = sock.getpeercert()
            assert peer is not None
            assert ("IP Address", "127.0.0.1") in peer["subjectAltName"]
            assert _one(conn, "SELECT CURRENT_USER(), DATABASE(), 6 * 7") == (
                f"{db.user}@%", db.database, 42)
    # A CA that did not sign mysqlgate's certificate: the client refuses in the handshake,
    # so a handshake with that certificate took place.
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        _pymysql_tls(tls_gate, certs.other_ca)
    assert "CERTIFICATE_VERIFY_FAILED" in str(excinfo.value)
    # Without TLS on loopback, as before.
    with contextlib.closing(_pymysql_plain(tls_gate)) as conn:
        assert not isinstance(conn._sock, ssl.SSLSocket)
        assert _one(conn, "SELECT 1") == (1,)


def test_mysqlclient_requires_and_verifies_tls(
    tls_gate: Gate, certs: Certs, db: ScratchDb
) -> None:
    # With this build (libmariadb 3.3), ssl_mode=REQUIRED goes on without TLS when the
    # server offers none (seen against MariaDB directly), so it proves nothing here; the
    # VERIFY_* modes insist on TLS and check the certificate.
    for ssl_mode, ssl_options in (
        ("REQUIRED", None),
        ("VERIFY_CA", {"ca": str(certs.ca)}),
        ("VERIFY_IDENTITY", {"ca": str(certs.ca)}),
    ):
        for _ in range(LOGINS):
            extra: dict[str, Any] = {"ssl": ssl_options} if ssl_options else {}
            conn = _mysqldb(tls_gate, ssl_mode=ssl_mode, **extra)
            try:
                assert _one(conn, "SELECT CURRENT_USER(), DATABASE(), 6 * 7") == (
                    f"{db.user}@%", db.database, 42)
            finally:
                conn.close()
    with pytest.raises(MySQLdb.OperationalError) as excinfo:
        _mysqldb(tls_gate, ssl_mode="VERIFY_IDENTITY", ssl={"ca": str(certs.other_ca)})
    assert excinfo.value.args[0] == CR.CR_SSL_CONNECTION_ERROR, excinfo.value


def test_mysql_connector_verifies_identity(tls_gate: Gate, certs: Certs, db: ScratchDb) -> None:
    for _ in range(LOGINS):
        conn = _connector(tls_gate, ssl_ca=str(certs.ca), ssl_verify_cert=True,
                          ssl_verify_identity=True)
        try:
            assert conn.is_secure
            assert _one(conn, "SELECT CURRENT_USER(), DATABASE(), 6 * 7") == (
                f"{db.user}@%", db.database, 42)
        finally:
            conn.close()
    with pytest.raises(mysql.connector.Error) as excinfo:
        _connector(tls_gate, ssl_ca=str(certs.other_ca), ssl_verify_cert=True,
                   ssl_verify_identity=True)
    assert "CERTIFICATE_VERIFY_FAILED" in str(excinfo.value)


def test_mariadb_cli_verifies_the_server_certificate(tls_gate: Gate, certs: Certs) -> None:
    verify = ("--ssl", f"--ssl-ca={certs.ca}", "--ssl-verify-server-cert")
    for _ in range(LOGINS):
        # `status` reports the client's own connection: its cipher is the client side's.
        result = _cli(tls_gate, *verify, "-e", "status; SELECT 6 * 7")
        assert result.returncode == 0, result.stderr
        assert "Cipher in use is" in result.stdout, result.stdout
        assert result.stdout.rstrip().endswith("42"), result.stdout
    result = _cli(tls_gate, "--ssl", f"--ssl-ca={certs.other_ca}", "--ssl-verify-server-cert",
                  "-e", "SELECT 1")
    assert result.returncode != 0
    assert "2026" in result.stderr, result.stderr  # TLS/SSL error: the certificate is not trusted


def test_ssl_request_and_tls_hello_in_one_write(
    gate_factory: Callable[..., Gate], certs: Certs, db: ScratchDb
) -> None:
    """A client may write its SSLRequest and its TLS ClientHello before mysqlgate reads
    either (libmariadb and PyMySQL write them back to back; under load they arrive
    together): the hello is the start of TLS, not more MySQL protocol."""
    gate = gate_factory(*_client_tls_args(certs), "--auth-plugin", "mysql_native_password")
    with _raw(gate.host, gate.port) as client:
        seq, payload = client.read_packet()
        greeting = _parse_greeting(payload)
        assert greeting.capabilities & CLIENT.SSL
        try:
            client.start_tls(certs.ca, seq + 1)
        except (TimeoutError, ConnectionError) as exc:
            pytest.fail(
                f"TLS handshake after an SSLRequest and a ClientHello sent in one write: "
                f"{exc!r} (no answer within {TIMEOUT:g} s means mysqlgate read the hello as "
                f"MySQL protocol)\n{gate.log_tail()}")
        assert client.tls_version in ("TLSv1.2", "TLSv1.3")
        reply = client.login(greeting, seq + 2, db)
        assert reply[:1] == b"\x00", _parse_err(reply)
        assert client.query_one_value("SELECT 6 * 7") == b"42"


# -- client side: no certificate, require_tls -------------------------------------------------


def test_tls_asked_of_a_gate_without_certificate(gate: Gate, certs: Certs) -> None:
    """Without listen.tls_cert the greeting does not offer TLS, so drivers that require it
    refuse on their own; one that asks anyway gets mysqlgate's error, not a hang."""
    with _raw(gate.host, gate.port) as client:
        seq, payload = client.read_packet()
        assert not _parse_greeting(payload).capabilities & CLIENT.SSL
        request = _ssl_request()
        client.write_packet(seq + 1, request)
        err = _parse_err(client.read_packet()[1])
        assert (err.code, err.sqlstate) == (ER_NOT_SUPPORTED_YET, "08004"), err
        assert err.message.startswith("mysqlgate:"), err.message
        assert "listen.tls_cert" in err.message, err.message
        with pytest.raises(ConnectionError):  # and the connection ends there
            client.read_packet()
    with pytest.raises(MySQLdb.OperationalError) as excinfo:
        _mysqldb(gate, ssl_mode="VERIFY_CA", ssl={"ca": str(certs.ca)})
    assert excinfo.value.args[0] == CR.CR_SSL_CONNECTION_ERROR, excinfo.value
    with pytest.raises(pymysql.err.OperationalError) as pymysql_excinfo:
        _pymysql_tls(gate, certs.ca)
    assert pymysql_excinfo.value.args[0] == CR.CR_SSL_CONNECTION_ERROR
    # Clients that do not insist are served without TLS.
    with contextlib.closing(gate.connect(**PYMYSQL_TIMEOUTS)) as conn:
        assert not isinstance(conn._sock, ssl.SSLSocket)
        assert _one(conn, "SELECT 1") == (1,)


def test_require_tls_keeps_loopback_and_unix_socket_open(
    gate_factory: Callable[..., Gate], certs: Certs
) -> None:
    gate = gate_factory(*_client_tls_args(certs), "--listen-require-tls", "true")
    with contextlib.closing(_pymysql_plain(gate)) as conn:
        assert _one(conn, "SELECT 1") == (1,)
    with contextlib.closing(_pymysql_plain(gate, unix_socket=gate.socket)) as conn:
        assert _one(conn, "SELECT 1") == (1,)
    with contextlib.closing(_pymysql_tls(gate, certs.ca)) as conn:
        assert isinstance(conn._sock, ssl.SSLSocket)
        assert _one(conn, "SELECT 1") == (1,)


@pytest.mark.skipif(
    REMOTE_ADDRESS is None,
    # listen.require_tls applies beyond loopback only, so it takes an address of this
    # machine's own that is not loopback; making one (a dummy interface) is not for a test
    # to do. What holds on loopback and the unix socket is tested above.
    reason="this machine has no IPv4 address beyond loopback to listen on",
)
def test_require_tls_beyond_loopback(
    gate_factory: Callable[..., Gate], certs: Certs, db: ScratchDb
) -> None:
    assert REMOTE_ADDRESS is not None
    remote, port = REMOTE_ADDRESS, _free_port_on(REMOTE_ADDRESS)
    gate = gate_factory(*_client_tls_args(certs), "--listen-require-tls", "true",
                        "--listen-allow-remote", "true", "--listen", f"{remote}:{port}")
    _wait_accepts(remote, port, gate)

    # Without TLS: refused, whatever the driver.
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        _pymysql_plain(gate, host=remote, port=port)
    code, message = excinfo.value.args
    assert code == ER_SECURE_TRANSPORT_REQUIRED, excinfo.value
    assert message.startswith("mysqlgate:") and "listen.require_tls" in message, message
    with pytest.raises(MySQLdb.OperationalError) as mysqldb_excinfo:
        _mysqldb(gate, host=remote, port=port, ssl_mode="DISABLED")
    assert mysqldb_excinfo.value.args[0] == ER_SECURE_TRANSPORT_REQUIRED
    result = _cli(gate, "--skip-ssl", "-e", "SELECT 1", host=remote, port=port)
    assert result.returncode != 0 and "3159" in result.stderr, result.stderr

    # With TLS, verified against the address itself: in.
    for _ in range(LOGINS):
        with contextlib.closing(_pymysql_tls(gate, certs.ca, host=remote, port=port)) as conn:
            assert isinstance(conn._sock, ssl.SSLSocket)
            assert _one(conn, "SELECT CURRENT_USER(), 6 * 7") == (f"{db.user}@%", 42)
    conn = _mysqldb(gate, host=remote, port=port, ssl_mode="VERIFY_IDENTITY",
                    ssl={"ca": str(certs.ca)})
    try:
        assert _one(conn, "SELECT 6 * 7") == (42,)
    finally:
        conn.close()
    connector = _connector(gate, host=remote, port=port, ssl_ca=str(certs.ca),
                           ssl_verify_cert=True, ssl_verify_identity=True)
    try:
        assert connector.is_secure
        assert _one(connector, "SELECT 6 * 7") == (42,)
    finally:
        connector.close()
    # Loopback on the same gate still needs none.
    with contextlib.closing(_pymysql_plain(gate)) as plain:
        assert _one(plain, "SELECT 1") == (1,)


# -- client side: the data path after the upgrade ---------------------------------------------


def test_work_over_tls(tls_gate: Gate, certs: Certs, db: ScratchDb) -> None:
    blob = os.urandom(2 * MiB)
    with contextlib.closing(_pymysql_tls(tls_gate, certs.ca)) as conn:
        assert isinstance(conn._sock, ssl.SSLSocket)
        with conn.cursor() as cursor:
            cursor.execute("CREATE TABLE t (id INT PRIMARY KEY, b LONGBLOB)")
            for i in range(200):  # many small round trips
                cursor.execute("SELECT %s, %s", (i, f"v{i}"))
                assert cursor.fetchone() == (i, f"v{i}")
            # 2 MiB up, as one statement, and checked by the server.
            cursor.execute("INSERT INTO t VALUES (1, %s)", (blob,))
            cursor.execute("SELECT LENGTH(b), SHA2(b, 256) FROM t WHERE id = 1")
            assert cursor.fetchone() == (len(blob), hashlib.sha256(blob).hexdigest())
            # 2 MiB down, twice over: a generated value and the stored one.
            cursor.execute("SELECT REPEAT('x', %s)", (2 * MiB,))
            assert cursor.fetchone() == ("x" * (2 * MiB),)
            cursor.execute("SELECT b FROM t WHERE id = 1")
            assert cursor.fetchone() == (blob,)
            # Many rows, and a transaction over several statements.
            cursor.execute(f"SELECT seq FROM {db.server.dialect.numbers(1, 20000)}")
            assert [row[0] for row in cursor.fetchall()] == list(range(1, 20001))
            cursor.execute("BEGIN")
            cursor.execute("INSERT INTO t VALUES (2, 'two')")
            cursor.execute("ROLLBACK")
            cursor.execute("SELECT COUNT(*) FROM t")
            assert cursor.fetchone() == (1,)
    # The same data through the other drivers: text protocol (mysqlclient) and binary
    # protocol prepared statements (mysql-connector).
    mysqldb = _mysqldb(tls_gate, ssl_mode="VERIFY_IDENTITY", ssl={"ca": str(certs.ca)})
    try:
        assert _one(mysqldb, "SELECT b FROM t WHERE id = 1") == (blob,)
    finally:
        mysqldb.close()
    connector = _connector(tls_gate, ssl_ca=str(certs.ca), ssl_verify_cert=True,
                           ssl_verify_identity=True)
    try:
        cursor = connector.cursor(prepared=True)
        cursor.execute("SELECT b, LENGTH(b) FROM t WHERE id = ?", (1,))
        assert [tuple(row) for row in cursor.fetchall()] == [(blob, len(blob))]
        cursor.close()
    finally:
        connector.close()


def test_concurrent_tls_clients(tls_gate: Gate, certs: Certs) -> None:
    """Several clients doing their TLS upgrades and queries at once."""
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            for i in range(3):
                with contextlib.closing(_pymysql_tls(tls_gate, certs.ca)) as conn:
                    assert _one(conn, "SELECT %s, LENGTH(REPEAT('y', %s))",
                                (n * 10 + i, 100_000)) == (n * 10 + i, 100_000)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=4 * TIMEOUT)
        assert not thread.is_alive(), "a TLS client hung"
    assert not errors, errors


# -- upstream side ----------------------------------------------------------------------------


def _ssl_args(certs: Certs, ssl_mode: str, ca: str | None) -> list[str]:
    args = ["--upstream-ssl-mode", ssl_mode]
    if ca is not None:
        args += ["--upstream-ssl-ca", str(getattr(certs, ca))]
    return args


@pytest.mark.parametrize(
    ("ssl_mode", "server_fixture", "ca", "tls"),
    [
        pytest.param("disabled", "tls_mariadb", None, False, id="disabled"),
        pytest.param("preferred", "tls_mariadb", None, True, id="preferred"),
        pytest.param("required", "tls_mariadb", None, True, id="required"),
        pytest.param("verify_ca", "tls_mariadb", "ca", True, id="verify_ca"),
        # verify_ca checks who signed the certificate, not the name in it.
        pytest.param("verify_ca", "wrong_name_mariadb", "ca", True, id="verify_ca-other-name"),
        pytest.param("verify_identity", "tls_mariadb", "ca", True, id="verify_identity"),
    ],
)
def test_upstream_ssl_mode(
    request: pytest.FixtureRequest,
    upstream_gate: Callable[..., Gate],
    scratch_on: Callable[[DbServer], ScratchDb],
    certs: Certs,
    ssl_mode: str,
    server_fixture: str,
    ca: str | None,
    tls: bool,
) -> None:
    server: DbServer = request.getfixturevalue(server_fixture)
    db = scratch_on(server)
    # Read the server's TLS counter on a connection of our own without TLS (PyMySQL would
    # take TLS even on the unix socket): what it counts from here on is mysqlgate's.
    root = server.root_connect(ssl_disabled=True)
    request.addfinalizer(root.close)
    accepts_before = _ssl_accepts(root)
    gate = upstream_gate(db, *_ssl_args(certs, ssl_mode, ca), "--pool-size", "3")
    # Three clients in transactions hold three upstream connections at once: each of them
    # is checked, not only the first one opened.
    conns = [gate.connect(**PYMYSQL_TIMEOUTS) for _ in range(3)]
    try:
        seen = []
        for conn in conns:
            _one(conn, "SELECT 1")
            with conn.cursor() as cursor:
                cursor.execute("BEGIN")
            thread_id = _one(conn, "SELECT CONNECTION_ID()")[0]
            seen.append((thread_id, _session_status(conn, "Ssl_cipher"),
                         _session_status(conn, "Ssl_version")))
        assert len({thread_id for thread_id, _, _ in seen}) == 3, seen
        for _, cipher, version in seen:
            if tls:
                assert cipher and version.startswith("TLS"), seen
            else:
                assert (cipher, version) == ("", ""), seen
    finally:
        for conn in conns:
            conn.close()
    accepts = _ssl_accepts(root) - accepts_before
    if tls:
        assert accepts >= 3, f"the server accepted {accepts} TLS connections"
    else:  # not even the startup probe: the server offers TLS, mysqlgate must not take it
        assert accepts == 0, f"the server accepted {accepts} TLS connections"
    if ssl_mode.startswith("verify"):
        check = _run_mysqlgate("check-config", "--upstream", gate.db.upstream_url,
                               *_ssl_args(certs, ssl_mode, ca))
        assert check.returncode == 0, check.stderr
        assert f"upstream {gate.db.user}@" in check.stdout, check.stdout


@pytest.mark.parametrize(
    ("ssl_mode", "server_fixture", "ca", "reason"),
    [
        pytest.param("verify_ca", "tls_mariadb", "other_ca", "issuer", id="verify_ca-wrong-ca"),
        # Without upstream.ssl_ca the system's CAs are used, and none of them signed it.
        pytest.param("verify_ca", "tls_mariadb", None, "issuer", id="verify_ca-system-cas"),
        pytest.param("verify_identity", "tls_mariadb", "other_ca", "issuer",
                     id="verify_identity-wrong-ca"),
        pytest.param("verify_identity", "wrong_name_mariadb", "ca", "mismatch",
                     id="verify_identity-wrong-name"),
    ],
)
def test_upstream_certificate_refused_at_startup(
    request: pytest.FixtureRequest,
    flavour: str,  # the server fixtures below are of this flavour
    scratch_on: Callable[[DbServer], ScratchDb],
    certs: Certs,
    ssl_mode: str,
    server_fixture: str,
    ca: str | None,
    reason: str,
) -> None:
    server: DbServer = request.getfixturevalue(server_fixture)
    db = scratch_on(server)
    args = ["--upstream", db.upstream_url, *_ssl_args(certs, ssl_mode, ca)]

    served = _run_mysqlgate(*args, "--listen", f"127.0.0.1:{free_port()}")
    log = served.stdout + served.stderr
    assert served.returncode == 2, f"exit {served.returncode}:\n{log}"
    assert "certificate" in log and "failed verification" in log, log
    assert f"upstream.ssl_mode = {ssl_mode}" in log, log
    assert "upstream.ssl_ca" in log, log  # the setting to check
    assert reason in log.lower(), log
    assert "listening on" not in log, log
    assert db.password not in log  # credentials never in logs (SPEC 6)

    check = _run_mysqlgate("check-config", *args)
    assert check.returncode == 1, f"exit {check.returncode}:\n{check.stdout}{check.stderr}"
    assert check.stderr.startswith(f"mysqlgate: cannot use upstream {db.host}:{db.port}"), (
        check.stderr)
    assert "failed verification" in check.stderr and reason in check.stderr.lower()
    assert db.password not in check.stdout + check.stderr


@pytest.mark.server_options(tls_version={"mysql": ""})  # MySQL offers TLS unless told not to
def test_upstream_tls_required_of_a_server_without_it(
    gate_factory: Callable[..., Gate], db: ScratchDb, private_server: DbServer
) -> None:
    """A server that offers no TLS: `required` fails clearly, naming the setting, and
    never falls back to a plain connection; `preferred` does fall back."""
    assert not private_server.offers_tls
    args = ["--upstream", db.upstream_url, "--upstream-ssl-mode", "required"]
    check = _run_mysqlgate("check-config", *args)
    assert check.returncode == 1, check.stdout + check.stderr
    assert check.stderr.startswith("mysqlgate: cannot use upstream"), check.stderr
    assert "does not offer TLS" in check.stderr and "ssl_mode" in check.stderr, check.stderr

    # The daemon may refuse to start over it (as over a failed certificate check) or start
    # and tell each client (as while a server is unreachable); either way, clearly.
    try:
        gate = gate_factory("--upstream-ssl-mode", "required")
    except GateError as exc:
        assert "exited with code 2" in str(exc), exc
        assert "does not offer TLS" in str(exc) and "ssl_mode" in str(exc), exc
    else:
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            gate.connect(**PYMYSQL_TIMEOUTS)
        message = excinfo.value.args[1]
        assert message.startswith("mysqlgate:"), message
        assert "does not offer TLS" in message and "ssl_mode" in message, message
        assert "does not offer TLS" in gate.log_text()

    gate = gate_factory("--upstream-ssl-mode", "preferred")
    with contextlib.closing(gate.connect(**PYMYSQL_TIMEOUTS)) as conn:
        assert _session_status(conn, "Ssl_cipher") == ""
        assert _one(conn, "SELECT 6 * 7") == (42,)
