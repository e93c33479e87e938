"""Test harness: a throwaway MariaDB server, scratch databases and accounts on it,
mysqlgate processes in front of them, and TLS certificates made for the test. The pytest
fixtures built on these live in tests/conftest.py."""

from .certs import CertAuthority, ServerCert
from .clients import LoginOnly, fetch_rows, wait_until
from .database import ScratchDb
from .gate import Gate, GateError
from .mariadb import MariaDBError, MariaDBServer, find_mariadbd, free_port

__all__ = [
    "CertAuthority",
    "Gate",
    "GateError",
    "LoginOnly",
    "MariaDBError",
    "MariaDBServer",
    "ScratchDb",
    "ServerCert",
    "find_mariadbd",
    "fetch_rows",
    "free_port",
    "wait_until",
]
