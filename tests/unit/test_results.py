"""results.py: ResponseScanner finds where each command's response ends.

Every response is a hand-made byte stream (tests/unit/wire.py). Each is scanned fed
whole, one byte at a time and in random chunks (fixed seeds), the way backend.py feeds
it: scan, and on NEED_DATA drop what was consumed and wait for more. All feedings must
report the same stops (event, packet, done, status), never stop inside a packet, and
end with the same status and last sequence id.

Every test here runs twice: with the compiled row stepping (protocol/_scan.c) and with
its pure-Python fallback.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import pytest

from mysqlgate.protocol import _scan, results
from mysqlgate.protocol.constants import COMMAND
from mysqlgate.protocol.errors import ProtocolViolation
from mysqlgate.protocol.results import Event, Phase, ResponseScanner

from .wire import (
    AUTOCOMMIT,
    CURSOR_EXISTS,
    FULL,
    MORE_RESULTS,
    STATE_CHANGED,
    boundaries,
    column_def,
    eof,
    err,
    frame,
    lenenc,
    lstr,
    ok,
    prepare_ok,
    text_row,
)


@pytest.fixture(autouse=True, params=["compiled", "python"])
def row_stepping(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    hop = _scan.hop_rows if request.param == "compiled" else results.py_hop_rows
    monkeypatch.setattr(results, "hop_rows", hop)


QUERY = COMMAND.COM_QUERY
PREPARE = COMMAND.COM_STMT_PREPARE
EXECUTE = COMMAND.COM_STMT_EXECUTE
FETCH = COMMAND.COM_STMT_FETCH
LAST_ROW_SENT = 0x0080


@dataclass(frozen=True)
class Stop:
    event: int
    packet: bytes  # wire bytes (header included) of the packet that raised the event
    done: bool
    status: int
    end: int  # stream offset just after that packet


@dataclass
class Trace:
    stops: list[Stop] = field(default_factory=list)
    status: int = 0
    last_seq: int = -1
    done: bool = False
    consumed: int = 0
    results: int = 0
    statement_id: int = 0


def run_scanner(command: int, deprecate_eof: bool, data: bytes, cuts: list[int]) -> Trace:
    """Feed `data` to a fresh scanner in pieces ending at `cuts`."""
    scanner = ResponseScanner(command, deprecate_eof)
    starts = set(boundaries(data))
    trace = Trace()
    buf: bytes | bytearray = bytearray()
    base = 0  # stream offset of buf[0]
    fed = 0
    for cut in cuts:
        if cuts == [len(data)]:
            buf = data  # backend.py scans a whole read without copying it
        else:
            assert isinstance(buf, bytearray)
            buf += data[fed:cut]
        fed = cut
        pos = 0
        while not scanner.done:
            new = scanner.scan(buf, pos)
            assert pos <= new <= len(buf)
            if base + new not in starts:
                # Only a row may be cut: consumed to the end of what came, the rest owed.
                assert scanner.skip and new == len(buf) and scanner.phase == Phase.ROWS, \
                    f"scanner stopped inside a packet at {base + new}"
                assert scanner.event == Event.NEED_DATA
                assert base + new + scanner.skip in starts
            pos = new
            if scanner.event == Event.NEED_DATA:
                rest = buf[pos:]
                complete = len(rest) >= 4 and 4 + int.from_bytes(rest[:3], "little") <= len(rest)
                assert not complete, "NEED_DATA with a complete packet in the buffer"
                break
            assert scanner.event_end == pos
            trace.stops.append(Stop(
                scanner.event,
                bytes(buf[scanner.event_start - 4 : scanner.event_end]),
                scanner.done,
                scanner.status,
                base + scanner.event_end,
            ))
        if isinstance(buf, bytearray):
            del buf[:pos]  # what backend.py keeps is only the unconsumed tail
        base += pos
        if scanner.done:
            break
    trace.status = scanner.status
    trace.last_seq = scanner.last_seq
    trace.done = scanner.done
    trace.consumed = base
    trace.results = scanner.results
    trace.statement_id = scanner.statement_id
    return trace


@dataclass
class Case:
    command: int
    deprecate_eof: bool
    payloads: list[bytes]
    stops: list[tuple[int, int, bool]]  # (event, index of the packet, done after it)
    status: int  # final scanner.status
    results: int = 0
    statement_id: int = 0
    seqs: list[int] | None = None  # first sequence id of each packet (default: counting)

    def wire(self) -> tuple[bytes, list[bytes], int]:
        """The stream, each packet's wire bytes, and the last physical sequence id."""
        packets = []
        nxt = 1
        for i, payload in enumerate(self.payloads):
            data, nxt = frame(payload, self.seqs[i] if self.seqs else nxt)
            packets.append(data)
        return b"".join(packets), packets, (nxt - 1) % 256


