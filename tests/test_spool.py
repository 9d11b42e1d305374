"""Request bodies and uploads past the memory limit are on disk only encrypted (radiology/spool.py,
docs/ingest.md "Request bodies on disk")."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import stat
import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from django.http.multipartparser import MultiPartParser
from django.test import RequestFactory
from django.test.client import BOUNDARY, encode_multipart
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from radiology.spool import BodySpool, EncryptedTempFile, encrypted_temp_file
from tests.hardening.uvicorn_process import database_url, uvicorn_server
from tests.net import wait_until

MARKER = b"RIVERA^ANA^MRN7001^"  # what a DICOM header of the patient would carry


def _disk_bytes(spooled: io.BufferedRandom) -> bytes:
    """What the encrypted file holds on disk."""
    disk = spooled.raw._disk
    disk.flush()
    return os.pread(disk.fileno(), os.fstat(disk.fileno()).st_size, 0)


@given(
    st.lists(
        st.tuples(st.integers(0, 5000), st.binary(min_size=0, max_size=3000)),
        min_size=1,
        max_size=12,
    ),
    st.integers(1, 70),
)
@hypothesis_settings(max_examples=60, deadline=None)
def test_an_encrypted_temp_file_reads_back_what_was_written_at_any_offset(writes, chunk):
    """Against a BytesIO: writes at any offset (gaps read as zeros, as in a file), then reads in
    chunks of any size from any place — CTR's counter arithmetic across block edges."""
    model = io.BytesIO()
    with encrypted_temp_file() as spool:
        for offset, data in writes:
            model.seek(offset), spool.seek(offset)
            model.write(data), spool.write(data)
        assert spool.seek(0, io.SEEK_END) == model.seek(0, io.SEEK_END)
        for start in sorted({0, *(offset for offset, _ in writes)}):
            spool.seek(start), model.seek(start)
            pieces = iter(lambda: spool.read(chunk), b"")
            assert b"".join(pieces) == model.read()


def test_what_reaches_the_disk_is_not_the_plain_bytes_and_each_file_has_a_key_of_its_own():
    plain = MARKER * 50_000
    with encrypted_temp_file() as first, encrypted_temp_file() as second:
        first.write(plain), second.write(plain)
        on_disk = _disk_bytes(first)
        assert len(on_disk) == len(plain) and MARKER not in on_disk
        assert on_disk != _disk_bytes(second)  # another key and counter: no two files alike
        first.seek(0)
        assert first.read() == plain


def test_a_closed_file_forgets_its_key():
    raw = EncryptedTempFile(settings.FILE_UPLOAD_TEMP_DIR)
    raw.write(MARKER)
    raw.close()
    assert raw.closed and raw._key == b"" and raw._disk.closed


def test_a_body_stays_in_memory_up_to_the_limit_then_goes_on_encrypted():
    spool = BodySpool(max_size=1000)
    spool.write(b"a" * 1000)
    assert not spool.on_disk
    spool.write(MARKER + b"\nsecond line\n")
    assert spool.on_disk and MARKER not in _disk_bytes(spool._file)
    spool.seek(0)
    assert spool.readline() == b"a" * 1000 + MARKER + b"\n"
    assert spool.read() == b"second line\n"
    spool.close()
    assert spool.closed


def test_an_upload_past_the_memory_limit_is_kept_encrypted_and_read_back_whole():
    """Django's multipart parser with ReadRoom's upload handlers (settings.FILE_UPLOAD_HANDLERS): a
    licence PDF of 3 MB is an UploadedFile over an encrypted temp file, whole when read."""
    content = b"%PDF-1.7\n" + MARKER * 160_000  # ~3 MB, past the 2.5 MB memory handler
    upload = io.BytesIO(content)
    upload.name = "licence.pdf"
    body = encode_multipart(BOUNDARY, {"file": upload})
    meta = {"CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}", "CONTENT_LENGTH": str(len(body))}
    request = RequestFactory().post("/")
    handlers = [_handler(path, request) for path in settings.FILE_UPLOAD_HANDLERS]
    _post, files = MultiPartParser(meta, io.BytesIO(body), handlers).parse()
    upload = files["file"]
    assert isinstance(upload.file, io.BufferedRandom) and isinstance(upload.file.raw, EncryptedTempFile)
    assert MARKER not in _disk_bytes(upload.file)
    assert upload.size == len(content) and upload.read() == content
    upload.close()


def _handler(path: str, request):
    from django.utils.module_loading import import_string

    return import_string(path)(request)


