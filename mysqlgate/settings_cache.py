"""Settings statements the server already accepted, and what it answered: mysqlgate
answers them again itself, with no round trip (issue 6: a new client connection should
cost about one round trip to the server, and drivers open with SET statements).

Only statements whose outcome cannot depend on the session are kept (sql_effects:
Effect.SETTINGS: literal values, SET NAMES, USE); one that failed, warned, or answered
with anything but OK packets never is, so an error is never answered from here. The
SET itself reaches the server later, replayed ahead of the client's next statement.
"""

from __future__ import annotations

from collections import OrderedDict

from .protocol.messages import SessionState as TrackedChanges

CAPACITY = 1024  # distinct statements; drivers send a handful each


class SettingsCache:
    """statement text -> what the trackers reported for each of its statements."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._answers: OrderedDict[bytes, tuple[TrackedChanges, ...]] = OrderedDict()
        self.hits = 0

    def get(self, statement: bytes) -> tuple[TrackedChanges, ...] | None:
        answers = self._answers.get(statement)
        if answers is not None:
            self._answers.move_to_end(statement)
            self.hits += 1
        return answers

    def put(self, statement: bytes, answers: tuple[TrackedChanges, ...]) -> None:
        self._answers[statement] = answers
        self._answers.move_to_end(statement)
        while len(self._answers) > self.capacity:
            self._answers.popitem(last=False)

    def __len__(self) -> int:
        return len(self._answers)
