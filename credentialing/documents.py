"""Checks on uploaded credentialing documents, before anything is stored.

The browser's Content-Type and the file name are the uploader's claims; what we store is decided by
the file's first bytes. Only PDF, PNG and JPEG are accepted: what licences, certificates and letters
come as, and what every viewer opens without running anything."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError

from credentialing.models import DocumentContentType

DEFAULT_MAX_BYTES = 20 * 1024 * 1024

# Signatures: PDF (ISO 32000-1 §7.5.2 header), PNG (RFC 2083 §3.1), JPEG (SOI marker + a marker).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", DocumentContentType.PDF),
    (b"\x89PNG\r\n\x1a\n", DocumentContentType.PNG),
    (b"\xff\xd8\xff", DocumentContentType.JPEG),
)


def max_document_bytes() -> int:
    return int(getattr(settings, "READROOM_DOCUMENT_MAX_BYTES", DEFAULT_MAX_BYTES))


def sniff_content_type(head: bytes) -> str | None:
    for signature, content_type in _SIGNATURES:
        if head.startswith(signature):
            return content_type
    return None


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def check_size(size: int) -> None:
    limit = max_document_bytes()
    if size > limit:
        raise ValidationError(
            f"This file is {_megabytes(size)}; documents may be at most {_megabytes(limit)}. "
            "Scan it at a lower resolution or split it into parts, then upload again.",
            code="too_large",
        )
    if size == 0:
        raise ValidationError("This file is empty. Choose the file again.", code="empty")


def check_content(content: bytes) -> str:
    """The content type the bytes themselves show, or a ValidationError saying what to do."""
    content_type = sniff_content_type(content[:16])
    if content_type is None:
        raise ValidationError(
            "This file is not a PDF, PNG or JPEG (judged by its contents, not its name). "
            "Save or scan it as PDF and upload it again.",
            code="content_type",
        )
    return content_type
