"""Images and documents at rest: AES-256-GCM, key id in the file, rotation, tamper detection."""

import base64
import os
import time
from pathlib import Path

import pytest

from imaging import storage
from imaging.storage import StorageError, encrypted_read, encrypted_write

OLD_KEY = base64.b64encode(b"o" * 32).decode()
NEW_KEY = base64.b64encode(b"n" * 32).decode()


@pytest.fixture(autouse=True)
def isolated_storage(settings, tmp_path):
    settings.READROOM_STORAGE_DIR = tmp_path
    storage._keys.cache_clear()
    yield tmp_path
    storage._keys.cache_clear()


def test_round_trip_and_ciphertext_is_not_plaintext(isolated_storage):
    secret = b"DICM" + b"PATIENT^NAME" * 100
    stored = encrypted_write("a/b/1.dcm", secret)
    assert stored.size_bytes == len(secret)
    on_disk = (isolated_storage / "a/b/1.dcm").read_bytes()
    assert b"PATIENT^NAME" not in on_disk
    assert encrypted_read("a/b/1.dcm") == secret


def test_tampering_is_detected(isolated_storage):
    encrypted_write("x.dcm", b"hello world")
    path = isolated_storage / "x.dcm"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(StorageError, match="integrity"):
        encrypted_read("x.dcm")


def test_rotation_reads_old_files_with_old_key(settings):
    settings.READROOM_STORAGE_KEY, settings.READROOM_STORAGE_KEY_ID = OLD_KEY, "k0"
    assert encrypted_write("old.dcm", b"before rotation").key_id == "k0"
    storage._keys.cache_clear()
    settings.READROOM_STORAGE_KEY, settings.READROOM_STORAGE_KEY_ID = NEW_KEY, "k1"
    settings.READROOM_STORAGE_OLD_KEYS = f"k0:{OLD_KEY}"
    assert encrypted_write("new.dcm", b"after rotation").key_id == "k1"
    assert encrypted_read("old.dcm") == b"before rotation"
    assert encrypted_read("new.dcm") == b"after rotation"
    storage._keys.cache_clear()
    settings.READROOM_STORAGE_OLD_KEYS = ""
    with pytest.raises(StorageError, match="'k0', which is not configured"):
        encrypted_read("old.dcm")


def test_paths_cannot_escape_the_root():
    with pytest.raises(StorageError, match="escapes"):
        encrypted_write("../outside.dcm", b"x")


def test_a_symbolic_link_out_of_the_root_is_refused_in_a_directory_and_as_the_file(
    isolated_storage, tmp_path_factory
):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.dcm").write_bytes(b"not ReadRoom's")
    (isolated_storage / "FAC").mkdir()
    (isolated_storage / "FAC" / "linked").symlink_to(outside)
    (isolated_storage / "FAC" / "file.dcm").symlink_to(outside / "secret.dcm")
    for path in ("FAC/linked/secret.dcm", "FAC/file.dcm", "/etc/hostname", "FAC/.."):
        with pytest.raises(StorageError, match="escapes"):
            encrypted_read(path)


def test_missing_file_is_a_storage_error():
    with pytest.raises(StorageError, match="missing"):
        encrypted_read("nope.dcm")


def test_a_stored_file_and_its_new_directories_are_flushed_to_disk(isolated_storage, settings, monkeypatch):
    # given durable writes (the default), and a record of what is flushed (the real fsync still runs)
    settings.READROOM_STORAGE_FSYNC = True
    flushed = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        flushed.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "fdatasync", recording_fsync)
    # when an instance is stored where neither its study's nor its series' directory exists yet
    encrypted_write("FAC/1.2.3/1.2.3.4/1.2.3.4.5.dcm", b"DICM" * 10)
    # then the file is flushed before its rename, the directory after it, and each directory that
    # gained a new entry: a power cut cannot take back a name the index already points at
    root, series = isolated_storage, isolated_storage / "FAC/1.2.3/1.2.3.4"
    assert flushed[:3] == [root, root / "FAC", root / "FAC/1.2.3"]  # each parent that gained a directory
    assert flushed[3] == root  # it gained .incoming/, the temp files' directory
    # the file, before its rename into place
    assert flushed[4].parent == root / ".incoming" and flushed[4].name.startswith(".incoming-")
    assert flushed[5:] == [series]  # the directory, after the rename
    # a second instance in the same series flushes only its file and the series' directory
    flushed.clear()
    encrypted_write("FAC/1.2.3/1.2.3.4/1.2.3.4.6.dcm", b"DICM" * 10)
    assert len(flushed) == 2 and flushed[1] == root / "FAC/1.2.3/1.2.3.4"