# -- the streams ------------------------------------------------------------------------

ROW_A = text_row(b"1", b"alpha")
ROW_B = text_row(None, b"beta")
DEFS_2 = [column_def(b"id", 3), column_def(b"name")]
TRACKED_TAIL = b"\x00" + lstr(b"\x00" + lstr(lstr(b"autocommit") + lstr(b"OFF")) + b"\x02\x011")


def result_set(deprecate_eof: bool, rows: list[bytes], closing: bytes,
               defs_status: int = AUTOCOMMIT) -> list[bytes]:
    payloads = [lenenc(len(DEFS_2)), *DEFS_2]
    if not deprecate_eof:
        payloads.append(eof(defs_status))
    return [*payloads, *rows, closing]


def closing(deprecate_eof: bool, status: int) -> bytes:
    return ok(status, header=0xFE) if deprecate_eof else eof(status)


def build_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for dep in (False, True):
        mode = "deprecate-eof" if dep else "classic-eof"
        close_event = Event.OK if dep else Event.EOF

        cases[f"ok/{mode}"] = Case(
            QUERY, dep, [ok(AUTOCOMMIT, affected=1, insert_id=300)],
            [(Event.OK, 0, True)], AUTOCOMMIT, results=1)
        cases[f"ok-with-session-tracker/{mode}"] = Case(
            QUERY, dep, [ok(STATE_CHANGED, tail=TRACKED_TAIL)],
            [(Event.OK, 0, True)], STATE_CHANGED, results=1)
        cases[f"err/{mode}"] = Case(QUERY, dep, [err()], [(Event.ERR, 0, True)], 0)

        payloads = result_set(dep, [ROW_A, ROW_B], closing(dep, AUTOCOMMIT))
        cases[f"result-set/{mode}"] = Case(
            QUERY, dep, payloads, [(close_event, len(payloads) - 1, True)], AUTOCOMMIT,
            results=1)

        payloads = result_set(dep, [], closing(dep, AUTOCOMMIT | 0x20))
        cases[f"empty-result-set/{mode}"] = Case(
            QUERY, dep, payloads, [(close_event, len(payloads) - 1, True)], AUTOCOMMIT | 0x20,
            results=1)

        # CALL p(): two result sets, each closed with MORE_RESULTS, then the CALL's OK.
        first = result_set(dep, [ROW_A], closing(dep, AUTOCOMMIT | MORE_RESULTS),
                           AUTOCOMMIT | MORE_RESULTS)
        second = result_set(dep, [ROW_A, ROW_B], closing(dep, AUTOCOMMIT | MORE_RESULTS),
                            AUTOCOMMIT | MORE_RESULTS)
        payloads = [*first, *second, ok(AUTOCOMMIT)]
        cases[f"multi-result-call/{mode}"] = Case(
            QUERY, dep, payloads,
            [(close_event, len(first) - 1, False),
             (close_event, len(first) + len(second) - 1, False),
             (Event.OK, len(payloads) - 1, True)],
            AUTOCOMMIT, results=3)

        # `UPDATE ...; SELECT ...` with multi-statements: an OK, then a result set.
        rs = result_set(dep, [ROW_A], closing(dep, AUTOCOMMIT))
        payloads = [ok(AUTOCOMMIT | MORE_RESULTS, affected=2), *rs]
        cases[f"multi-statement/{mode}"] = Case(
            QUERY, dep, payloads,
            [(Event.OK, 0, False), (close_event, len(payloads) - 1, True)],
            AUTOCOMMIT, results=2)

        payloads = result_set(dep, [ROW_A, ROW_B, err(1317, b"Query execution was interrupted",
                                                      b"70100")], b"")[:-1]
        cases[f"err-in-rows/{mode}"] = Case(
            QUERY, dep, payloads, [(Event.ERR, len(payloads) - 1, True)],
            0 if dep else AUTOCOMMIT)

        payloads = [b"\xfb/tmp/data.csv", ok(AUTOCOMMIT, affected=3)]
        cases[f"local-infile/{mode}"] = Case(
            QUERY, dep, payloads, [(Event.LOCAL_INFILE, 0, False), (Event.OK, 1, True)],
            AUTOCOMMIT, results=1, seqs=[1, 4])  # the client's file went as seq 2 and 3

        # COM_STMT_PREPARE: params then columns, each followed by an EOF in classic mode.
        end_event = Event.END if dep else Event.EOF
        for params, columns in ((2, 3), (2, 0), (0, 3)):
            payloads = [prepare_ok(0x01020304, columns, params)]
            for count, name in ((params, b"?"), (columns, b"c")):
                if count:
                    payloads += [column_def(name)] * count
                    if not dep:
                        payloads.append(eof(AUTOCOMMIT))
            cases[f"prepare-{params}-params-{columns}-columns/{mode}"] = Case(
                PREPARE, dep, payloads,
                [(Event.PREPARE_OK, 0, False), (end_event, len(payloads) - 1, True)],
                0 if dep else AUTOCOMMIT, statement_id=0x01020304)
        cases[f"prepare-nothing/{mode}"] = Case(
            PREPARE, dep, [prepare_ok(5, 0, 0)], [(Event.PREPARE_OK, 0, True)], 0,
            statement_id=5)
        cases[f"prepare-err/{mode}"] = Case(PREPARE, dep, [err(1064, b"syntax", b"42000")],
                                            [(Event.ERR, 0, True)], 0)

        payloads = [*DEFS_2, closing(dep, AUTOCOMMIT)]
        cases[f"field-list/{mode}"] = Case(
            COMMAND.COM_FIELD_LIST, dep, payloads, [(Event.EOF, 2, True)], AUTOCOMMIT)
        cases[f"field-list-err/{mode}"] = Case(
            COMMAND.COM_FIELD_LIST, dep, [err()], [(Event.ERR, 0, True)], 0)

        cases[f"statistics/{mode}"] = Case(
            COMMAND.COM_STATISTICS, dep,
            [b"Uptime: 1203  Threads: 1  Questions: 46  Slow queries: 0  Opens: 33  "
             b"Open tables: 26  Queries per second avg: 0.038"],
            [(Event.END, 0, True)], 0)
        cases[f"ping/{mode}"] = Case(COMMAND.COM_PING, dep, [ok(AUTOCOMMIT)],
                                     [(Event.OK, 0, True)], AUTOCOMMIT)
        cases[f"init-db-err/{mode}"] = Case(
            COMMAND.COM_INIT_DB, dep, [err(1049, b"Unknown database 'x'", b"42000")],
            [(Event.ERR, 0, True)], 0)

        # COM_STMT_EXECUTE: binary rows start with 0x00.
        binary_row = b"\x00\x00" + struct.pack("<i", 7) + lstr(b"seven")
        payloads = result_set(dep, [binary_row, binary_row], closing(dep, AUTOCOMMIT))
        cases[f"execute-binary-rows/{mode}"] = Case(
            EXECUTE, dep, payloads, [(close_event, len(payloads) - 1, True)], AUTOCOMMIT,
            results=1)
        cases[f"execute-ok/{mode}"] = Case(
            EXECUTE, dep, [ok(AUTOCOMMIT, affected=1)], [(Event.OK, 0, True)], AUTOCOMMIT,
            results=1)
        payloads = [binary_row, closing(dep, AUTOCOMMIT | CURSOR_EXISTS | LAST_ROW_SENT)]
        cases[f"fetch/{mode}"] = Case(
            FETCH, dep, payloads, [(close_event, 1, True)],
            AUTOCOMMIT | CURSOR_EXISTS | LAST_ROW_SENT, results=1)

    # Classic mode only: an EOF is a 0xFE packet shorter than 9 bytes; a row that
    # starts with 0xFE (an 8-byte length prefix) is 9 bytes or more.
    fe_rows = [b"\xfe" + b"\x00" * 8, b"\xfe" + struct.pack("<Q", 20) + b"x" * 20]
    payloads = result_set(False, [ROW_A, *fe_rows, ROW_B], eof(AUTOCOMMIT))
    cases["rows-led-by-0xfe/classic-eof"] = Case(
        QUERY, False, payloads, [(Event.EOF, len(payloads) - 1, True)], AUTOCOMMIT, results=1)

    # COM_STMT_EXECUTE opening a cursor: the EOF after the definitions ends the reply.
    payloads = [lenenc(2), *DEFS_2, eof(AUTOCOMMIT | CURSOR_EXISTS)]
    cases["execute-with-cursor/classic-eof"] = Case(
        EXECUTE, False, payloads, [(Event.EOF, 3, True)], AUTOCOMMIT | CURSOR_EXISTS)
    return cases


