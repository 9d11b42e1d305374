"""Issue 15 §9, web hardening: every page, API, DICOMweb, FHIR and download response carries
``Cache-Control: no-store``, a strict Content-Security-Policy, nosniff, a Referrer-Policy and no
framing; HSTS in production over TLS. The templates hold no inline script or style the policy would
block (the e2e tests run under the same policy: tests/e2e/test_csp.py, tests/e2e/test_ohif.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from accounts.tokens import api_token_issue
from radiology.middleware import CONTENT_SECURITY_POLICY

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent.parent
# Rendered to PDF by WeasyPrint only (radiology/pdf.py), never served as a page: the browser's CSP
# does not apply, and WeasyPrint fetches nothing, so their <style> stays inline.
PDF_TEMPLATES = {"qa/quarterly.html", "credentialing/packet.html", "reports/report_pdf.html"}


def assert_hardened(response, *, policy: str = CONTENT_SECURITY_POLICY) -> None:
    assert "no-store" in response["Cache-Control"], (response.request["PATH_INFO"], response["Cache-Control"])
    assert response["Content-Security-Policy"] == policy
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_the_policy_allows_no_inline_script_or_style_and_no_framing():
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_anonymous_pages_and_refusals_carry_the_headers(client):
    assert_hardened(client.get("/login/"))
    assert_hardened(client.get("/dicomweb/studies"))  # 401
    assert_hardened(client.get("/api/v1/worklist/"))  # 403/401
    # the query guard answers before every other middleware: still hardened
    guarded = client.get("/dicomweb/studies?bad%0Bkey=1")
    assert guarded.status_code == 400
    assert_hardened(guarded)


def test_phi_pages_api_dicomweb_and_fhir_are_never_cached(client, ops_omar, chicago):
    client.force_login(ops_omar)
    for url in ("/operations/interfaces/", "/api/v1/worklist/", "/api/v1/facilities/", "/dicomweb/studies"):
        response = client.get(url)
        assert response.status_code in (200, 204), (url, response.status_code)
        assert_hardened(response)
    token = api_token_issue(user=ops_omar).key
    fhir = client.get("/fhir/r4/ImagingStudy", HTTP_AUTHORIZATION=f"Token {token}")
    assert fhir.status_code == 200
    assert "no-store" in fhir["Cache-Control"] and fhir["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


def test_a_credentialing_download_is_never_cached(client, mso_mary, dr_neuro_il, settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from imaging import storage

    settings.READROOM_STORAGE_DIR = tmp_path
    storage._keys.cache_clear()
    client.force_login(mso_mary)
    listed = client.get("/api/v1/credentialing/documents/")
    assert listed.status_code == 200
    assert_hardened(listed)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"LICENCE-SCAN" * 50
    created = client.post(
        "/api/v1/credentialing/documents/",
        {
            "profile": dr_neuro_il.radiologist_profile.pk,
            "kind": "other",
            "title": "Licence",
            "file": SimpleUploadedFile("scan.png", png, content_type="image/png"),
        },
    )
    assert created.status_code == 201, created.content
    download = client.get(f"/api/v1/credentialing/documents/{created.json()['id']}/content/")
    assert (
        download.status_code == 200
        and b"".join(download.streaming_content if download.streaming else [download.content]) == png
    )
    assert_hardened(download)
    storage._keys.cache_clear()


def test_a_view_that_says_it_may_be_cached_is_believed(client, settings, tmp_path):
    # OHIF's versioned bundles are the one dynamic response that is cacheable (no PHI): its own
    # Cache-Control is kept (tests/imaging/test_ohif.py asserts "immutable").
    from django.http import HttpResponse

    from radiology.middleware import SecurityHeadersMiddleware

    def view(request):
        response = HttpResponse("x")
        response["Cache-Control"] = "private, max-age=31536000, immutable"
        response["Content-Security-Policy"] = "default-src 'none'"
        return response

    response = SecurityHeadersMiddleware(view)(client.get("/login/").wsgi_request)
    assert response["Cache-Control"] == "private, max-age=31536000, immutable"
    assert response["Content-Security-Policy"] == "default-src 'none'"


def test_hsts_is_sent_over_tls_only(client, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    assert "Strict-Transport-Security" not in client.get("/login/")
    assert client.get("/login/", secure=True)["Strict-Transport-Security"] == "max-age=31536000"


def test_production_settings_turn_hsts_on_by_default(tmp_path):
    import base64

    env = {k: v for k, v in os.environ.items() if k not in {"SECURE_HSTS_SECONDS"}}
    env.update(
        DJANGO_SETTINGS_MODULE="radiology.settings.production",
        READROOM_DATA_DIR=str(tmp_path),
        SECRET_KEY="s" * 50,
        READROOM_STORAGE_KEY=base64.b64encode(b"k" * 32).decode(),
        DATABASE_URL=os.environ.get("DATABASE_URL") or "postgres://x@127.0.0.1:1/x",
        REDIS_URL=os.environ.get("REDIS_URL") or "redis://127.0.0.1:1/0",
    )
    probe = (
        "import json, django; from django.conf import settings; django.setup(); "
        "print(json.dumps([settings.SECURE_HSTS_SECONDS, settings.SESSION_COOKIE_SECURE, "
        "settings.SECURE_PROXY_SSL_HEADER, settings.MIDDLEWARE[0]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    hsts, secure_cookie, proxy_header, outermost = json.loads(done.stdout)
    assert hsts == 365 * 24 * 3600 and secure_cookie is True
    assert proxy_header == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert outermost == "radiology.middleware.SecurityHeadersMiddleware"


TEMPLATE_COMMENT = re.compile(r"{#.*?#}|{% comment %}.*?{% endcomment %}", re.S)
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_STYLE = re.compile(r"<style\b|\sstyle\s*=", re.I)
EVENT_HANDLER = re.compile(r"\son[a-z]+\s*=\s*[\"']", re.I)
JS_URL = re.compile(r"(href|src|action)\s*=\s*[\"']\s*javascript:", re.I)


@pytest.mark.parametrize(
    "template",
    sorted(
        str(p.relative_to(ROOT / "templates"))
        for p in (ROOT / "templates").rglob("*.html")
        if str(p.relative_to(ROOT / "templates")) not in PDF_TEMPLATES
    ),
)
def test_no_template_has_inline_script_or_style(template):
    text = TEMPLATE_COMMENT.sub("", (ROOT / "templates" / template).read_text())
    for pattern in (INLINE_SCRIPT, INLINE_STYLE, EVENT_HANDLER, JS_URL):
        found = pattern.search(text)
        assert found is None, f"{template}: {found.group(0)!r} is blocked by the CSP; use a static file"


def test_the_scan_would_find_what_it_looks_for():
    assert INLINE_SCRIPT.search("<script>alert(1)</script>")
    assert not INLINE_SCRIPT.search('<script src="/static/x.js" defer></script>')
    assert INLINE_STYLE.search('<div style="color:red">') and INLINE_STYLE.search("<style>")
    assert EVENT_HANDLER.search('<button onclick="x()">') and JS_URL.search('<a href="javascript:x()">')
