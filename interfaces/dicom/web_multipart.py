"""Media types and ``multipart/related`` bodies for DICOMweb (PS3.18 §8.6, RFC 2387, RFC 2046 §5.1).

Pure functions: no Django, no database. STOW-RS request bodies are parsed as a stream, so a large
series is held in memory one instance at a time; WADO-RS responses are produced as a stream."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


class MultipartError(ValueError):
    """The body is not a well-formed multipart message (STOW-RS answers 400)."""


@dataclass(frozen=True)
class MediaRange:
    """One media type with its parameters, e.g. ``multipart/related; type="application/dicom"``.
    Type, subtype and parameter names are case-insensitive (RFC 7231 §3.1.1.1); values are not."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    quality: float = 1.0

    @property
    def subtype_param(self) -> str:
        """The ``type`` parameter of a multipart range (the media type of its parts), lower case."""
        return self.params.get("type", "").lower()

    def matches(self, media_type: str) -> bool:
        """Whether this range accepts ``media_type`` (``*/*`` and ``image/*`` wildcards)."""
        if self.type in ("*/*", "*"):
            return True
        major, _, minor = self.type.partition("/")
        want_major, _, want_minor = media_type.lower().partition("/")
        return major == want_major and minor in ("*", want_minor)


def _split_outside_quotes(value: str, separator: str) -> list[str]:
    items, current, quoted, escaped = [], [], False, False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            quoted = not quoted
        elif char == separator and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
        out, escaped = [], False
        for char in value:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value


def media_type_parse(value: str) -> MediaRange:
    """``'Multipart/Related; type="application/dicom"; boundary="a;b"'`` → a MediaRange. Quoted
    parameter values may contain ``;`` ``,`` and escaped quotes (RFC 7230 §3.2.6)."""
    head, *params = _split_outside_quotes(value or "", ";") or [""]
    parsed: dict[str, str] = {}
    quality = 1.0
    for param in params:
        name, sep, raw = param.partition("=")
        if not sep:
            continue
        name = name.strip().lower()
        if name == "q":
            try:
                quality = float(raw)
            except ValueError:
                quality = 0.0
            continue
        parsed[name] = _unquote(raw)
    return MediaRange(head.strip().lower(), parsed, quality)


def accept_parse(header: str | None) -> list[MediaRange]:
    """The Accept header as media ranges, most preferred first; a missing header accepts anything."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [media_type_parse(item) for item in _split_outside_quotes(header, ",")]
    ranges = [r for r in ranges if r.quality > 0 and r.type]
    # stable sort keeps the client's order among equal q-values
    return sorted(ranges, key=lambda r: -r.quality)


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def content_type(self) -> MediaRange:
        return media_type_parse(self.headers.get("content-type", ""))


def _part_from(raw: bytes) -> Part:
    # A part is header lines, an empty line, then the body; with no headers it starts with CRLF.
    if raw.startswith(b"\r\n"):
        return Part({}, raw[2:])
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        raise MultipartError("a part has no blank line between its headers and its body")
    headers = {}
    for line in raw[:end].decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep:
            raise MultipartError(f"malformed part header line {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return Part(headers, raw[end + 4 :])


def multipart_parts(chunks: Iterable[bytes], boundary: str) -> Iterator[Part]:
    """Yield the parts of a multipart body read in chunks. Each delimiter is CRLF ``--boundary``
    (the CRLF belongs to the delimiter, RFC 2046 §5.1.1); the first may open the body without a
    CRLF; a preamble before it and an epilogue after the closing ``--boundary--`` are ignored."""
    if not boundary or len(boundary) > 200:
        raise MultipartError("the multipart boundary is missing or longer than 200 characters")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    buffer = bytearray(b"\r\n")
    scan = 0
    in_part = False
    for chunk in itertools.chain(chunks, [None]):
        final = chunk is None
        if chunk:
            buffer += chunk
        while True:
            at = buffer.find(delimiter, scan)
            if at < 0:
                scan = max(0, len(buffer) - len(delimiter) + 1)
                break
            after = at + len(delimiter)
            if buffer[after : after + 2] == b"--":
                if in_part:
                    yield _part_from(bytes(buffer[:at]))
                return  # closing delimiter: the rest is epilogue
            line_end = buffer.find(b"\r\n", after)
            if line_end < 0:
                if final:
                    raise MultipartError("the body ends inside a boundary line")
                scan = at  # wait for the rest of the boundary line
                break
            if buffer[after:line_end].strip(b" \t"):
                scan = at + 1  # "--boundaryX…": the boundary text inside content, not a delimiter
                continue
            if in_part:
                yield _part_from(bytes(buffer[:at]))
            del buffer[: line_end + 2]
            scan = 0
            in_part = True
        if final:
            raise MultipartError("the body ends without the closing boundary --" + boundary + "--")


def boundary_new() -> str:
    return uuid.uuid4().hex


def multipart_stream(parts: Iterable[tuple[str, bytes]], boundary: str) -> Iterator[bytes]:
    """Encode ``(content type, body)`` pairs as a multipart body, one part per yielded chunk."""
    for content_type, body in parts:
        yield b"".join(
            (
                f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode(
                    "latin-1"
                ),
                body,
                b"\r\n",
            )
        )
    yield f"--{boundary}--\r\n".encode("latin-1")


def multipart_content_type(part_type: str, boundary: str, **params: str) -> str:
    extra = "".join(f"; {name.replace('_', '-')}={value}" for name, value in params.items())
    return f'multipart/related; type="{part_type}"; boundary={boundary}{extra}'
