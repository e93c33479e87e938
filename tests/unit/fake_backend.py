"""A stand-in for backend.BackendConnection, for testing the pool without sockets: it
has the attributes the pool reads and records what the pool did to it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class FakeBackend:
    """An upstream connection as the pool sees it: a key, ages, closed or not."""

    def __init__(self, thread_id: int, key: int = 0, now: float | None = None) -> None:
        self.thread_id = thread_id
        self.key = key
        self.created_at = time.monotonic() if now is None else now
        self.last_active = self.created_at
        self.closed = False
        self.busy = False  # a command in flight: given back like that, it is aborted
        self.closed_how: str | None = None  # "close" (polite) or "abort"
        self.session: Any = None
        self._close_callbacks: list[Callable[[FakeBackend], None]] = []

    def on_close(self, callback: Callable[[FakeBackend], None]) -> None:
        self._close_callbacks.append(callback)

    def close(self) -> None:
        self._end("close")

    def abort(self, reason: BaseException | None = None) -> None:
        self._end("abort")

    def die(self) -> None:
        """The server closed it (KILL, wait_timeout, a restart): as connection_lost."""
        self._end("died")
        for callback in self._close_callbacks:
            callback(self)

    def _end(self, how: str) -> None:
        if not self.closed:
            self.closed = True
            self.closed_how = how

    async def ping(self) -> None:
        if self.closed:
            raise ConnectionResetError("upstream connection is closed")

    def __repr__(self) -> str:
        return f"<FakeBackend {self.thread_id} key={self.key} closed={self.closed}>"
