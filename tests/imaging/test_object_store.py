"""Images in an S3-API object store (docs/storage.md): the same encrypted bytes as on disk, written
before success, refused clearly when the store is away; the store (moto in server mode, a real HTTP
server on a free port) only ever holds ciphertext."""

from __future__ import annotations

import pytest

from imaging import object_store, storage
from imaging.storage import StorageError, encrypted_delete, encrypted_read, encrypted_write
from tests.net import free_port
from tests.s3 import object_raw


def test_round_trip_through_the_bucket_holds_only_ciphertext(moto_server, s3_bucket, tmp_path, settings):
    settings.READROOM_STORAGE_DIR = tmp_path  # nothing may land on the local disk
    secret = b"DICM" + b"PATIENT^NAME" * 100
    stored = encrypted_write("CHI-L1/1.2.3/1.2.3.4/1.2.3.4.5.dcm", secret)
    assert stored.size_bytes == len(secret)
    raw = object_raw(moto_server, s3_bucket, "CHI-L1/1.2.3/1.2.3.4/1.2.3.4.5.dcm")
    assert raw.startswith(storage.MAGIC) and b"PATIENT^NAME" not in raw
    assert encrypted_read("CHI-L1/1.2.3/1.2.3.4/1.2.3.4.5.dcm") == secret
    assert not any(tmp_path.iterdir())


def test_a_tampered_object_fails_its_integrity_check(moto_server, s3_bucket):
    encrypted_write("x.dcm", b"hello world")
    blob = bytearray(object_raw(moto_server, s3_bucket, "x.dcm"))
    blob[-1] ^= 0x01
    object_store.object_put("x.dcm", bytes(blob))
    with pytest.raises(StorageError, match="integrity"):
        encrypted_read("x.dcm")


def test_missing_deleted_and_escaping_keys(s3_bucket):
    with pytest.raises(StorageError, match="missing"):
        encrypted_read("nope.dcm")
    encrypted_write("gone.dcm", b"x")
    encrypted_delete("gone.dcm")
    with pytest.raises(StorageError, match="missing"):
        encrypted_read("gone.dcm")
    with pytest.raises(StorageError, match="escapes"):
        encrypted_write("../outside.dcm", b"x")


def test_keys_live_under_the_configured_prefix(moto_server, s3_bucket, settings):
    settings.READROOM_S3_PREFIX = "site-a/"
    encrypted_write("doc.bin", b"prefixed")
    assert object_raw(moto_server, s3_bucket, "site-a/doc.bin").startswith(storage.MAGIC)
    assert encrypted_read("doc.bin") == b"prefixed"


def test_an_unreachable_store_is_a_storage_error_not_a_success(s3_bucket, settings):
    settings.READROOM_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    object_store.client_reset()
    with pytest.raises(StorageError, match="unavailable"):
        encrypted_write("lost.dcm", b"must not be acknowledged")
    with pytest.raises(StorageError, match="unavailable"):
        encrypted_read("lost.dcm")
