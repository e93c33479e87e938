"""Test harness: throwaway MariaDB and MySQL servers, scratch databases and accounts on
them, mysqlgate processes in front of them, and TLS certificates made for the test. The
pytest fixtures built on these live in tests/conftest.py."""

from .certs import CertAuthority, ServerCert
from .clients import LoginOnly, fetch_rows, wait_until
from .database import ScratchDb
from .dialect import Dialect
from .gate import Gate, GateError
from .mariadb import MariaDBServer, find_mariadbd
from .mysql import MySQLServer
from .server import DbServer, ServerError, free_port

FLAVOURS = ("mariadb", "mysql")


def server_class(flavour: str) -> type[DbServer]:
    """The DbServer subclass for "mariadb" or "mysql"."""
    return {"mariadb": MariaDBServer, "mysql": MySQLServer}[flavour]


__all__ = [
    "FLAVOURS",
    "CertAuthority",
    "Gate",
    "GateError",
    "LoginOnly",
    "MariaDBServer",
    "MySQLServer",
    "ScratchDb",
    "ServerCert",
    "ServerError",
    "DbServer",
    "Dialect",
    "fetch_rows",
    "find_mariadbd",
    "free_port",
    "server_class",
    "wait_until",
]
