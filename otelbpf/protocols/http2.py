"""Sans-IO HTTP/2: one connection's bytes in (each direction in order), finished streams out.

The kernel sends an HTTP/2 connection's bytes as chunks, one per syscall, copied up to a cap;
`total_len` says how many bytes the syscall really moved. Frames are parsed with hyperframe and
header blocks decoded with hpack, one decoder per direction (each side's encoder keeps its own
dynamic table). Bytes that were not copied are skipped when they fall inside a DATA payload
(whose length the frame header gave); a frame lost any other way desynchronises the direction
until a chunk starts with a plausible frame header again. A frame hyperframe rejects for its
stream (a PING on stream 1) is passed over alone when its length is believable. Whatever may
have cost a header block (a desync, a rejected or malformed HEADERS, PUSH_PROMISE or
CONTINUATION) marks the connection's HPACK tables unreliable: later streams are partial.

Joined mid-connection (the agent started after it opened), header fields may reference
dynamic-table entries this decoder never saw: they decode to a placeholder, the stream is
marked partial, and everything else still counts. No I/O, no clocks, no OpenTelemetry; never
raises on garbage.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from hpack import Decoder
from hpack.exceptions import HPACKError, InvalidTableIndex
from hpack.table import HeaderTable
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
)

CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = 9
MAX_FRAME_TYPE = 9
MAX_PLAUSIBLE_FRAME = 1 << 24
UNKNOWN_HEADER = "x-otelbpf-unknown"
HEADERS_TYPE = 0x1
DATA_TYPE = 0x0
END_STREAM = 0x1
PADDED = 0x8
# frame types whose payload is (part of) a header block: losing one desynchronises HPACK
HEADER_BLOCK_TYPES = frozenset((0x1, 0x5, 0x9))  # HEADERS, PUSH_PROMISE, CONTINUATION
# SETTINGS_MAX_FRAME_SIZE's initial value: the largest frame a peer sends unless told otherwise
DEFAULT_MAX_FRAME_SIZE = 1 << 14
# We only observe, so a header list is decoded whatever its size (hpack's default stops at
# 64 KiB and loses the rest of the block, and with it the HPACK table's step); this bound
# (Go's transport allows 10 MB) only keeps a hostile block's inflated size in check.
MAX_HEADER_LIST_SIZE = 1 << 24
# Streams whose end is never seen (lost in a gap, a peer that never answers) would stay open
# for the connection's life: past the server's SETTINGS_MAX_CONCURRENT_STREAMS (when seen: an
# end was lost, most likely the oldest stream's) or past this many, the oldest go. Not lower:
# grpc-go and Java gRPC servers announce no limit, and one client connection carries every
# call, so thousands of calls in flight at once are real (10k req/s at 100 ms each is 1,000).
# A peer's stream ids only increase (RFC 9113 5.1.1): the table's order is oldest first.
MAX_OPEN_STREAMS = 4096
REFUSED_STREAM = 0x7  # RFC 9113 7: what a stream above a GOAWAY's last-stream-id amounts to

Headers = list[tuple[str, str]]


class TolerantHeaderTable(HeaderTable):
    """An HPACK table that answers references it cannot resolve with a placeholder."""

    def __init__(self) -> None:
        super().__init__()
        self.misses = 0

    def get_by_index(self, index: int) -> tuple[bytes, bytes]:
        try:
            return super().get_by_index(index)
        except InvalidTableIndex:
            self.misses += 1
            return UNKNOWN_HEADER.encode(), b""


@dataclass
class Stream:
    stream_id: int
    request_headers: Headers = field(default_factory=list)
    response_headers: Headers = field(default_factory=list)
    trailers: Headers = field(default_factory=list)
    start_ns: int | None = None
    end_ns: int | None = None
    request_data: int = 0
    response_data: int = 0
    reset: bool = False
    partial: bool = False  # header references into a table the agent never saw
    # the RST_STREAM error code that ended it (REFUSED_STREAM for one a GOAWAY left out);
    # None when it was not reset, or ended by its connection's close
    reset_code: int | None = None

    def header(self, name: str, which: str = "request") -> str | None:
        source = {
            "request": self.request_headers,
            "response": self.response_headers,
            "trailers": self.trailers,
        }[which]
        for key, value in source:
            if key == name:
                return value
        return None


class Side(enum.Enum):
    TO_SERVER = 0  # written by the client
    TO_CLIENT = 1  # written by the server


@dataclass
class _Direction:
    buffer: bytearray = field(default_factory=bytearray)
    skip: int = 0  # DATA payload bytes still to pass over (copied or not)
    skip_pad: int = 0  # of those, the padding at the end (not counted); -1: not read yet
    skip_stream: int = 0
    skip_end_stream: bool = False
    desynced: bool = False
    elided: bool = False  # the chunks being parsed carry DATA frames as headers alone
    header_block: bytearray | None = None  # HEADERS awaiting CONTINUATION
    header_block_frame: Frame | None = None
    decoder: Decoder = field(default_factory=lambda: Decoder(MAX_HEADER_LIST_SIZE))
    table: TolerantHeaderTable = field(default_factory=TolerantHeaderTable)

    def __post_init__(self) -> None:
        self.decoder.header_table = self.table


def plausible_frame_header(data: bytes | bytearray, offset: int = 0) -> bool:
    if len(data) - offset < FRAME_HEADER:
        return False
    length = int.from_bytes(data[offset : offset + 3], "big")
    frame_type = data[offset + 3]
    stream_id = int.from_bytes(data[offset + 5 : offset + 9], "big")
    if frame_type > MAX_FRAME_TYPE or length >= MAX_PLAUSIBLE_FRAME or stream_id >> 31:
        return False
    if frame_type in (0x0, 0x1, 0x3, 0x9):  # DATA, HEADERS, RST_STREAM, CONTINUATION
        return stream_id != 0
    if frame_type in (0x4, 0x6, 0x7):  # SETTINGS, PING, GOAWAY
        return stream_id == 0
    return True


def looks_like_http2(data: bytes, total_len: int | None = None) -> bool:
    """Bytes that start with the client preface, or with frames that chain plausibly: the
    first frame header, the next one where the capture reaches it, and, where total_len
    (the bytes the exchange moved, beyond the capture) is known, a first frame that fits in
    them. That last rule keeps little-endian length prefixes out: a MySQL query packet of
    33 bytes reads as a 2 MiB DATA frame in a 37-byte exchange."""
    if data.startswith(CLIENT_PREFACE[:16]):
        return True
    if not plausible_frame_header(data):
        return False
    following = FRAME_HEADER + int.from_bytes(data[:3], "big")
    if total_len is not None and following > total_len:
        return False
    if following + FRAME_HEADER <= len(data):
        return plausible_frame_header(data, following)
    return True


class Http2Connection:
    """One connection's HTTP/2 state; feed it each direction's bytes in order."""

    def __init__(
        self,
        joined_mid_connection: bool = False,
        on_stale: Callable[[], None] | None = None,
    ) -> None:
        self.joined = joined_mid_connection
        self.streams: dict[int, Stream] = {}
        self._sides = {Side.TO_SERVER: _Direction(), Side.TO_CLIENT: _Direction()}
        # preface bytes still to strip from the client's side (it may arrive in pieces)
        self._preface_left = 0 if joined_mid_connection else len(CLIENT_PREFACE)
        self.frames_seen = 0
        self.desyncs = 0
        self.unreliable_table = joined_mid_connection
        self.stale_streams = 0  # open streams dropped past max_open_streams
        self.max_open_streams = MAX_OPEN_STREAMS  # lowered by the server's SETTINGS
        self._on_stale = on_stale  # told of each, as it happens

    # ---------------------------------------------------------------- input

    def receive(
        self,
        side: Side,
        data: bytes,
        total_len: int,
        ts_ns: int,
        elided: bool = False,
        walk_lost: bool = False,
    ) -> list[Stream]:
        """Bytes one syscall moved; returns the streams this completed.

        elided: the kernel walked the frames and left DATA payloads out (each DATA frame is
        its header alone here); walk_lost: it lost its place partway through this syscall.
        """
        state = self._sides[side]
        finished: list[Stream] = []
        if elided:
            if side is Side.TO_SERVER and self._preface_left:
                self._preface_left = 0  # the kernel passed over the preface
            state.elided = True
            state.buffer += data
            self._parse(side, state, ts_ns, finished)
            if walk_lost:
                self._desync(state)
            return finished
        state.elided = False
        if side is Side.TO_SERVER and self._preface_left:
            expected = CLIENT_PREFACE[len(CLIENT_PREFACE) - self._preface_left :]
            taken = min(len(data), self._preface_left)
            if data[:taken] == expected[:taken]:
                data, total_len = data[taken:], total_len - taken
                self._preface_left -= taken
            else:
                self._preface_left = 0  # no preface after all: frames from the first byte
        missing = max(0, total_len - len(data))
        if state.desynced:
            if not plausible_frame_header(data):
                return finished
            state.desynced = False
            state.buffer.clear()
            state.skip = state.skip_pad = 0
        position = 0
        if state.skip:
            position = min(state.skip, len(data))
            if state.skip_pad < 0 and position:
                # a PADDED frame whose header ended the last chunk: here is its pad length
                state.skip -= 1
                state.skip_pad = min(data[0], state.skip)
                self._pass_skipped(side, state, position - 1, ts_ns, finished)
            else:
                self._pass_skipped(side, state, position, ts_ns, finished)
        state.buffer += data[position:]
        self._parse(side, state, ts_ns, finished)
        if missing:
            self._lose(side, state, missing, ts_ns, finished)
        return finished

    def close(self, ts_ns: int) -> list[Stream]:
        """The connection closed: streams that had a request end here, as resets."""
        finished = []
        for stream in list(self.streams.values()):
            if stream.request_headers:
                stream.reset = True
                stream.end_ns = ts_ns
                finished.append(stream)
        self.streams.clear()
        return finished

    # ---------------------------------------------------------------- frames

    def _parse(self, side: Side, state: _Direction, ts_ns: int, finished: list[Stream]) -> None:
        buffer = state.buffer
        offset = 0
        while len(buffer) - offset >= FRAME_HEADER:
            header = bytes(buffer[offset : offset + FRAME_HEADER])
            try:
                frame, length = Frame.parse_frame_header(memoryview(header))
            except (HyperframeError, ValueError):
                # a frame on a stream its type forbids (PING on stream 1, DATA on stream 0):
                # passed over whole when its length is believable, else we lost our place
                skipped = self._skip_rejected(state, buffer, offset, header)
                if skipped is None:
                    self._desync(state)
                    return
                if skipped == 0:
                    break  # wait for the rest of it
                offset += skipped
                continue
            available = len(buffer) - offset - FRAME_HEADER
            if isinstance(frame, DataFrame) and state.elided:
                # the kernel counted this payload and left it out: the header says its size
                # (padding included: the pad length went with the payload)
                self._count_data(side, frame.stream_id, length)
                state.skip_stream = frame.stream_id
                state.skip_end_stream = bool(buffer[offset + 4] & END_STREAM)
                offset += FRAME_HEADER
                self._end_data_frame(side, state, ts_ns, finished)
                continue
            if isinstance(frame, DataFrame):
                # DATA payloads are counted, never needed: pass over what is here, skip the rest
                taken = min(length, available)
                flags = buffer[offset + 4]
                counted = taken
                if not flags & PADDED:
                    state.skip_pad = 0
                elif taken:
                    # pad length byte, data, padding: only the data is body (RFC 9113 6.1)
                    data_size = length - min(length, 1 + buffer[offset + FRAME_HEADER])
                    counted = min(taken - 1, data_size)
                    state.skip_pad = (length - taken) - (data_size - counted)
                else:
                    state.skip_pad = -1  # the pad length is the next byte
                self._count_data(side, frame.stream_id, counted)
                offset += FRAME_HEADER + taken
                state.skip_stream = frame.stream_id
                state.skip_end_stream = bool(flags & END_STREAM)
                if taken < length:
                    state.skip = length - taken
                    break
                self._end_data_frame(side, state, ts_ns, finished)
                continue
            if available < length:
                break  # wait for the rest of this frame
            body = memoryview(bytes(buffer[offset + FRAME_HEADER : offset + FRAME_HEADER + length]))
            offset += FRAME_HEADER + length
            try:
                frame.parse_body(body)
            except (HyperframeError, ValueError):
                # a malformed frame: skip it, its length was sound; a header block's fragment
                # that goes this way leaves the HPACK table behind the encoder's
                if header[3] in HEADER_BLOCK_TYPES:
                    self._lost_header_block(state)
                continue
            self.frames_seen += 1
            self._frame(side, state, frame, ts_ns, finished)
        del buffer[:offset]

    def _skip_rejected(
        self, state: _Direction, buffer: bytearray, offset: int, header: bytes
    ) -> int | None:
        """Bytes to pass over for a frame hyperframe rejected by its header; 0: not all here
        yet; None: its length is not to be trusted (a reserved bit set, a next frame header
        that is no frame header, or more than a peer sends unasked)."""
        length = int.from_bytes(header[:3], "big")
        if header[5] & 0x80:
            return None
        elided_data = header[3] == DATA_TYPE and state.elided
        end = offset + FRAME_HEADER + (0 if elided_data else length)
        if end + FRAME_HEADER <= len(buffer):
            if not plausible_frame_header(buffer, end):
                return None
        elif end > len(buffer) and length > DEFAULT_MAX_FRAME_SIZE:
            return None
        if end > len(buffer):
            return 0
        if header[3] in HEADER_BLOCK_TYPES:
            self._lost_header_block(state)
        return end - offset

    def _pass_skipped(
        self, side: Side, state: _Direction, passed: int, ts_ns: int, finished: list[Stream]
    ) -> None:
        """Pass over `passed` bytes of the DATA payload being skipped, copied or not."""
        if state.skip_pad < 0:  # the pad length byte was not copied: padding counts as data
            state.skip_pad = 0
        data_left = state.skip - state.skip_pad  # the padding comes last
        if data_left > 0:
            self._count_data(side, state.skip_stream, passed if passed < data_left else data_left)
        state.skip -= passed
        if state.skip_pad > state.skip:
            state.skip_pad = state.skip
        if state.skip == 0:
            self._end_data_frame(side, state, ts_ns, finished)

    def _lose(
        self, side: Side, state: _Direction, missing: int, ts_ns: int, finished: list[Stream]
    ) -> None:
        """Bytes the kernel did not copy: fine inside a DATA payload, a desync otherwise."""
        if state.skip and not state.buffer:
            passed = min(state.skip, missing)
            self._pass_skipped(side, state, passed, ts_ns, finished)
            missing -= passed
        if missing:
            self._desync(state)

    def _desync(self, state: _Direction) -> None:
        """This direction lost its place: what the bytes it passes over until it finds a frame
        header again held is not known, a header block among them as likely as not."""
        state.desynced = True
        state.buffer.clear()
        state.skip = state.skip_pad = 0
        self._lost_header_block(state)
        self.desyncs += 1

    def _lost_header_block(self, state: _Direction) -> None:
        # the encoder's dynamic table moved on without this decoder: later indexes may name
        # other fields than the ones the encoder meant
        state.header_block = None
        state.header_block_frame = None
        self.unreliable_table = True

    def _count_data(self, side: Side, stream_id: int, size: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if side is Side.TO_SERVER:
            stream.request_data += size
        else:
            stream.response_data += size

    def _end_data_frame(
        self, side: Side, state: _Direction, ts_ns: int, finished: list[Stream]
    ) -> None:
        if state.skip_end_stream and side is Side.TO_CLIENT:
            self._finish(state.skip_stream, ts_ns, finished)
        state.skip_end_stream = False

    def _frame(
        self, side: Side, state: _Direction, frame: Frame, ts_ns: int, finished: list[Stream]
    ) -> None:
        if isinstance(frame, HeadersFrame | PushPromiseFrame):
            state.header_block = bytearray(frame.data)
            state.header_block_frame = frame
            if "END_HEADERS" in frame.flags:
                self._header_block(side, state, ts_ns, finished)
        elif isinstance(frame, ContinuationFrame):
            if state.header_block is None:
                return
            state.header_block += frame.data
            if "END_HEADERS" in frame.flags:
                self._header_block(side, state, ts_ns, finished)
        elif isinstance(frame, RstStreamFrame):
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.reset = True
                stream.reset_code = frame.error_code
                self._finish(frame.stream_id, ts_ns, finished)
        elif isinstance(frame, SettingsFrame):
            size = frame.settings.get(SettingsFrame.HEADER_TABLE_SIZE)
            limit = frame.settings.get(SettingsFrame.MAX_CONCURRENT_STREAMS)
            if limit is not None and side is Side.TO_CLIENT:
                # the server's bound on the client's open streams (RFC 9113 5.1.2)
                self.max_open_streams = max(1, min(limit, MAX_OPEN_STREAMS))
            if size is not None:
                # the limit one side announces binds the other side's encoder
                other = Side.TO_CLIENT if side is Side.TO_SERVER else Side.TO_SERVER
                self._sides[other].decoder.max_allowed_table_size = size
        elif isinstance(frame, GoAwayFrame) and side is Side.TO_CLIENT:
            # the server will not process the client's streams above last-stream-id (RFC
            # 9113 6.8): they end here, refused. A client's GOAWAY speaks of server pushes.
            last = frame.last_stream_id
            for stream_id in [s for s in self.streams if s > last and s & 1]:
                stream = self.streams[stream_id]
                stream.reset = True
                stream.reset_code = REFUSED_STREAM
                self._finish(stream_id, ts_ns, finished)

    def _header_block(
        self, side: Side, state: _Direction, ts_ns: int, finished: list[Stream]
    ) -> None:
        frame = state.header_block_frame
        block = bytes(state.header_block or b"")
        state.header_block = None
        state.header_block_frame = None
        misses_before = state.table.misses
        try:
            # bytes, read as UTF-8 here: a field value may hold obs-text (RFC 9110 5.5), which
            # must cost neither the call nor the table (hpack's own decoding raises on it)
            headers = [
                (name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
                for name, value in state.decoder.decode(block, raw=True)
            ]
        except (HPACKError, ValueError, IndexError):
            headers = []
            self.unreliable_table = True
        partial = state.table.misses > misses_before or self.unreliable_table
        if isinstance(frame, PushPromiseFrame) or frame is None:
            return  # decoded only to keep the table in step
        end_stream = "END_STREAM" in frame.flags
        stream_id = frame.stream_id
        streams = self.streams
        if side is Side.TO_SERVER:
            stream = streams.get(stream_id)
            if stream is None:
                stream = streams[stream_id] = Stream(stream_id, start_ns=ts_ns)
                stream.request_headers = headers
                if len(streams) > self.max_open_streams:
                    self._drop_oldest()
            else:
                stream.request_headers += headers  # request trailers
            stream.partial = stream.partial or partial
            return
        stream = streams.get(stream_id)
        if stream is None:
            # a response to a request we never saw (joined mid-stream): counted, not traced
            return
        stream.partial = stream.partial or partial
        status = next((v for k, v in headers if k == ":status"), None)
        if not stream.response_headers and status is not None:
            if status.startswith("1"):
                return  # informational: the final headers follow
            stream.response_headers = headers
        else:
            stream.trailers = headers
        if end_stream:
            self._finish(stream_id, ts_ns, finished)

    def _drop_oldest(self) -> None:
        """Past max_open_streams: the oldest open stream (first opened, lowest id) goes."""
        del self.streams[next(iter(self.streams))]
        self.stale_streams += 1
        if self._on_stale is not None:
            self._on_stale()

    def _finish(self, stream_id: int, ts_ns: int, finished: list[Stream]) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        stream.end_ns = ts_ns
        finished.append(stream)