CASES = build_cases()


def small_chunkings(name: str, size: int) -> dict[str, list[int]]:
    rng = random.Random(f"chunks/{name}")
    cuts = []
    pos = 0
    while pos < size:
        pos = min(size, pos + rng.randint(1, 13))
        cuts.append(pos)
    return {"whole": [size], "byte-by-byte": list(range(1, size + 1)), "random": cuts}


StopKey = tuple[int, bytes, bool, int]


def expected_stops(case: Case, packets: list[bytes]) -> list[StopKey]:
    out = []
    for event, index, done in case.stops:
        end = sum(len(p) for p in packets[: index + 1])
        out.append((event, packets[index], done, end))
    return out


def keys(stops: list[Stop]) -> list[StopKey]:
    return [(s.event, s.packet, s.done, s.end) for s in stops]


def brief(stops: list[StopKey]) -> list[tuple[int, bytes, int, bool, int]]:
    """(event, the packet's first bytes, its size, done, end): readable failures."""
    return [(event, packet[:12], len(packet), done, end) for event, packet, done, end in stops]


@pytest.mark.parametrize("name", CASES)
def test_scanner(name: str) -> None:
    case = CASES[name]
    data, packets, last_seq = case.wire()
    traces = {
        how: run_scanner(case.command, case.deprecate_eof, data, cuts)
        for how, cuts in small_chunkings(name, len(data)).items()
    }
    whole = traces["whole"]
    assert keys(whole.stops) == expected_stops(case, packets)
    assert whole.done
    assert whole.consumed == len(data)
    assert whole.status == case.status
    assert whole.last_seq == last_seq
    assert whole.results == case.results
    assert whole.statement_id == case.statement_id
    for how, trace in traces.items():
        assert trace == whole, how


