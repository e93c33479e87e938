"""Giving the memory of large results back to the system (glibc's malloc; elsewhere nothing).

mysqlgate reads up to pool.result_buffer ahead for a client that reads slower than the
server sends: megabytes, in chunks of up to 256 KiB (the event loop's reads). After the
first such chunk is freed glibc serves the later ones from its heap, and a freed chunk
there goes back to the system only when nothing above it is in use: resident memory
stays at the high-water mark of the read-ahead. The soak's KILL-only run on MySQL
(`bench/soak.py --minutes 3 --server mysql --faults kill --seed 71`) climbed in steps
from 42 to 88 MiB and stayed there.

malloc_trim(0) returns every free page inside the heap (it never moves a live object),
in 1-3 ms for a 100 MiB heap: done soon after a client's read-ahead drained or the
client left (at most once a second), and now and then besides. Keeping large chunks
out of the heap instead (mallopt's M_MMAP_THRESHOLD held at 128 KiB) held resident
memory lower still, but doubled mysqlgate's CPU per MB of large results with 4 readers
(bench/large_result.py: 0.09-0.13 -> 0.24-0.27 s per 100 MB): every chunk was a fresh
mapping to fault in and zero.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable

GIVE_BACK_EVERY = 30.0  # seconds: free pages returned at least this often
SOONEST = 1.0  # seconds between two returns, however often large buffers are freed

_libc: ctypes.CDLL | None | bool = False  # False: not looked for yet


def _glibc() -> ctypes.CDLL | None:
    """glibc, or None (musl, macOS: no malloc_trim, and nothing of this to fix)."""
    global _libc
    if _libc is False:
        _libc = None
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name)
            libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
            trim = libc.malloc_trim
        except (OSError, AttributeError, TypeError):
            return None
        trim.argtypes = [ctypes.c_size_t]
        _libc = libc
    return _libc if isinstance(_libc, ctypes.CDLL) else None


def give_back() -> bool:
    """Return the heap's free pages to the system; True if glibc released any."""
    libc = _glibc()
    return libc is not None and libc.malloc_trim(0) == 1


class GiveBack:
    """When to return free pages: the sessions say when a large buffer was freed, the
    janitor asks on each of its rounds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 release: Callable[[], bool] = give_back) -> None:
        self._clock = clock
        self._release = release
        self._last = clock()
        self._freed = False

    def freed(self) -> None:
        """A client's read-ahead drained, or a client left (with whatever it buffered)."""
        self._freed = True

    def due(self) -> bool:
        since = self._clock() - self._last
        return since >= GIVE_BACK_EVERY or self._freed and since >= SOONEST

    def maybe(self) -> bool:
        """Return free pages if it is time; True if it was."""
        if not self.due():
            return False
        self._last = self._clock()
        self._freed = False
        self._release()
        return True