def test_a_path_no_row_names_is_written_in_place_and_flushed_with_its_directory(
    isolated_storage, settings, monkeypatch
):
    # given durable writes and a record of what is flushed, and a series directory that exists
    settings.READROOM_STORAGE_FSYNC = True
    encrypted_write("FAC/1.2.3/1.2.3.4/1.2.3.4.5.dcm", b"DICM" * 10)
    flushed, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace

    def recording_fsync(fd):
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.is_dir():
            time.sleep(0.2)  # a directory's flush ends well after the file's: it is waited for all the same
        real_fsync(fd)
        flushed.append(path)  # once flushed

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "fdatasync", recording_fsync)
    monkeypatch.setattr(os, "replace", lambda *a: (renamed.append(a), real_replace(*a)))
    series = isolated_storage / "FAC/1.2.3/1.2.3.4"
    # when a new instance (no row names its path) is written
    encrypted_write("FAC/1.2.3/1.2.3.4/1.2.3.4.6.dcm", b"DICM new" * 10, unreferenced=True)
    # then the file is created at its path (no temp file, no rename) and flushed, and so is its
    # directory (that flush runs beside the file's; both have ended when the write returns)
    assert sorted(flushed) == [series, series / "1.2.3.4.6.dcm"] and not renamed
    assert encrypted_read("FAC/1.2.3/1.2.3.4/1.2.3.4.6.dcm") == b"DICM new" * 10
    # and where a file is already there (an attempt that never committed), it is replaced whole by a rename
    flushed.clear()
    encrypted_write("FAC/1.2.3/1.2.3.4/1.2.3.4.6.dcm", b"DICM again" * 10, unreferenced=True)
    assert len(renamed) == 1 and flushed[0].parent == isolated_storage / ".incoming"
    assert flushed[1:] == [series]
    assert encrypted_read("FAC/1.2.3/1.2.3.4/1.2.3.4.6.dcm") == b"DICM again" * 10
    # and a write that fails in place leaves no partial file at the path
    failing = lambda fd: (_ for _ in ()).throw(OSError(5, "I/O error"))  # noqa: E731
    monkeypatch.setattr(os, "fsync", failing)
    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError):
        encrypted_write("FAC/1.2.3/1.2.3.4/1.2.3.4.7.dcm", b"DICM" * 10, unreferenced=True)
    assert not (series / "1.2.3.4.7.dcm").exists()


def test_a_crash_mid_write_leaves_a_temp_file_that_the_next_process_start_removes(tmp_path):
    """Issue 15 §9: a process killed between writing and renaming leaves its temp file; the next
    ReadRoom process to start (any: here ``manage.py check``) removes it once past the grace period
    — and nothing that is not ReadRoom's own temp file."""
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "READROOM_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "radiology.settings.base",
    }
    env.pop("DATABASE_URL", None)  # the embedded settings: nothing here needs a database
    crash = (
        "import os, django; django.setup()\n"
        "from imaging.storage import encrypted_write\n"
        "os.replace = lambda *a: os._exit(9)  # the process dies after the write, before the rename\n"
        "encrypted_write('FAC/1.2/1.2.3/1.2.3.4.dcm', b'DICM' * 1000)\n"
    )
    # given a process that crashed mid-write
    crashed = subprocess.run([sys.executable, "-c", crash], cwd=root, env=env, capture_output=True)
    assert crashed.returncode == 9, crashed.stderr.decode()[-2000:]
    storage_dir, uploads = tmp_path / "storage", tmp_path / "tmp"
    (left,) = (storage_dir / ".incoming").glob(".incoming-*")
    assert not (storage_dir / "FAC/1.2/1.2.3/1.2.3.4.dcm").exists()
    # and a spooled upload of a crashed request, an upload still being written, and files that are not
    # ReadRoom's temp files, all old but the one in progress
    old = time.time() - 2 * 3600
    upload_left, upload_live = uploads / "tmpk3j2h1.upload.pdf", uploads / "tmp9x8y7z.upload.dcm"
    foreign, stored = storage_dir / ".incoming" / "keep.txt", storage_dir / "FAC/1.2/kept.dcm"
    for path in (upload_left, upload_live, foreign, stored):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    for path in (left, upload_left, foreign, stored):
        os.utime(path, (old, old))
    # when the next process starts
    started = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=root, env=env, capture_output=True, text=True
    )
    assert started.returncode == 0, started.stderr[-2000:]
    # then the crash's temp files are gone; the live upload and everything else stay
    assert not left.exists() and not upload_left.exists()
    assert upload_live.exists() and foreign.exists() and stored.exists()