# -- 16 MiB rows -----------------------------------------------------------------


def big_chunkings(name: str, data: bytes) -> dict[str, list[int]]:
    near_headers: set[int] = set()
    for start in boundaries(data)[:-1]:
        near_headers.update(range(max(start - 2, 1), min(start + 6, len(data))))
    rng = random.Random(f"big/{name}")
    cuts = []
    pos = 0
    while pos < len(data):
        pos = min(len(data), pos + rng.randint(1, 5 << 20))
        cuts.append(pos)
    return {
        "whole": [len(data)],
        "near-headers": sorted(near_headers | {len(data)}),
        "random": cuts,
    }


@pytest.mark.parametrize("deprecate_eof", [False, True], ids=["classic-eof", "deprecate-eof"])
@pytest.mark.parametrize(
    ("lead", "tail"),
    [
        (0xFE, b""),  # exactly 0xFFFFFF bytes: the row ends with an empty packet
        (0xFE, b"\xfe\x00\x00\x02\x00"),  # the continuation looks like an EOF
        (0x00, b"\x00\x00\x00\x02\x00\x00\x00"),  # ... like an OK
        (0xFF, b"\xff\x15\x04#28000no"),  # ... like an ERR
    ],
    ids=["fe-exact", "fe", "00", "ff"],
)
def test_split_row_does_not_end_the_result(deprecate_eof: bool, lead: int, tail: bytes) -> None:
    row = bytes((lead,)) + b"r" * (FULL - 1) + tail
    payloads = result_set(deprecate_eof, [ROW_A, row, ROW_B], closing(deprecate_eof, AUTOCOMMIT))
    close_event = Event.OK if deprecate_eof else Event.EOF
    case = Case(QUERY, deprecate_eof, payloads,
                [(close_event, len(payloads) - 1, True)], AUTOCOMMIT, results=1)
    data, packets, last_seq = case.wire()
    name = f"{lead}/{len(tail)}/{deprecate_eof}"
    traces = {
        how: run_scanner(QUERY, deprecate_eof, data, cuts)
        for how, cuts in big_chunkings(name, data).items()
    }
    whole = traces["whole"]
    assert brief(keys(whole.stops)) == brief(expected_stops(case, packets))
    assert whole.status == AUTOCOMMIT
    assert whole.last_seq == last_seq == len(packets) + 1  # the row took two ids
    for how, trace in traces.items():
        assert trace == whole, how


