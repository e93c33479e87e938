"""Test harness: a throwaway MariaDB server, scratch databases and accounts on it, and
mysqlgate processes in front of them. The pytest fixtures built on these live in
tests/conftest.py."""

from .clients import LoginOnly
from .database import ScratchDb
from .gate import Gate, GateError
from .mariadb import MariaDBError, MariaDBServer, find_mariadbd, free_port

__all__ = [
    "Gate",
    "GateError",
    "LoginOnly",
    "MariaDBError",
    "MariaDBServer",
    "ScratchDb",
    "find_mariadbd",
    "free_port",
]
