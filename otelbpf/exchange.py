"""The domain type that crosses the pipe: one finished request/response exchange.

Decode builds it from a kernel event; the connection stage fills in addresses; the protocol
stage attaches parsed fields; the export stage turns it into a span and metric points.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from otelbpf.abi import ExchangeFlag, Role
from otelbpf.protocols.http1 import RequestHead, ResponseHead


class Protocol(enum.Enum):
    HTTP1 = "http/1"
    HTTP2 = "http/2"
    TLS = "tls"  # ciphertext seen at the socket: no TLS library hook covered it
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SocketAddress:
    address: str
    port: int


@dataclass(slots=True)
class Exchange:
    pid: int
    tid: int
    fd: int
    conn_id: int
    role: Role
    flags: ExchangeFlag
    start_ns: int  # wall clock, ns since the epoch
    end_ns: int
    request_bytes: int
    response_bytes: int
    local: SocketAddress | None
    peer: SocketAddress | None
    comm: str
    request_head: bytes
    response_head: bytes
    protocol: Protocol | None = None
    http_request: RequestHead | None = None
    http_response: ResponseHead | None = None
    # exact body sizes when the protocol counts them (HTTP/2 DATA frames)
    request_body_size: int | None = None
    response_body_size: int | None = None

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)