def test_a_row_cut_by_the_end_of_a_read_is_passed_on_at_once() -> None:
    """A read that ends inside a row is consumed whole (the proxy forwards it as it
    came, with no copy and no wait for the row's end); the rest of the row is skipped
    in the next reads, and the result still ends where it ends."""
    payloads = result_set(False, [ROW_A, text_row(b"7", b"x" * 1000), ROW_B], eof(AUTOCOMMIT))
    data = b"".join(frame(p, i + 1)[0] for i, p in enumerate(payloads))
    row_end = data.index(b"x" * 1000) + 1000  # the long value ends its row
    cut = row_end - 700
    scanner = ResponseScanner(QUERY, False)
    assert scanner.scan(data[:cut], 0) == cut
    assert (scanner.event, scanner.skip, scanner.rows) == (Event.NEED_DATA, 700, 2)
    assert scanner.scan(data[cut : cut + 200], 0) == 200  # still inside the row
    assert (scanner.event, scanner.skip) == (Event.NEED_DATA, 500)
    rest = data[cut + 200 :]
    assert scanner.scan(rest, 0) == len(rest)
    assert scanner.done and scanner.event == Event.EOF
    assert (scanner.rows, scanner.skip, scanner.last_seq) == (3, 0, len(payloads))


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_a_row_of_16_mib_and_more_never_waits_in_a_buffer(deprecate_eof: bool) -> None:
    """A split row (first part exactly 16 MiB - 1, then its continuation) streams like
    any other: fed in 64 KiB reads, every read but those ending inside a header is
    consumed to its end, so the backend never holds megabytes of it."""
    row = b"\x00" + b"r" * (FULL + 1000)  # lead byte 0x00: not mistaken for an end
    payloads = result_set(deprecate_eof, [ROW_A, row, ROW_B], closing(deprecate_eof, AUTOCOMMIT))
    data, _, _ = Case(QUERY, deprecate_eof, payloads, [], AUTOCOMMIT).wire()
    scanner = ResponseScanner(QUERY, deprecate_eof)
    tail = b""
    longest = 0
    for at in range(0, len(data), 65536):
        buf = tail + data[at : at + 65536]
        pos = 0
        while not scanner.done:
            pos = scanner.scan(buf, pos)
            if scanner.event == Event.NEED_DATA:
                break
        tail = buf[pos:]
        longest = max(longest, len(tail))
    assert scanner.done and scanner.rows == 3
    assert longest < 64, f"{longest} bytes of a row waited for the next read"


# -- misuse ---------------------------------------------------------------------


def test_data_after_the_end_of_a_response_is_refused() -> None:
    data = frame(ok(AUTOCOMMIT), 1)[0]
    scanner = ResponseScanner(COMMAND.COM_PING, False)
    assert scanner.scan(data + data, 0) == len(data)
    assert scanner.done
    with pytest.raises(ProtocolViolation):
        scanner.scan(data + data, len(data))


def test_short_prepare_ok_is_refused() -> None:
    scanner = ResponseScanner(PREPARE, False)
    with pytest.raises(ProtocolViolation):
        scanner.scan(frame(b"\x00\x01\x00\x00\x00", 1)[0], 0)


def test_need_data_on_an_empty_buffer() -> None:
    scanner = ResponseScanner(QUERY, False)
    assert scanner.scan(b"\x01\x00", 0) == 0
    assert scanner.event == Event.NEED_DATA
    assert not scanner.done
    assert scanner.last_seq == -1
