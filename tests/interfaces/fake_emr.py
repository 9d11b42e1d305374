"""A fake hospital EMR for delivery tests: a real MLLP server on 127.0.0.1 (threads, blocking
sockets), which records every frame it receives and answers each as its ``answer`` function says.

``answer(control_id, seen)`` gets the message's MSH-10 and how many times this control id arrived
before; it returns an ACK code ("AA", "AE", "AR"…), raw bytes to send as they are, or None to say
nothing at all (the sender must time out). Before ``start()`` the port is closed: connection refused."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable

import hl7

from interfaces.hl7.parse import decode
from tests.net import free_port

Answer = Callable[[str, int], "str | bytes | None"]


class FakeEmr:
    def __init__(self, answer: Answer, port: int | None = None, tls: ssl.SSLContext | None = None):
        self.answer = answer
        self.tls = tls  # an EMR that speaks MLLP over TLS only
        self.tls_refused: list[str] = []  # why each failed handshake failed
        self.port = port or free_port()
        self.received: list[str] = []  # MSH-10 of every frame, in arrival order
        self.messages: list[str] = []  # the frames themselves
        self.frames: list[bytes] = []  # and their bytes as they came
        self._server: socket.socket | None = None
        self._stopping = threading.Event()

    def start(self) -> FakeEmr:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen()
        server.settimeout(0.2)
        self._server = server
        self._stopping.clear()
        threading.Thread(target=self._accept, daemon=True, name="fake-emr").start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.close()
            self._server = None

    def _accept(self) -> None:
        server = self._server
        while not self._stopping.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self.tls is not None:
            try:
                conn.settimeout(5)
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (OSError, ValueError) as exc:
                self.tls_refused.append(str(exc))
                conn.close()
                return
        buffer = b""
        conn.settimeout(0.2)
        with conn:
            while not self._stopping.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while (end := buffer.find(b"\x1c\r")) >= 0:
                    frame, buffer = buffer[buffer.find(b"\x0b") + 1 : end], buffer[end + 2 :]
                    self.frames.append(frame)
                    reply = self._reply(decode(frame))  # in the set its MSH-18 declares, as an EMR does
                    if reply is not None:
                        conn.sendall(reply)

    def _reply(self, text: str) -> bytes | None:
        message = hl7.parse(text)
        control_id = str(message.segment("MSH")[10])
        seen = self.received.count(control_id)
        self.received.append(control_id)
        self.messages.append(text)
        answer = self.answer(control_id, seen)
        if answer is None or isinstance(answer, bytes):
            return answer
        ack = message.create_ack(ack_code=answer, application="EPIC", facility="LAKESHORE")
        return b"\x0b" + str(ack).encode() + b"\x1c\r"


def always(code: str) -> Answer:
    return lambda control_id, seen: code
