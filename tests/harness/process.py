"""What the harness's child processes (mariadbd, mysqlgate) share: stopping them."""

from __future__ import annotations

import signal
import subprocess
from typing import Self


def terminate(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, wait up to `timeout` s, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def kill(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL, as a crash would."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()


class Managed:
    """`with X(...) as x:` starts x and always closes it."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