@pytest.fixture(scope="module")
def web(django_db_setup, django_db_blocker, tmp_path_factory):
    """One uvicorn process for the module's two requests (a server start is most of their time)."""
    data = tmp_path_factory.mktemp("web")
    stack = contextlib.ExitStack()
    with django_db_blocker.unblock():
        server = stack.enter_context(uvicorn_server(data, database_url()))
    try:
        yield server, data
    finally:
        with django_db_blocker.unblock():
            stack.close()


def _temp_files_open(pid: int, directories: tuple[str, ...]) -> list[Path]:
    """The regular files in ``directories`` a process holds open with no name left: temporary files."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            unnamed = target.endswith("(deleted)") and target.startswith(directories)
            if unnamed and stat.S_ISREG(os.stat(fd).st_mode):
                found.append(fd)
        except OSError:
            continue  # closed meanwhile
    return found


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads the server's open files in /proc")
def test_a_large_request_body_in_flight_is_on_the_servers_disk_only_encrypted(web):
    """Through uvicorn, as deployed: a 4 MB STOW-RS body (past the 2.5 MB kept in memory), held
    short of its end so the server is still reading it. Every temporary file the server then has open
    is read from outside the process (/proc/<pid>/fd): together they hold the body's bytes, and not
    one shows the patient's name. With Django's own spool (a plain temporary file in /tmp) the name
    is there."""
    body = MARKER * (4_000_000 // len(MARKER))
    web, data = web
    client = socket.create_connection(("127.0.0.1", web.port))
    try:
        head = (
            "POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
            f"Content-Length: {len(body) + 100}\r\n\r\n"
        ).encode()
        client.sendall(head + body)  # 100 bytes short: the server waits for them

        # the server's temp directory (READROOM_DATA_DIR/tmp) and the system's (Django's spool)
        directories = (str(data), tempfile.gettempdir())

        def spooled() -> list[Path]:
            files = _temp_files_open(web.process.pid, directories)
            return files if sum(os.stat(f).st_size for f in files) >= len(body) // 2 else []

        wait_until(lambda: bool(spooled()), timeout=30)
        on_disk = b"".join(Path(f).read_bytes() for f in spooled())
        assert len(on_disk) >= len(body) // 2
        assert MARKER not in on_disk
    finally:
        client.close()


@pytest.mark.django_db(transaction=True)
def test_a_stow_past_the_memory_limit_is_stored_whole_through_the_encrypted_spool(
    web, admin_chicago, chicago
):
    """The same path carrying a real request: a hospital's STOW-RS of eight 512² CT slices (4 MB)
    through uvicorn with an API token — every instance stored, indexed and read back intact."""
    import requests

    from accounts.tokens import api_token_issue
    from imaging.models import Study
    from tests.dicom_data import ct_series

    series = ct_series(count=8, size=512, accession="ACC-SPOOL-1")
    parts = list(series.part10())
    body = b"".join(b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts)
    body += b"--b0undary--\r\n"
    assert len(body) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    token = api_token_issue(user=admin_chicago).key
    web, _data = web
    answer = requests.post(
        f"{web.url}/dicomweb/studies",
        data=body,
        headers={
            "Authorization": f"Token {token}",
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary',
            "Accept": "application/dicom+json",
        },
        timeout=60,
    )
    assert answer.status_code == 200, answer.text[:500]
    study = Study.objects.get(study_instance_uid=series.study_uid)
    assert (study.facility_id, study.number_of_instances) == (chicago.pk, 8)
    frames = requests.get(
        f"{web.url}/dicomweb/studies/{series.study_uid}/series/{series.series_uid}"
        f"/instances/{series.sop_uids[-1]}",
        headers={
            "Authorization": f"Token {token}",
            "Accept": 'multipart/related; type="application/dicom"',
        },
        timeout=60,
    )
    assert frames.status_code == 200 and parts[-1] in frames.content


def test_the_django_read_body_it_copies_is_the_one_it_was_written_for():
    """If this fails: compare Django's ``ASGIHandler.read_body`` with ``ClosingASGIHandler.read_body``,
    carry the change into the copy (keeping the BodySpool), then put the new hash in
    ``radiology.asgi_handler.UPSTREAM_READ_BODY``."""
    import hashlib
    import inspect

    from django.core.handlers.asgi import ASGIHandler

    from radiology.asgi_handler import UPSTREAM_READ_BODY

    source = inspect.getsource(ASGIHandler.read_body)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == UPSTREAM_READ_BODY
