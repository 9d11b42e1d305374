"""Request bodies and uploads that outgrow memory, spooled to disk encrypted (docs/ingest.md, "Request
bodies on disk").

Django's ASGI handler reads each request body into a ``SpooledTemporaryFile`` that rolls over to an
ordinary temporary file past ``FILE_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MB), and its upload handler writes
an uploaded file past that size to ``FILE_UPLOAD_TEMP_DIR``: a STOW-RS request of a CT series, or a
radiologist's licence PDF, lay on the disk in plain text for the length of the request, and in the
disk's free blocks after. Here both go to an anonymous temporary file whose bytes are AES-256-CTR under
a key made for that file and held only in the process's memory: what reaches the disk is unreadable
once the request ends (or the process dies), and nothing has to be wiped.

CTR, not the store's GCM: the spool is read back at any offset (a multipart parser seeks; Django's
request reads in chunks) and a counter mode decrypts any byte range on its own. It is a cache of
bytes the process itself wrote moments before, under a key nobody else ever holds, so confidentiality
is what it needs; what is stored for good goes through the AES-GCM store as before."""

from __future__ import annotations

import io
import os
import tempfile

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler

_BLOCK = 16  # AES block: the counter counts these


class _ReadWriteSeek:
    """What ``io`` asks of a file that is read, written and sought, as a temporary file is."""

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


class EncryptedTempFile(_ReadWriteSeek, io.RawIOBase):
    """A seekable, readable, writable temporary file in ``directory`` whose bytes on disk are
    AES-256-CTR under a key of its own, in memory only. Unnamed on Linux (``O_TMPFILE``): nothing in
    the directory to leave behind."""

    def __init__(self, directory: str | None = None):
        super().__init__()
        self._disk = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 -- closed by close()
        self._key = os.urandom(32)
        self._counter = int.from_bytes(os.urandom(_BLOCK), "big")  # the first block's counter
        self._position = 0

    def _keystream_at(self, offset: int):
        """A CTR cipher positioned at byte ``offset`` of the file."""
        block, skip = divmod(offset, _BLOCK)
        start = ((self._counter + block) % (1 << 128)).to_bytes(_BLOCK, "big")
        cipher = Cipher(algorithms.AES(self._key), modes.CTR(start)).encryptor()
        if skip:
            cipher.update(bytes(skip))  # into the block: drop the keystream before ``offset``
        return cipher

    def write(self, data) -> int:
        plain = bytes(data)
        end = self._disk.seek(0, io.SEEK_END)
        if self._position > end:  # past the end: the gap reads as zeros, as in any file
            self._disk.write(self._keystream_at(end).update(bytes(self._position - end)))
        self._disk.seek(self._position)
        self._disk.write(self._keystream_at(self._position).update(plain))
        self._position += len(plain)
        return len(plain)

    def readinto(self, buffer) -> int:
        self._disk.seek(self._position)
        sealed = self._disk.read(len(buffer))
        plain = self._keystream_at(self._position).update(sealed)
        buffer[: len(plain)] = plain
        self._position += len(plain)
        return len(plain)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            offset += self._disk.seek(0, io.SEEK_END)
        elif whence == io.SEEK_CUR:
            offset += self._position
        if offset < 0:
            raise ValueError("negative seek position")
        self._position = offset
        return offset

    def tell(self) -> int:
        return self._position

    def truncate(self, size: int | None = None) -> int:
        return self._disk.truncate(self._position if size is None else size)

    def close(self) -> None:
        if not self.closed:
            self._disk.close()
            self._key = b""
        super().close()


def encrypted_temp_file() -> io.BufferedRandom:
    """An ``EncryptedTempFile`` in ReadRoom's temp directory, buffered (``readline``, small reads)."""
    return io.BufferedRandom(EncryptedTempFile(settings.FILE_UPLOAD_TEMP_DIR), buffer_size=256 * 1024)


class BodySpool(_ReadWriteSeek, io.BufferedIOBase):
    """A request body: in memory up to ``max_size``, then moved into an ``encrypted_temp_file`` —
    what ``SpooledTemporaryFile`` does, with the encrypted file in place of the plain one."""

    def __init__(self, max_size: int):
        super().__init__()
        self._max_size = max_size
        self._file: io.BytesIO | io.BufferedRandom = io.BytesIO()

    @property
    def on_disk(self) -> bool:
        return not isinstance(self._file, io.BytesIO)

    def write(self, data) -> int:
        written = self._file.write(data)
        if not self.on_disk and self._file.tell() > self._max_size:
            self._roll_over()
        return written

    def _roll_over(self) -> None:
        memory, position = self._file, self._file.tell()
        self._file = encrypted_temp_file()
        self._file.write(memory.getbuffer())
        self._file.seek(position)
        memory.close()

    def read(self, size: int | None = -1) -> bytes:
        return self._file.read(size)

    def read1(self, size: int = -1) -> bytes:
        return self._file.read1(size)

    def readinto(self, buffer) -> int:
        return self._file.readinto(buffer)

    def readline(self, size: int | None = -1) -> bytes:
        return self._file.readline(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()  # flushes, through ``flush`` above: the file must still be open
        finally:
            self._file.close()


class EncryptedTemporaryFileUploadHandler(FileUploadHandler):
    """Django's ``TemporaryFileUploadHandler`` (an uploaded file past the memory handler's size, in
    ``FILE_UPLOAD_TEMP_DIR``), into an ``encrypted_temp_file`` instead of a plain one. Listed after
    the memory handler (settings ``FILE_UPLOAD_HANDLERS``), so small files never touch the disk."""

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.file = UploadedFile(
            encrypted_temp_file(), self.file_name, self.content_type, 0, self.charset, self.content_type_extra
        )

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.file.write(raw_data)

    def file_complete(self, file_size: int) -> UploadedFile:
        self.file.seek(0)
        self.file.size = file_size
        return self.file

    def upload_interrupted(self) -> None:
        if hasattr(self, "file"):
            self.file.close()
