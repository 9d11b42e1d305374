"""An MLLP client for the outbox (STANDARDS.md §1 "MLLP"): blocking sockets, because it runs in a
Celery worker (or the embedded ticker's thread), one message in flight at a time — the outbox is
strictly ordered, so there is never a second one to pipeline.

A connection stays open for the facility's whole batch (interface engines expect that) and is
closed on any error, so a half-read ACK can never be taken for the next message's. No ORM here."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

START_BLOCK, END_BLOCK, CARRIAGE_RETURN = b"\x0b", b"\x1c", b"\x0d"
FRAME_END = END_BLOCK + CARRIAGE_RETURN
MAX_ACK_BYTES = 1024 * 1024


class MllpError(Exception):
    """The exchange failed: connection refused or reset, timeout, or a reply that is not a frame."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    connect_timeout: float = 5.0
    ack_timeout: float = 30.0  # from the last byte sent to the end of the ACK frame
    # MLLP over TLS (interfaces.tls.client_tls_context); None: plain TCP
    tls: ssl.SSLContext | None = field(default=None, compare=False)
    server_name: str = ""  # the name the certificate must carry (default: host)


def frame(message: bytes) -> bytes:
    return START_BLOCK + message + FRAME_END


class MllpConnection:
    """``with MllpConnection(endpoint) as conn: ack = conn.exchange(payload)``; connects lazily."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> MllpConnection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._buffer = None, b""

    def exchange(self, message: bytes) -> bytes:
        """Send one message and return the bytes inside the reply frame. Raises ``MllpError``, after
        which the connection is closed (the next exchange reconnects)."""
        try:
            sock = self._connected()
            sock.sendall(frame(message))
            return self._read_frame(sock)
        except MllpError:
            self.close()
            raise
        except TimeoutError as exc:
            self.close()
            raise MllpError(f"no ACK within {self.endpoint.ack_timeout:g} s") from exc
        except OSError as exc:
            self.close()
            raise MllpError(f"{type(exc).__name__}: {exc.strerror or exc}") from exc

    def _connected(self) -> socket.socket:
        if self._sock is None:
            e = self.endpoint
            try:
                sock = socket.create_connection((e.host, e.port), timeout=e.connect_timeout)
            except TimeoutError as exc:
                raise MllpError(f"connect to {e.host}:{e.port} timed out") from exc
            except OSError as exc:
                raise MllpError(f"connect to {e.host}:{e.port}: {exc.strerror or exc}") from exc
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one small frame, then wait
            if e.tls is not None:
                try:  # the handshake within the connect timeout (still set on the socket)
                    sock = e.tls.wrap_socket(sock, server_hostname=e.server_name or e.host)
                except (OSError, ValueError) as exc:  # ssl.SSLError (untrusted certificate…) is an OSError
                    sock.close()
                    raise MllpError(f"TLS to {e.host}:{e.port}: {exc}") from exc
            self._sock = sock
        return self._sock

    def _read_frame(self, sock: socket.socket) -> bytes:
        deadline = time.monotonic() + self.endpoint.ack_timeout
        while (end := self._buffer.find(FRAME_END)) < 0:
            if len(self._buffer) > MAX_ACK_BYTES:
                raise MllpError(f"reply of more than {MAX_ACK_BYTES} bytes without a frame end")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                raise MllpError("connection closed by the receiver before a complete ACK")
            self._buffer += chunk
        block, self._buffer = self._buffer[:end], self._buffer[end + len(FRAME_END) :]
        start = block.find(START_BLOCK)
        if start < 0:
            raise MllpError(f"reply is not an MLLP frame: {block[:80]!r}")
        return block[start + 1 :]
