"""Uploaded documents: encrypted at rest, type judged by content, size limited, clear refusals."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from credentialing.models import Document
from imaging.storage import encrypted_read

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"LICENCE-SCAN" * 50


def _upload(client, profile, name: str, content: bytes, content_type: str):
    file = SimpleUploadedFile(name, content, content_type=content_type)
    return client.post(
        f"/credentialing/profiles/{profile.pk}/documents/",
        {"title": "Board letter", "kind": "board", "file": file},
    )


def test_a_png_is_stored_encrypted_under_the_dossier(client, mso_mary, dr_neuro_il, isolated_storage):
    client.force_login(mso_mary)
    profile = dr_neuro_il.radiologist_profile
    # when the MSO uploads a scan (the browser calls it octet-stream; the bytes say PNG)
    response = _upload(client, profile, "scan.bin", PNG, "application/octet-stream")
    # then it is recorded as a PNG, stored encrypted under credentialing/<profile>/<uuid>
    assert response.status_code == 302
    document = Document.objects.get()
    assert document.content_type == "image/png"
    assert document.storage_path == f"credentialing/{profile.pk}/{document.uuid}"
    on_disk = (isolated_storage / document.storage_path).read_bytes()
    assert b"LICENCE-SCAN" not in on_disk
    assert encrypted_read(document.storage_path) == PNG
    assert document.size_bytes == len(PNG)


def test_a_file_that_is_not_what_it_claims_is_refused(client, mso_mary, dr_neuro_il, isolated_storage):
    client.force_login(mso_mary)
    # given a script named and labelled as a PDF
    response = _upload(
        client,
        dr_neuro_il.radiologist_profile,
        "licence.pdf",
        b"<script>alert(1)</script>",
        "application/pdf",
    )
    # then it is refused with what to do, and nothing is stored
    assert response.status_code == 400
    assert b"This file is not a PDF, PNG or JPEG (judged by its contents, not its name)" in response.content
    assert b"Save or scan it as PDF and upload it again." in response.content
    assert not Document.objects.exists()
    assert not any(isolated_storage.rglob("*"))


def test_an_oversize_file_is_refused_before_it_is_stored(
    client, settings, mso_mary, dr_neuro_il, isolated_storage
):
    settings.READROOM_DOCUMENT_MAX_BYTES = 1024 * 1024
    client.force_login(mso_mary)
    big = b"%PDF-1.7\n" + b"0" * (2 * 1024 * 1024)
    response = _upload(client, dr_neuro_il.radiologist_profile, "big.pdf", big, "application/pdf")
    assert response.status_code == 400
    assert b"This file is 2.0 MB; documents may be at most 1.0 MB." in response.content
    assert not Document.objects.exists()


def test_an_empty_file_is_refused(client, mso_mary, dr_neuro_il, isolated_storage):
    client.force_login(mso_mary)
    response = _upload(client, dr_neuro_il.radiologist_profile, "empty.pdf", b"", "application/pdf")
    assert response.status_code == 400
    assert not Document.objects.exists()


def test_api_upload_refuses_wrong_type_with_the_same_message(client, mso_mary, dr_neuro_il, isolated_storage):
    client.force_login(mso_mary)
    file = SimpleUploadedFile("x.jpg", b"GIF89a....", content_type="image/jpeg")
    response = client.post(
        "/api/v1/credentialing/documents/",
        {"profile": dr_neuro_il.radiologist_profile.pk, "title": "x", "kind": "other", "file": file},
    )
    assert response.status_code == 400
    assert "not a PDF, PNG or JPEG" in response.json()["file"][0]
