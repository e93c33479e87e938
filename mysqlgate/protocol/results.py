"""Where a command's response ends, and what its status flags say.

The scanner walks packet headers in a receive buffer and classifies each packet by
the phase of the response it belongs to, without building an object per row. It
stops at every packet the session must look at (OK, terminal EOF, ERR, LOCAL INFILE
request, prepare-OK) so the caller can forward the bytes before it untouched and
inspect or rewrite that one packet.

Response shapes (protocol 41):
  COM_QUERY / COM_STMT_EXECUTE: OK | ERR | 0xFB infile request | result set, where
    result set = column count, column definitions, [EOF], rows, EOF-or-OK(0xFE) | ERR;
    SERVER_MORE_RESULTS_EXISTS on the closing OK/EOF means another result follows.
  COM_STMT_PREPARE: ERR | prepare-OK, param definitions [EOF], column definitions [EOF].
  COM_FIELD_LIST: column definitions up to EOF | ERR.
  COM_STMT_FETCH: rows up to EOF | ERR.
  COM_STATISTICS: one plain string packet.
  everything else with a reply: one OK | ERR | EOF packet.
With CLIENT_DEPRECATE_EOF the EOF after definitions is left out and the closing
packet is an OK packet with header 0xFE (shorter than 2^24-1 bytes, unlike a row).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .constants import COMMAND, SERVER_MORE_RESULTS_EXISTS, SERVER_STATUS_CURSOR_EXISTS
from .errors import ProtocolViolation
from .framing import HEADER_SIZE, MAX_PACKET_PAYLOAD


class Event:
    """What stopped a scan. Plain ints, as Phase: compared on every packet, and an
    IntEnum member costs a metaclass lookup and a slower comparison each time."""

    NEED_DATA = 0  # the next packet is incomplete; everything before `pos` is plain data
    OK = 1  # an OK packet (0x00, or 0xFE closing a result set with DEPRECATE_EOF)
    EOF = 2  # a classic EOF packet that closes a result set or a simple command
    ERR = 3
    LOCAL_INFILE = 4  # the server asks the client for a file
    PREPARE_OK = 5
    END = 6  # the response ended on a packet with no status (definitions, a string)


class Phase:
    FIRST = 0  # first packet of a (next) result
    DEFINITIONS = 1  # column or parameter definitions, `remaining` left
    DEFINITIONS_EOF = 2  # the EOF after definitions (classic protocol)
    ROWS = 3
    FIELD_LIST = 4
    SINGLE = 5  # a reply of exactly one packet, whatever it holds
    DONE = 6


def ok_status(buf: bytes | bytearray, start: int) -> int:
    """Status flags of an OK packet whose payload starts at `start`."""
    pos = start + 1
    for _ in range(2):  # affected rows, last insert id
        first = buf[pos]
        pos += 1 if first < 0xFB else {0xFC: 3, 0xFD: 4, 0xFE: 9}.get(first, 1)
    return buf[pos] | (buf[pos + 1] << 8)


def eof_status(buf: bytes | bytearray, start: int, length: int) -> int:
    return buf[start + 3] | (buf[start + 4] << 8) if length >= 5 else 0


def read_lenenc(buf: bytes | bytearray, pos: int) -> int:
    first = buf[pos]
    if first < 0xFB:
        return first
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None:
        raise ProtocolViolation("invalid length-encoded integer")
    return int.from_bytes(buf[pos + 1 : pos + 1 + size], "little")


def py_hop_rows(buf: bytes | bytearray, pos: int,
                size: int) -> tuple[int, int, int, bool, int]:
    """Step over the row packets of buf[pos:size]; stop before a packet that may end
    the result (0xFE, 0xFF, shorter than 16 MiB), an empty one, or one whose header is
    not all here, and after the first part of a split row (its continuation is the
    caller's). A row cut off at `size` is stepped over as far as it goes, so no row,
    however long, waits in a buffer.

    Returns (position after the last packet stepped over, rows stepped over, header
    position of the last of them or -1, whether it was the first part of a split row,
    bytes of it still to come). The pure-Python reference of _scan.hop_rows."""
    rows = 0
    last = -1
    continuation = False
    skip = 0
    while size - pos > HEADER_SIZE:
        length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        if not length or buf[pos + HEADER_SIZE] >= 0xFE and length < MAX_PACKET_PAYLOAD:
            break
        last = pos
        rows += 1
        pos += HEADER_SIZE + length
        if length == MAX_PACKET_PAYLOAD:
            continuation = True
        if pos > size:
            skip = pos - size
            pos = size
            break
        if continuation:
            break
    return pos, rows, last, continuation, skip


def _compiled_hop_rows() -> Callable[[bytes | bytearray, int, int],
                                     tuple[int, int, int, bool, int]] | None:
    # MYSQLGATE_PURE_PYTHON=1 runs the fallback where the extension is built: for its
    # tests, and to rule the extension out when hunting a bug.
    if os.environ.get("MYSQLGATE_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from ._scan import hop_rows as compiled
    except ImportError:  # built without a C compiler: pip skips the optional extension
        return None
    return compiled


# The compiled row stepping (mysqlgate/protocol/_scan.c) when it was built, else the
# Python one; COMPILED says which, for the startup log and the tests.
hop_rows = _compiled_hop_rows() or py_hop_rows
COMPILED = hop_rows is not py_hop_rows


class ResponseScanner:
    """Finds the end of one command's response in a stream of packets."""

    __slots__ = (
        "command", "deprecate_eof", "phase", "remaining", "after_definitions",
        "continuation", "status", "event", "event_start", "event_end", "last_seq",
        "prepare_columns", "statement_id", "results", "rows", "result_set", "skip",
        "cut_row",
    )

    def __init__(self, command: int, deprecate_eof: bool) -> None:
        self.command = command
        self.deprecate_eof = deprecate_eof
        if command == COMMAND.COM_FIELD_LIST:
            self.phase = Phase.FIELD_LIST
        elif command == COMMAND.COM_STMT_FETCH:
            self.phase = Phase.ROWS
        elif command in (COMMAND.COM_QUERY, COMMAND.COM_STMT_EXECUTE, COMMAND.COM_STMT_PREPARE):
            self.phase = Phase.FIRST
        else:
            self.phase = Phase.SINGLE
        self.remaining = 0
        self.after_definitions = Phase.ROWS
        self.continuation = False
        self.status = 0  # status flags of the last OK/EOF seen
        self.event = Event.NEED_DATA
        self.event_start = 0  # payload offset of the packet that raised `event`
        self.event_end = 0
        self.last_seq = -1  # sequence id of the last complete packet scanned
        self.prepare_columns = 0
        self.statement_id = 0
        self.results = 0  # completed results (a multi-result response has several)
        # Of the current (or last) result: whether it is a result set, and its rows so
        # far (what FOUND_ROWS() reports afterwards).
        self.result_set = False
        self.rows = 0
        # Bytes of a row packet still to come: rows pass on as they arrive, a chunk
        # that ends inside one is forwarded whole instead of waiting (and copying).
        self.skip = 0
        # Where that row began in the last chunk scanned, when the chunk holds its
        # header; -1 otherwise (the row began in an earlier chunk, or none was cut).
        self.cut_row = -1

    @property
    def done(self) -> bool:
        return self.phase == Phase.DONE

    def scan(self, buf: bytes | bytearray, pos: int) -> int:
        """Consume packets from `pos`; return the position after the last byte
        consumed. Stops after a packet that raises an event, or before an incomplete
        one, except that an incomplete row is consumed as far as it goes (`skip` says
        how much of it is still to come): nothing waits for a row's end."""
        size = len(buf)
        self.cut_row = -1
        if self.skip:
            if size - pos < self.skip:
                self.skip -= size - pos
                self.event = Event.NEED_DATA
                return size
            pos += self.skip
            self.skip = 0
        phase = self.phase
        while True:
            if phase == Phase.ROWS and not self.continuation:
                pos = self._hop_rows(buf, pos, size)
                if self.skip:
                    self.event = Event.NEED_DATA
                    self.phase = phase
                    return size
            if size - pos < HEADER_SIZE:
                self.event = Event.NEED_DATA
                self.phase = phase
                return pos
            length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
            end = pos + HEADER_SIZE + length
            if end > size:
                if phase == Phase.ROWS and self.continuation:  # the rest of a long row
                    self.last_seq = buf[pos + 3]
                    self.continuation = length == MAX_PACKET_PAYLOAD
                    self.skip = end - size
                    self.event = Event.NEED_DATA
                    self.phase = phase
                    return size
                self.event = Event.NEED_DATA
                self.phase = phase
                return pos
            self.last_seq = buf[pos + 3]
            start = pos + HEADER_SIZE
            if self.continuation:
                # The tail of a split packet: payload only, never a header byte.
                self.continuation = length == MAX_PACKET_PAYLOAD
                pos = end
                continue
            self.continuation = length == MAX_PACKET_PAYLOAD
            first = buf[start] if length else -1

            if phase == Phase.ROWS:
                if first == 0xFE and (
                    length < MAX_PACKET_PAYLOAD if self.deprecate_eof else length < 9
                ):
                    return self._close_result(buf, start, end, Event.OK if self.deprecate_eof
                                              else Event.EOF)
                if first == 0xFF and length < MAX_PACKET_PAYLOAD:
                    return self._finish(Event.ERR, start, end)
                self.rows += 1
                pos = end
                continue

            if phase == Phase.FIRST:
                if first == 0x00:
                    if self.command == COMMAND.COM_STMT_PREPARE:
                        return self._prepare_ok(buf, start, end, length)
                    self.result_set = False
                    self.status = ok_status(buf, start)
                    return self._result_end(Event.OK, start, end)
                if first == 0xFF:
                    return self._finish(Event.ERR, start, end)
                if first == 0xFB and self.command == COMMAND.COM_QUERY:
                    # The server now waits for the file; its OK/ERR comes after.
                    return self._stop(Event.LOCAL_INFILE, start, end)
                self.remaining = read_lenenc(buf, start)
                self.after_definitions = Phase.ROWS
                self.result_set = True
                self.rows = 0
                phase = Phase.DEFINITIONS
                pos = end
                continue

            if phase == Phase.DEFINITIONS:
                self.remaining -= 1
                if self.remaining <= 0:
                    phase = self._after_definitions()
                    if phase == Phase.DONE:
                        return self._finish(Event.END, start, end)
                pos = end
                continue

            if phase == Phase.DEFINITIONS_EOF:
                if first == 0xFF:
                    return self._finish(Event.ERR, start, end)
                status = eof_status(buf, start, length)
                self.status = status
                nxt = self.after_definitions
                if nxt == Phase.ROWS and status & SERVER_STATUS_CURSOR_EXISTS:
                    # COM_STMT_EXECUTE with a cursor: rows come with COM_STMT_FETCH.
                    return self._finish(Event.EOF, start, end)
                if nxt == Phase.DEFINITIONS:  # prepare: parameter EOF, columns follow
                    phase = self._start_prepare_columns()
                    if phase == Phase.DONE:
                        return self._finish(Event.EOF, start, end)
                    pos = end
                    continue
                if nxt == Phase.DONE:
                    return self._finish(Event.EOF, start, end)
                phase = nxt
                pos = end
                continue

            if phase == Phase.FIELD_LIST:
                if first == 0xFF:
                    return self._finish(Event.ERR, start, end)
                if first == 0xFE and length < MAX_PACKET_PAYLOAD and (
                    self.deprecate_eof or length < 9
                ):
                    self.status = (
                        ok_status(buf, start) if length >= 9 else eof_status(buf, start, length)
                    )
                    return self._finish(Event.EOF, start, end)
                pos = end
                continue

            if phase == Phase.SINGLE:
                if first == 0x00:
                    self.status = ok_status(buf, start)
                    return self._finish(Event.OK, start, end)
                if first == 0xFF:
                    return self._finish(Event.ERR, start, end)
                if first == 0xFE and length < 9:
                    self.status = eof_status(buf, start, length)
                    return self._finish(Event.EOF, start, end)
                # COM_STATISTICS: a plain string.
                return self._finish(Event.END, start, end)

            raise ProtocolViolation("data after the end of a response")

    def _hop_rows(self, buf: bytes | bytearray, pos: int, size: int) -> int:
        """Step over the row packets from `pos` (a 200 MB result is mostly this):
        see py_hop_rows."""
        pos, rows, last, continuation, skip = hop_rows(buf, pos, size)
        if last >= 0:
            self.rows += rows
            self.last_seq = buf[last + 3]
        if continuation:
            self.continuation = True
        if skip:
            self.skip = skip
            self.cut_row = last
        return pos

    # -- phase changes -------------------------------------------------------

    def _stop(self, event: int, start: int, end: int) -> int:
        self.event = event
        self.event_start = start
        self.event_end = end
        return end

    def _finish(self, event: int, start: int, end: int) -> int:
        self.phase = Phase.DONE
        return self._stop(event, start, end)

    def _result_end(self, event: int, start: int, end: int) -> int:
        self.results += 1
        if self.status & SERVER_MORE_RESULTS_EXISTS:
            self.phase = Phase.FIRST
            return self._stop(event, start, end)
        return self._finish(event, start, end)

    def _close_result(self, buf: bytes | bytearray, start: int, end: int, event: int) -> int:
        if event == Event.OK:
            self.status = ok_status(buf, start)
        else:
            self.status = eof_status(buf, start, end - start)
        return self._result_end(event, start, end)

    def _after_definitions(self) -> int:
        if self.deprecate_eof:
            if self.after_definitions == Phase.DEFINITIONS:
                return self._start_prepare_columns()
            return self.after_definitions
        return Phase.DEFINITIONS_EOF

    def _prepare_ok(self, buf: bytes | bytearray, start: int, end: int, length: int) -> int:
        if length < 9:
            raise ProtocolViolation("short COM_STMT_PREPARE reply")
        self.statement_id = int.from_bytes(buf[start + 1 : start + 5], "little")
        self.prepare_columns = buf[start + 5] | (buf[start + 6] << 8)
        params = buf[start + 7] | (buf[start + 8] << 8)
        self.event = Event.PREPARE_OK
        self.event_start = start
        self.event_end = end
        if params:
            self.remaining = params
            self.after_definitions = Phase.DEFINITIONS  # then the columns
            self.phase = Phase.DEFINITIONS
        else:
            self.phase = self._start_prepare_columns()
        return end

    def _start_prepare_columns(self) -> int:
        if not self.prepare_columns:
            return Phase.DONE
        self.remaining = self.prepare_columns
        self.prepare_columns = 0
        self.after_definitions = Phase.DONE
        return Phase.DEFINITIONS
