"""ReadRoom as a DICOMweb client of a facility's PACS (docs/priors.md, "DICOMweb prior sources"):
QIDO-RS finds the patient's studies — PatientID *and* IssuerOfPatientID, never the name — and WADO-RS
retrieves each chosen one as ``multipart/related; type="application/dicom"``, every part through the
same ingest as a C-STORE (``dicom_instance_receive``), so a prior fetched over HTTP obeys the same rules
as one moved over DIMSE: indexed as that patient's prior, hidden until every announced instance is
indexed, discarded after the last failed attempt.

The standard library's HTTP client (urllib) and our own streaming multipart parser: the response is
read in chunks, so a 300-slice CT is never held whole in memory, and a PACS that stops sending
mid-study runs into the source's ``timeout_seconds`` on a socket read ("timed out mid-retrieve")."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import quote, urlencode, urlsplit

from facilities.models import Facility, auth_secret_variable
from imaging.priors import Candidate, SourceUnavailable
from interfaces import smart_backend
from interfaces.dicom.prior_ingest import PriorIngest
from interfaces.dicom.web_multipart import MultipartError, media_type_parse, multipart_parts

# QIDO-RS return keys we need (PS3.18 §10.6.3): what relevance reads, the identity we check again,
# and how many instances the study holds (what "complete" means for its retrieval)
RETURN_KEYS = ("00100020", "00100021", "0020000D", "00080020", "00080061", "00081030", "00201208")
RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
CHUNK = 256 * 1024


def _timeout(source: dict, default: float) -> float:
    return float(source.get("timeout_seconds") or default)


def _authorization(source: dict, *, timeout: float) -> str | None:
    """The Authorization header from ``auth`` (docs/priors.md): the secret itself is read from the
    environment variable the YAML names, never kept in the onboarding file or the database; for
    ``smart_backend``, a token the EHR's authorization server issued for ReadRoom's signed assertion."""
    auth = source.get("auth")
    if not auth:
        return None
    if auth.get("type") == "smart_backend":
        return f"Bearer {smart_backend.bearer(source, timeout=timeout)}"
    variable = auth_secret_variable(auth)
    secret = os.environ.get(variable)
    if not secret:
        raise SourceUnavailable(f"credentials not configured (${variable} is not set)")
    if auth["type"] == "basic":
        return "Basic " + base64.b64encode(f"{auth['username']}:{secret}".encode()).decode()
    return f"Bearer {secret}"


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port made explicit: what "the same server"
    means before the source's credentials are sent anywhere."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1  # a malformed port is nobody's origin
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class CrossOriginRedirect(urllib.error.URLError):
    pass


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows a redirect with every header of the request, Authorization included: a
    redirect to another scheme, host or port than the source's would hand it the source's
    credentials. Such a redirect is refused (the source fails) instead of followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if origin(newurl) != origin(req.full_url):
            raise CrossOriginRedirect(
                f"redirected to another host ({urlsplit(newurl).netloc or newurl[:80]})"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameOriginRedirects)


def web_open(source: dict, url: str, accept: str, *, timeout: float):
    """One GET of the source with its credentials. A SMART token the server refuses is renewed once
    (it may have been revoked or have expired early): a second 401 is the source's failure."""
    header = _authorization(source, timeout=timeout)
    try:
        return _web_get(url, accept, header, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 401 or (source.get("auth") or {}).get("type") != "smart_backend":
            raise _failure(exc) from exc
        exc.close()  # the refused answer's connection, before the second GET
        smart_backend.refused(source, (header or "").removeprefix("Bearer "))
    try:
        return _web_get(url, accept, _authorization(source, timeout=timeout), timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise _failure(exc) from exc


def _web_get(url: str, accept: str, authorization: str | None, *, timeout: float):
    """The GET; an HTTP error status is raised as urllib's, every other failure as the source's."""
    # base_url is validated as http(s) at onboarding (facilities.models.validate_prior_sources)
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        return _OPENER.open(request, timeout=timeout)  # the facility's own PACS / EHR URL
    except urllib.error.HTTPError:
        raise
    except CrossOriginRedirect as exc:
        raise SourceUnavailable(str(exc.reason)) from exc
    except TimeoutError as exc:
        raise SourceUnavailable("no answer (timed out)") from exc
    except (urllib.error.URLError, ConnectionError, OSError) as exc:
        raise SourceUnavailable("source unreachable") from exc


def _failure(exc: urllib.error.HTTPError) -> SourceUnavailable:
    if exc.code in (401, 403):
        return SourceUnavailable(f"authentication refused (HTTP {exc.code})")
    return SourceUnavailable(f"HTTP {exc.code} from the source")


def _value(item: dict, tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    return str(values[0])


def web_studies(source: dict, *, mrn: str, issuer: str) -> list[Candidate]:
    """QIDO-RS at the study level for the patient; answers naming another MRN or issuer are dropped
    even if the PACS ignored a key (as with C-FIND)."""
    base = source["base_url"].rstrip("/")
    query = [("PatientID", mrn), ("IssuerOfPatientID", issuer)] + [("includefield", t) for t in RETURN_KEYS]
    response = web_open(
        source, f"{base}/studies?{urlencode(query)}", "application/dicom+json", timeout=_timeout(source, 30)
    )
    try:
        with response:
            body = response.read()
    except TimeoutError as exc:
        raise SourceUnavailable("no answer to QIDO-RS (timed out)") from exc
    try:
        answers = json.loads(body) if body.strip() else []  # 204 No Content: no studies
    except ValueError as exc:
        raise SourceUnavailable("QIDO-RS answer is not DICOM JSON") from exc
    found = []
    for item in answers:
        if _value(item, "00100020") != mrn or _value(item, "00100021") != issuer:
            continue
        modalities = tuple(str(m) for m in (item.get("00080061") or {}).get("Value") or [] if m)
        count = _value(item, "00201208")
        found.append(
            Candidate(
                _value(item, "0020000D"),
                _value(item, "00080020"),
                modalities,
                _value(item, "00081030"),
                instances=int(count) if count.isdigit() else None,
            )
        )
    return found


def _chunks(response) -> Iterator[bytes]:
    while chunk := response.read(CHUNK):
        yield chunk


def web_retrieve(
    source: dict, uid: str, facility: Facility, *, announced: int | None
) -> tuple[int, int, str]:
    """(expected, failed, error) of a WADO-RS retrieve of one study, each part ingested as it arrives.
    ``expected`` is what QIDO-RS announced (or what came, when it announced nothing): the prior is
    complete only when that many are indexed."""
    base = source["base_url"].rstrip("/")
    response = web_open(source, f"{base}/studies/{quote(uid)}", RETRIEVE_ACCEPT, timeout=_timeout(source, 60))
    error = ""
    ingest = PriorIngest(facility)  # the parts are stored on a few threads while the next are read
    try:
        with response:
            boundary = media_type_parse(response.headers.get("Content-Type", "")).params.get("boundary", "")
            for part in multipart_parts(_chunks(response), boundary):
                ingest.submit(part.body)
    except TimeoutError:
        error = "timed out mid-retrieve"
    except MultipartError:
        error = "the retrieve ended early"
    except (ConnectionError, OSError):
        error = "connection lost mid-retrieve"
    finally:
        completed, failed = ingest.finish()  # every part handed in is stored or counted
    return max(announced or 0, completed + failed), failed, error
