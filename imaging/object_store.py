"""The S3 API under ``imaging.storage`` (docs/storage.md): put, get and delete of one object — the
ciphertext ``imaging.storage`` has already made — and nothing else, so AWS S3, MinIO and Ceph RGW
all serve it.

boto3 itself rather than django-storages: the store is not a Django ``Storage`` (no FileField, no
URLs handed to browsers — every read is decrypted and permission-checked by ReadRoom), and a
C-STORE's status depends on knowing exactly when the PUT has returned and what failed. A store
that cannot be reached raises ``StorageError``, which ingest answers 0xA700 (the modality retries)
and the web answers as a storage failure, never as a missing study.

Configuration (radiology/settings/base.py): ``READROOM_S3_BUCKET`` (turns it on),
``READROOM_S3_ENDPOINT_URL`` (MinIO / Ceph RGW; empty for AWS), ``READROOM_S3_REGION``,
``READROOM_S3_ACCESS_KEY_ID`` / ``READROOM_S3_SECRET_ACCESS_KEY`` (empty: boto3's own chain —
``AWS_*`` variables, an instance or pod role), ``READROOM_S3_PREFIX`` (keys under a prefix, e.g.
one bucket for several installs) and ``READROOM_S3_ADDRESSING_STYLE`` (``path`` for most
self-hosted stores)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from functools import cache

from django.conf import settings

from imaging.storage import StorageError


@cache
def _client():
    """One client per process (boto3 clients are thread-safe; the SCP's writer threads share it)."""
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=settings.READROOM_S3_REGION,
        connect_timeout=5,
        read_timeout=30,
        retries={"mode": "standard", "max_attempts": 3},
        s3={"addressing_style": settings.READROOM_S3_ADDRESSING_STYLE},
        # Content-MD5 below is the integrity check every S3 peer understands; the newer default
        # CRC checksums are refused by some self-hosted stores.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=16,
    )
    credentials = {}
    if settings.READROOM_S3_ACCESS_KEY_ID:
        credentials = {
            "aws_access_key_id": settings.READROOM_S3_ACCESS_KEY_ID,
            "aws_secret_access_key": settings.READROOM_S3_SECRET_ACCESS_KEY,
        }
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.READROOM_S3_ENDPOINT_URL or None, config=config, **credentials
    )


def client_reset() -> None:
    """Forget the client (tests and benchmarks that point the settings at another store)."""
    _client.cache_clear()


def object_key(relative_path: str) -> str:
    parts = relative_path.split("/")
    if relative_path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise StorageError(f"path escapes the storage root: {relative_path!r}")
    return settings.READROOM_S3_PREFIX + relative_path


def _failure(exc: Exception, relative_path: str) -> StorageError:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
        return StorageError(f"stored file missing: {relative_path}")
    return StorageError(f"object store unavailable for {relative_path}: {exc}")


def object_put(relative_path: str, blob: bytes) -> None:
    """Returns once the store has answered the PUT: the object is stored (durably, whole)."""
    from botocore.exceptions import BotoCoreError, ClientError

    key = object_key(relative_path)
    md5 = base64.b64encode(hashlib.md5(blob, usedforsecurity=False).digest()).decode()
    try:
        _client().put_object(
            Bucket=settings.READROOM_S3_BUCKET,
            Key=key,
            Body=blob,
            ContentMD5=md5,
            ContentType="application/octet-stream",
        )
    except (BotoCoreError, ClientError) as exc:
        raise _failure(exc, relative_path) from exc


def object_get(relative_path: str) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = _client().get_object(Bucket=settings.READROOM_S3_BUCKET, Key=object_key(relative_path))
        return answer["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise _failure(exc, relative_path) from exc


def object_delete(relative_path: str, *, if_match: str = "") -> bool:
    """``if_match`` (an ETag): delete only that version (DeleteObject ``If-Match``); False when the
    store says the object is another one now (412) — a PUT replaced it since it was read — or gone."""
    from botocore.exceptions import BotoCoreError, ClientError

    condition = {"IfMatch": if_match} if if_match else {}
    try:
        _client().delete_object(
            Bucket=settings.READROOM_S3_BUCKET, Key=object_key(relative_path), **condition
        )
    except ClientError as exc:
        # 412: another version now; 404 (AWS answers it to If-Match on an absent key): nothing deleted
        if if_match and exc.response.get("Error", {}).get("Code") in (
            "PreconditionFailed",
            "412",
            "NoSuchKey",
            "404",
        ):
            return False
        raise _failure(exc, relative_path) from exc
    except BotoCoreError as exc:
        raise _failure(exc, relative_path) from exc
    return True


def object_paths(prefix: str) -> Iterator[str]:
    """The relative paths of the objects under ``prefix`` (ListObjectsV2, 1,000 a page)."""
    from botocore.exceptions import BotoCoreError, ClientError

    strip = len(settings.READROOM_S3_PREFIX)
    pages = (
        _client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=settings.READROOM_S3_BUCKET, Prefix=object_key(prefix.rstrip("/")) + "/")
    )
    try:
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"][strip:]
    except (BotoCoreError, ClientError) as exc:
        raise _failure(exc, prefix) from exc


def object_head(relative_path: str):
    """``StoredEntry`` of the object (HeadObject: its LastModified and ETag), None if there is none."""
    from botocore.exceptions import BotoCoreError, ClientError

    from imaging.storage import StoredEntry

    try:
        answer = _client().head_object(Bucket=settings.READROOM_S3_BUCKET, Key=object_key(relative_path))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise _failure(exc, relative_path) from exc
    except BotoCoreError as exc:
        raise _failure(exc, relative_path) from exc
    return StoredEntry(relative_path, answer["LastModified"].timestamp(), answer["ETag"])


def object_get_tagged(relative_path: str) -> tuple[bytes, str]:
    """The object's bytes and the ETag of exactly those bytes."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = _client().get_object(Bucket=settings.READROOM_S3_BUCKET, Key=object_key(relative_path))
        return answer["Body"].read(), answer["ETag"]
    except (BotoCoreError, ClientError) as exc:
        raise _failure(exc, relative_path) from exc
