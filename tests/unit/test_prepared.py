"""prepared.py: statement ids, the upstream statement cache, and the COM_STMT_* packets
rewritten for another connection's statement."""

from __future__ import annotations

import struct
from collections import Counter

from mysqlgate.prepared import (
    LAST_PREPARED,
    ClientStatements,
    StatementRegistry,
    UpstreamStatements,
    close_packet,
    execute_payload,
    prepare_answer,
    with_answer_id,
    with_statement_id,
)


def _execute(statement_id: int, params: int, bound: int, types: bytes = b"",
             values: bytes = b"") -> bytes:
    head = b"\x17" + struct.pack("<IBI", statement_id, 0, 1)
    if not params:
        return head
    return head + bytes((params + 7) // 8) + bytes((bound,)) + types + values


def test_execute_that_binds_types_is_aimed_and_records_them() -> None:
    types = b"\xfd\x00\x08\x00"
    payload = _execute(7, 2, 1, types, b"\x01a\x02\x00\x00\x00\x00\x00\x00\x00")
    out, bound, sent = execute_payload(payload, 42, 2, None, None)
    assert out == _execute(42, 2, 1, types, b"\x01a\x02\x00\x00\x00\x00\x00\x00\x00")
    assert bound == types and sent == types


def test_execute_without_types_gets_the_clients_types_on_another_statement() -> None:
    types = b"\xfd\x00"
    payload = _execute(7, 1, 0, values=b"\x01b")
    out, bound, sent = execute_payload(payload, 42, 1, types, None)
    assert out == _execute(42, 1, 1, types, b"\x01b")  # the flag now says: types follow
    assert bound == types and sent is None
    # Where the upstream statement already has them bound, nothing is added.
    out, bound, _ = execute_payload(payload, 42, 1, types, types)
    assert out == _execute(42, 1, 0, values=b"\x01b")


def test_execute_of_a_statement_without_parameters() -> None:
    out, bound, sent = execute_payload(_execute(7, 0, 0), LAST_PREPARED, 0, None, None)
    assert out == _execute(LAST_PREPARED, 0, 0) and bound is None and sent is None


def test_other_commands_get_the_upstream_id() -> None:
    fetch = b"\x1c" + struct.pack("<II", 7, 100)
    assert with_statement_id(fetch, 9) == b"\x1c" + struct.pack("<II", 9, 100)
    assert close_packet(9) == b"\x05\x00\x00\x00\x19\x09\x00\x00\x00"


def test_prepare_answer_with_another_id() -> None:
    first = b"\x00" + struct.pack("<IHHBH", 77, 3, 2, 0, 0)
    framed = bytes((len(first), 0, 0, 1)) + first + b"\x01\x00\x00\x02\xfe"
    assert prepare_answer(framed) == (77, 3, 2)
    renamed = with_answer_id(framed, 5)
    assert prepare_answer(renamed) == (5, 3, 2)
    assert renamed[9:] == framed[9:]


def test_client_ids_are_never_reused_as_zero_or_last_prepared() -> None:
    statements = ClientStatements()
    first = statements.add(b"SELECT 1", 0, 1)
    second = statements.add(b"SELECT 1", 0, 1)  # the same text twice: two statements
    assert (first.id, second.id) == (1, 2)
    statements._next_id = 0xFFFFFFFE
    last = statements.add(b"SELECT 2", 0, 1)
    wrapped = statements.add(b"SELECT 3", 0, 1)
    assert last.id == 0xFFFFFFFE and wrapped.id == 1
    assert statements.pop(2) is second and statements.get(2) is None


def test_upstream_statements_keep_a_limit_and_close_unused_ones() -> None:
    upstream = UpstreamStatements(limit=2)
    assert upstream.add(b"a", 1, 0) == []
    assert upstream.add(b"b", 2, 0) == []
    upstream.get(b"a")  # used: b is now the least recently used
    assert upstream.add(b"c", 3, 0) == [2]
    assert upstream.get(b"b") is None
    assert sorted(upstream.drop_unused(Counter({b"a": 1}))) == [3]
    assert len(upstream) == 1


def test_registry_counts_open_texts_and_forgets_answers() -> None:
    registry = StatementRegistry()
    registry.opened(b"a")
    registry.opened(b"a")
    registry.closed(b"a")
    assert registry.open[b"a"] == 1
    registry.closed(b"a")
    assert b"a" not in registry.open
    registry.remember_answer(b"a", False, b"framed")
    assert registry.answer(b"a", False) == b"framed"
    assert registry.answer(b"a", True) is None  # another shape of answer
    registry.forget_answers()
    assert registry.answer(b"a", False) is None
