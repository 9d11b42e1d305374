"""Encrypted file storage for images and documents: AES-256-GCM at rest (DESIGN.md §4), on the local
file system (the embedded default) or in an S3-API object store (``READROOM_S3_BUCKET``: AWS S3,
MinIO, Ceph RGW; docs/storage.md), so several SCP, web and worker machines share one store.

Stored layout: ``b"RRE1"`` · key-id length (1 byte) · key id (ASCII) · 12-byte nonce · ciphertext+tag,
the same bytes in a file or an object. Encryption happens here, in ReadRoom, before anything leaves
the process: the object store only ever holds ciphertext. The key id travels in the file (and in the
database row) so keys can rotate: new files use ``READROOM_STORAGE_KEY``/``READROOM_STORAGE_KEY_ID``;
older files are read with the keys listed in ``READROOM_STORAGE_OLD_KEYS`` (``id:base64,id:base64``).

Durability before success: on the file system a write goes to a temporary file (``.incoming/``
under the storage root: one directory, so a crash's leftovers are found without walking the
archive — ``temp_files_sweep`` at every process start), is flushed to disk (fsync) and renamed into
place, and the directory is flushed after the rename (and after creating a directory), so a crash
leaves either the whole file or none. In an object store a write returns once the store's PUT has
returned (with a Content-MD5 the store checks): S3 and its peers answer a PUT
only when the object is durably stored, and an object appears whole or not at all.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MAGIC = b"RRE1"
NONCE_BYTES = 12
TEMP_PREFIX = ".incoming-"
INCOMING_DIR = ".incoming"
# Django's spooled uploads in FILE_UPLOAD_TEMP_DIR: tmpXXXXXXXX.upload[.ext]
UPLOAD_TEMP_PATTERN = "tmp*.upload*"

logger = logging.getLogger(__name__)
# A new file's directory is flushed in one of these while the file's contents are (``_file_write``).
# Threads start on first use, so a process that forks (the SCP's supervisor) holds none.
_DIRECTORY_FLUSHERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="storage-dir-flush")


class StorageError(Exception):
    """A stored file is missing, damaged, or encrypted with a key we do not have."""


class StorageKeyMissing(StorageError):
    """Encrypted with a key this process is not configured with: unreadable here, not damaged."""


@dataclass(frozen=True)
class StoredFile:
    relative_path: str
    key_id: str
    size_bytes: int  # plaintext size


def storage_root() -> Path:
    return Path(settings.READROOM_STORAGE_DIR)


@cache
def _keys() -> dict[str, bytes]:
    keys = {settings.READROOM_STORAGE_KEY_ID: _decode_key(settings.READROOM_STORAGE_KEY)}
    for item in filter(None, (getattr(settings, "READROOM_STORAGE_OLD_KEYS", "") or "").split(",")):
        key_id, _, value = item.strip().partition(":")
        keys.setdefault(key_id, _decode_key(value))
    return keys


def _decode_key(value: str) -> bytes:
    raw = base64.b64decode(value)
    if len(raw) != 32:
        raise ImproperlyConfigured("storage keys must be base64 of 32 bytes (AES-256)")
    return raw


def _resolve(relative_path: str) -> Path:
    return _resolved(str(settings.READROOM_STORAGE_DIR), relative_path)


@lru_cache(maxsize=16384)
def _resolved(root_setting: str, relative_path: str) -> Path:
    """The file of a stored path, checked to lie under the storage root. Kept per (root, path):
    resolving walks every directory of both (a system call each), and a viewer reads hundreds of
    files a minute whose place never changes. A new image's path is new, but its directory (the
    series') is not: the directory is resolved once (``_resolved_directory``) and the file's own
    name costs one ``lstat`` (a symbolic link there is resolved and checked like the rest). A
    refusal is not kept (raised, never cached)."""
    directory, _, name = relative_path.rpartition("/")
    if name in ("", ".", ".."):
        return _resolved_fully(root_setting, relative_path)
    path = _resolved_directory(root_setting, directory) / name
    if path.is_symlink():
        return _resolved_fully(root_setting, relative_path)
    return path


@lru_cache(maxsize=4096)
def _resolved_directory(root_setting: str, directory: str) -> Path:
    root = Path(root_setting).resolve()
    if not directory:
        return root
    path = (root / directory).resolve()
    if root not in path.parents:
        raise StorageError(f"path escapes the storage root: {directory!r}")
    return path


def _resolved_fully(root_setting: str, relative_path: str) -> Path:
    root = Path(root_setting).resolve()
    path = (root / relative_path).resolve()
    if root not in path.parents:
        raise StorageError(f"path escapes the storage root: {relative_path!r}")
    return path


@lru_cache(maxsize=16)
def _cipher(key: bytes) -> AESGCM:
    """The AES-GCM cipher of a key, made once (by the key's bytes: tests and a rotation swap keys)."""
    return AESGCM(key)


def storage_key_id() -> str:
    """The id of the key new files are encrypted with."""
    return settings.READROOM_STORAGE_KEY_ID


def encrypted_write(
    relative_path: str, plaintext: bytes, *, unreferenced: bool = False, durable: bool = True
) -> StoredFile:
    """``unreferenced``: the caller knows no index row names this path yet (a C-STORE of a SOP
    Instance UID not stored), so nobody reads it before the caller's commit: on the file system it
    may be written in place (``_file_write``). ``durable=False``: a cache made again whenever it is
    missing or unreadable (a metadata side-car): never flushed to the disk — after a power cut it
    is whole, absent, or fails its GCM tag and is made again; it never waits on the disk or queues
    the images' own flushes behind its own."""
    key_id = storage_key_id()
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = _cipher(_keys()[key_id]).encrypt(nonce, plaintext, None)
    header = MAGIC + bytes([len(key_id)]) + key_id.encode("ascii") + nonce
    if object_store_configured():
        from imaging.object_store import object_put

        object_put(relative_path, header + ciphertext)
    else:
        _file_write(relative_path, header, ciphertext, in_place=unreferenced, durable=durable)
    return StoredFile(relative_path=relative_path, key_id=key_id, size_bytes=len(plaintext))


def object_store_configured() -> bool:
    """Images live in an S3-API bucket when one is configured, else under READROOM_STORAGE_DIR."""
    return bool(getattr(settings, "READROOM_S3_BUCKET", ""))


def _file_write(
    relative_path: str, header: bytes, ciphertext: bytes, *, in_place: bool = False, durable: bool = True
) -> None:
    """Written to a temporary file, flushed, renamed over the path, the directory flushed: a
    reader of the path sees the old file or the new one, whole. ``in_place`` (no row names the
    path: nobody reads it): a path where no file is yet is created and written directly
    (``O_EXCL``), flushed, its directory flushed — one rename and on ext4 one journal commit fewer
    per image (~4 ms of 10–25 ms on this shared machine's disk). A crash mid-way leaves a partial
    file no row names; the modality's resend finds it there and takes the rename path over it."""
    path = _resolve(relative_path)
    durable = durable and settings.READROOM_STORAGE_FSYNC
    _directories_make(path.parent, durable=durable)
    if in_place:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # a file no row names (an attempt that never committed, or a racing one): rename over it
        else:
            # Its name (the new entry in its directory) is flushed while its contents are written
            # and flushed, not after: the entry exists from the O_CREAT on, so the directory's
            # fsync, started now, covers it, and the two flushes overlap instead of queueing one
            # behind the other. Both have finished before this returns.
            name = _DIRECTORY_FLUSHERS.submit(_directory_fsync, path.parent) if durable else None
            try:
                _contents_write(fd, header, ciphertext, durable=durable)
            except BaseException:
                path.unlink(missing_ok=True)
                if name is not None:
                    futures_wait([name])
                raise
            if name is not None:
                name.result()
            return
    incoming = storage_root() / INCOMING_DIR
    _directories_make(incoming, durable=durable)
    # same file system as its target, so the rename below is atomic
    fd, tmp = tempfile.mkstemp(dir=incoming, prefix=TEMP_PREFIX)
    try:
        _contents_write(fd, header, ciphertext, durable=durable)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        # The rename is a change to the directory: until the directory is flushed too, a power cut
        # can take the file's name back — after the index row pointing at it has committed.
        _directory_fsync(path.parent)


def _contents_write(fd: int, header: bytes, ciphertext: bytes, *, durable: bool) -> None:
    """The stored object's bytes into the open file ``fd`` (closed after), flushed to the disk when
    ``durable``: both the in-place and the temporary-file paths write exactly this."""
    with os.fdopen(fd, "wb") as fh:
        fh.write(header)
        fh.write(ciphertext)
        fh.flush()
        if durable:
            # the contents and what reading them needs (size, blocks): fdatasync skips only the
            # times, which no reader of a stored object relies on after a crash
            os.fdatasync(fh.fileno())


def _directories_make(directory: Path, *, durable: bool) -> None:
    """``mkdir -p``, flushing each parent that gained a directory (a new study's and series'
    directories must survive a power cut as much as the file inside them)."""
    if directory.is_dir():
        return
    _directories_make(directory.parent, durable=durable)
    try:
        directory.mkdir()
    except FileExistsError:  # another association made it at the same moment
        return
    if durable:
        _directory_fsync(directory.parent)


def _directory_fsync(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encrypted_read(relative_path: str) -> bytes:
    if object_store_configured():
        from imaging.object_store import object_get

        blob = object_get(relative_path)
    else:
        try:
            blob = _resolve(relative_path).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"stored file missing: {relative_path}") from exc
    return blob_decrypt(blob, relative_path)


def blob_decrypt(blob: bytes, relative_path: str) -> bytes:
    """The plaintext of a stored object's bytes; ``StorageKeyMissing`` for a key we lack, else
    ``StorageError`` when it is not whole (a partial write fails the GCM tag) or was changed."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 1:
        raise StorageError(f"not a ReadRoom encrypted file: {relative_path}")
    id_len = blob[len(MAGIC)]
    start = len(MAGIC) + 1
    key_id = blob[start : start + id_len].decode("ascii", "replace")
    nonce = blob[start + id_len : start + id_len + NONCE_BYTES]
    key = _keys().get(key_id)
    if key is None:
        raise StorageKeyMissing(f"{relative_path} is encrypted with key {key_id!r}, which is not configured")
    try:
        return _cipher(key).decrypt(nonce, blob[start + id_len + NONCE_BYTES :], None)
    except Exception as exc:  # InvalidTag: tampered or truncated
        raise StorageError(f"stored file failed its integrity check: {relative_path}") from exc


def metadata_sidecar_path(storage_path: str) -> str:
    """Where an instance's WADO-RS metadata side-car is kept: beside its file, encrypted like it
    (interfaces.dicom.metadata_sidecar writes and reads it; whoever deletes the file deletes both)."""
    return f"{storage_path}.meta.json"


def encrypted_delete(relative_path: str) -> None:
    if object_store_configured():
        from imaging.object_store import object_delete

        object_delete(relative_path)
    else:
        _resolve(relative_path).unlink(missing_ok=True)


def temp_files_sweep(*, now: float | None = None) -> int:
    """Remove the half-written temp files a crash left behind (issue 15 §9): storage writes in
    ``.incoming/`` and spooled uploads in FILE_UPLOAD_TEMP_DIR — only ReadRoom's own names, only
    files older than READROOM_TEMP_GRACE_SECONDS (a younger one may be another live process's
    write). They hold ciphertext or, for uploads, plaintext PHI: they must not pile up. Outbound
    messages are rows in the database (``interfaces.OutboundMessage``), never temp files. Returns
    how many were removed; an unreadable directory is logged, never fatal to the start."""
    cutoff = (time.time() if now is None else now) - settings.READROOM_TEMP_GRACE_SECONDS
    places = [(storage_root() / INCOMING_DIR, f"{TEMP_PREFIX}*")]
    if getattr(settings, "FILE_UPLOAD_TEMP_DIR", None):
        places.append((Path(settings.FILE_UPLOAD_TEMP_DIR), UPLOAD_TEMP_PATTERN))
    removed = 0
    for directory, pattern in places:
        try:
            candidates = list(directory.glob(pattern)) if directory.is_dir() else []
            for path in candidates:
                info = path.lstat()
                if path.is_file() and not path.is_symlink() and info.st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
        except OSError as error:
            logger.warning("temp-file sweep of %s failed: %s", directory, error)
    if removed:
        logger.info("removed %d temp files left by an earlier crash", removed)
    return removed


# --- what the orphan sweep needs (interfaces.dicom.orphans; docs/storage.md, "Files no row names") --
ORPHANS_DIR = f"{INCOMING_DIR}/orphans"  # a file set aside keeps its relative path under here


@dataclass(frozen=True)
class StoredEntry:
    relative_path: str
    modified: float  # seconds since the epoch: the file's mtime, the object's LastModified
    tag: str  # which version of it: the inode (a rename over the path makes a new one), the ETag


def stored_paths(directory: str) -> Iterator[str]:
    """The relative paths of everything stored under ``directory`` (a facility's code), in no
    order; names only (the sweep stats only what no row holds)."""
    if object_store_configured():
        from imaging.object_store import object_paths

        yield from object_paths(f"{directory}/")
        return
    top = _resolve(directory)
    root = storage_root().resolve()
    for current, _, names in os.walk(top):
        base = Path(current).relative_to(root).as_posix()
        for name in names:
            yield f"{base}/{name}"


def stored_entry(relative_path: str) -> StoredEntry | None:
    """When it was written and which version it is, or None if nothing is there."""
    if object_store_configured():
        from imaging.object_store import object_head

        return object_head(relative_path)
    try:
        info = _resolve(relative_path).lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return StoredEntry(relative_path, info.st_mtime, str(info.st_ino))


def _aside(relative_path: str) -> Path:
    return _resolve(f"{ORPHANS_DIR}/{relative_path}")


def orphan_set_aside(entry: StoredEntry) -> bool:
    """File system: move the file out of its path (one rename: atomic) into ``ORPHANS_DIR``, so a
    resend of its instance that comes now writes a file of its own and is never the one judged and
    removed. False, and nothing moved, if the file at the path is no longer ``entry`` (a resend
    replaced it since it was listed: it is put back)."""
    aside = _aside(entry.relative_path)
    _directories_make(aside.parent, durable=settings.READROOM_STORAGE_FSYNC)
    try:
        os.rename(_resolve(entry.relative_path), aside)
    except FileNotFoundError:
        return False
    if str(aside.lstat().st_ino) != entry.tag:
        orphan_put_back(entry.relative_path)
        return False
    return True


def orphan_put_back(relative_path: str) -> None:
    """A file set aside goes back to its path, unless a newer file is there (that write wins, as a
    rename over it would have)."""
    aside = _aside(relative_path)
    try:
        os.link(aside, _resolve(relative_path))  # only where no file is
        if settings.READROOM_STORAGE_FSYNC:
            _directory_fsync(_resolve(relative_path).parent)
    except FileExistsError:
        pass
    aside.unlink()


def orphan_aside_read(relative_path: str) -> tuple[bytes, float]:
    """A file set aside: its bytes and when it was written (the rename kept its mtime)."""
    aside = _aside(relative_path)
    return aside.read_bytes(), aside.lstat().st_mtime


def orphan_aside_remove(relative_path: str) -> None:
    _aside(relative_path).unlink(missing_ok=True)


def orphans_set_aside() -> list[str]:
    """The relative paths of files still set aside: a sweep killed while judging them."""
    top = storage_root() / ORPHANS_DIR
    return [
        Path(current, name).relative_to(top).as_posix()
        for current, _, names in os.walk(top)
        for name in names
    ]
