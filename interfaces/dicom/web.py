"""DICOMweb (PS3.18) under ``/dicomweb/``: STOW-RS, QIDO-RS and WADO-RS, so OHIF, a hospital PACS or
``dicomweb-client`` can store, search and retrieve (DESIGN.md §5).

Views are thin: authentication is DRF's (session or ``Authorization: Token …``), who sees which
study is decided in ``web_access`` (on top of ``imaging.selectors.studies_visible_to``), matching in
``web_query``, DICOM JSON in ``web_json``, multipart in ``web_multipart``, pixels in
``imaging.rendering``. Content negotiation is done here by DICOMweb's media types, not DRF's."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from django.conf import settings
from django.db.models import F
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from pydicom import dcmread
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from rest_framework.authentication import SessionAuthentication
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from accounts.audit import ReadKind, record_phi_search
from accounts.authentication import AuditedTokenAuthentication
from imaging.models import Instance, Series, Study
from imaging.rendering import (
    FORMATS,
    RenderError,
    Viewport,
    Window,
    error_image,
    frame_render,
    part10_frame_count,
    viewport_parse,
    window_parse,
)
from imaging.services import instance_display_problem_record
from imaging.storage import StorageError, encrypted_read
from imaging.transcoding import (
    NATIVE_TARGETS,
    UNCOMPRESSED,
    TranscodeError,
    frame_native,
    instance_transcode,
)
from interfaces.dicom import web_access as access
from interfaces.dicom.metadata_sidecar import instance_metadata_json
from interfaces.dicom.web_json import (
    SERIES_LEVEL_TAGS,
    STUDY_LEVEL_TAGS,
    JsonDataset,
    element_at,
    header_attributes,
    instance_attributes,
    series_attributes,
    stow_http_status,
    stow_response,
    study_attributes,
)
from interfaces.dicom.web_multipart import (
    MediaRange,
    accept_parse,
    boundary_new,
    media_type_parse,
    multipart_content_type,
    multipart_parts,
    multipart_stream,
)
from interfaces.dicom.web_query import (
    INSTANCE,
    SERIES,
    STUDY,
    QidoRequest,
    QueryError,
    qido_filter,
    qido_parse,
)
from interfaces.dicom.web_stow import stow_reader_store, stow_request_store

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
READ_CHUNK = 1024 * 1024
# Media type of a compressed frame's bitstream by transfer syntax (PS3.18 Table 8.7.3-2).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


# --- plumbing ------------------------------------------------------------------------------------


class MayUseImages(BasePermission):
    message = "Your role does not include access to images or patient data."

    def has_permission(self, request, view) -> bool:
        return access.may_use_images(request.user)


class DicomWebNegotiation(BaseContentNegotiation):
    """DICOMweb media types (multipart/related, application/dicom+json, image/*) are negotiated by
    each view; DRF only renders error bodies, so it must not refuse an Accept it does not know."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class BodyLeftUnread(BaseParser):
    """Leaves the body to the view (STOW streams it part by part). DRF asks a parser for the body
    whenever ``request.POST`` is read — Django's CSRF check does that for a session-authenticated
    POST (OHIF's "Create SR") — and without one it answers 415 before the view runs."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


class DicomWebView(APIView):
    # Token first: its WWW-Authenticate challenge makes an anonymous call 401, not 403.
    authentication_classes = (AuditedTokenAuthentication, SessionAuthentication)
    permission_classes = (IsAuthenticated, MayUseImages)
    content_negotiation_class = DicomWebNegotiation
    renderer_classes = (JSONRenderer,)
    parser_classes = (BodyLeftUnread,)  # STOW reads the raw body as a stream; nothing else has one

    def handle_exception(self, exc):
        if isinstance(exc, StorageError):
            # A stored file is missing or fails its integrity check: a server fault to look into.
            log.error("DICOMweb %s: %s", self.request.path, exc)
            return _error(
                500, "A stored image file cannot be read. Operations can find the details in the log."
            )
        return super().handle_exception(exc)


def _error(status: int, message: str) -> HttpResponse:
    return HttpResponse(json.dumps({"detail": message}), status=status, content_type="application/json")


def _warning_header(text: str) -> str:
    # RFC 7234 §5.5 warn-code 299 "miscellaneous persistent warning" (PS3.18 §8.3.4.1 uses it).
    # every control character (not only CR/LF) is replaced: a server refuses to send a header with one
    safe = re.sub(r"[\x00-\x1f\x7f]", " ", text.encode("ascii", "replace").decode().replace('"', "'"))
    return f'299 ReadRoom "{safe[:300]}"'


def _dicom_json(data, *, status: int = 200, warnings: list[str] | None = None) -> HttpResponse:
    return _dicom_json_text(json.dumps(data, separators=(",", ":")), status=status, warnings=warnings)


def _dicom_json_text(text: str, *, status: int = 200, warnings: list[str] | None = None) -> HttpResponse:
    """JSON already serialised (the metadata side-cars are joined as text, not parsed again)."""
    response = HttpResponse(text, status=status, content_type=DICOM_JSON)
    if warnings:
        response["Warning"] = ", ".join(_warning_header(text) for text in warnings)  # RFC 7234 §5.5 list
    return response


def _base_url(request) -> str:
    """Absolute URL of the DICOMweb root, e.g. ``https://readroom.example.org/dicomweb/``."""
    return request.build_absolute_uri(reverse("dicomweb:root"))


def _study_url(request, study_uid: str) -> str:
    return f"{_base_url(request)}studies/{study_uid}"


def _series_url(request, study_uid: str, series_uid: str) -> str:
    return f"{_study_url(request, study_uid)}/series/{series_uid}"


def _instance_url(request, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{_series_url(request, study_uid, series_uid)}/instances/{sop_uid}"


def _peer(request) -> str:
    forwarded = request.headers.get("X-Forwarded-For", "")
    return (forwarded.split(",")[0].strip() if forwarded else request.META.get("REMOTE_ADDR", "")) or ""


def _accepts_json(request) -> bool:
    return any(r.matches(DICOM_JSON) or r.matches("application/json") for r in accept_parse(_accept(request)))


def _accept(request) -> str:
    return request.headers.get("Accept", "")


def _not_acceptable(what: str) -> HttpResponse:
    return _error(406, what)


# --- QIDO-RS -------------------------------------------------------------------------------------

QIDO_PARAMETERS = [
    OpenApiParameter(name, str, description=text)
    for name, text in (
        ("PatientID", "exact, or with * and ? wildcards"),
        ("PatientName", "FAMILY^GIVEN, wildcards, case-insensitive"),
        ("AccessionNumber", "exact or wildcard"),
        ("StudyInstanceUID", "one UID or a list separated by \\ or ,"),
        ("StudyDate", "YYYYMMDD or a range YYYYMMDD-YYYYMMDD (open at either end)"),
        ("ModalitiesInStudy", "e.g. CT or CT\\MR"),
        ("includefield", "keywords or tags, comma-separated, or all"),
        ("limit", "at most this many results"),
        ("offset", "skip this many results"),
    )
]


def _qido(request, level: str, *, study: Study | None = None, series: Series | None = None) -> HttpResponse:
    if not _accepts_json(request):
        return _not_acceptable("QIDO-RS answers in application/dicom+json")
    try:
        pairs = [(name, value) for name, values in request.query_params.lists() for value in values]
        query = qido_parse(pairs, level=level)
    except QueryError as exc:
        return _error(400, str(exc))
    if level == STUDY:
        rows = access.studies_for(request.user).select_related("facility", "patient")
        rows = rows.order_by(F("study_datetime").desc(nulls_last=True), "-id")
    elif level == SERIES:
        rows = access.series_for(request.user).select_related("study__facility", "study__patient")
        rows = rows.order_by("study_id", F("series_number").asc(nulls_last=True), "id")
    else:
        rows = access.instances_for(request.user).select_related(
            "series__study__facility", "series__study__patient"
        )
        rows = rows.order_by(
            "series__study_id", "series__series_number", "series_id", "instance_number", "id"
        )
    if study is not None:
        rows = rows.filter(**{"study" if level == SERIES else "series__study": study})
    if series is not None:
        rows = rows.filter(series=series)
    try:
        rows = qido_filter(rows, query)
    except QueryError as exc:
        return _error(400, str(exc))
    cap = int(getattr(settings, "READROOM_QIDO_MAX_RESULTS", 1000))
    size = min(query.limit or cap, cap)
    page = list(rows[query.offset : query.offset + size + 1])
    warnings = []
    if query.ignored:
        warnings.append(
            "The following query keys are not supported and were ignored: " + ", ".join(query.ignored)
        )
    more = len(page) > size
    if more:
        page = page[:size]
        if not query.limit or query.limit > cap:
            warnings.append(f"There are more than {size} results; ask for the rest with limit and offset.")
    if study is not None:  # the series/instances of one patient's study
        access.study_read_record(request.user, study, kind=ReadKind.DICOMWEB_METADATA)
    else:  # a search across patients: who, what query, how many, and a read row per study returned
        searched: dict[str, list[str]] = {}
        for name, value in pairs:
            searched.setdefault(name, []).append(value)
        returned = [
            row if level == STUDY else row.study if level == SERIES else row.series.study for row in page
        ]
        record_phi_search(
            Study,
            via="QIDO",
            query=searched,
            returned=list(dict.fromkeys(returned)),
            total=None if more else query.offset + len(page),
        )
    return _dicom_json(
        [_qido_result(request, row, level, query, study, series) for row in page], warnings=warnings
    )


def _qido_result(request, row, level: str, query: QidoRequest, study, series) -> JsonDataset:
    if level == STUDY:
        result = study_attributes(row, retrieve_url=_study_url(request, row.study_instance_uid))
        _header_include(result, query, STUDY_LEVEL_TAGS, lambda: _first_instance(series__study=row))
        return result
    if level == SERIES:
        result = {} if study is not None else _study_json(request, row.study)
        result.update(
            series_attributes(
                row, retrieve_url=_series_url(request, row.study.study_instance_uid, row.series_instance_uid)
            )
        )
        _header_include(result, query, SERIES_LEVEL_TAGS, lambda: _first_instance(series=row))
        return dict(sorted(result.items()))
    result = {} if study is not None else _study_json(request, row.series.study)
    if series is None:
        result.update(_series_json(request, row.series))
    s = row.series
    result.update(
        instance_attributes(
            row,
            retrieve_url=_instance_url(
                request, s.study.study_instance_uid, s.series_instance_uid, row.sop_instance_uid
            ),
        )
    )
    _header_include(result, query, None, lambda: row)
    return dict(sorted(result.items()))


def _first_instance(**scope) -> Instance | None:
    return Instance.objects.filter(**scope).order_by("series__series_number", "instance_number", "id").first()


def _header_include(result: JsonDataset, query: QidoRequest, level_tags, instance_of) -> None:
    """Add what ``includefield`` asks for and the index does not hold (Rows, Number of Frames,
    Institution Name …) from a stored header: the instance's own, or at the study/series level its
    first instance's. ``all``: every header attribute at the instance level, ``level_tags`` above it.
    Only read when asked: a header is a decrypted file."""
    held = {int(k, 16) for k in result}
    if query.include_all:
        wanted = None if level_tags is None else (level_tags | query.includefields) - held
    else:
        wanted = query.includefields - held
    if wanted is not None and not wanted:
        return
    instance = instance_of()
    if instance is None:
        return
    try:
        ds = dcmread(BytesIO(encrypted_read(instance.storage_path)), stop_before_pixels=True)
    except (StorageError, OSError, ValueError) as exc:
        log.warning("QIDO includefield: cannot read %s: %s", instance.sop_instance_uid, exc)
        return
    for key, value in header_attributes(ds, wanted).items():
        result.setdefault(key, value)


def _study_json(request, study: Study) -> JsonDataset:
    return study_attributes(study, retrieve_url=_study_url(request, study.study_instance_uid))


def _series_json(request, series: Series) -> JsonDataset:
    attrs = series_attributes(
        series, retrieve_url=_series_url(request, series.study.study_instance_uid, series.series_instance_uid)
    )
    return {k: v for k, v in attrs.items() if k not in ("00081190",)}  # the instance's URL wins


# --- STOW-RS -------------------------------------------------------------------------------------


def _body_chunks(request) -> Iterator[bytes]:
    raw = request._request  # the Django request: its stream, unread (no DRF parser touched it)
    while chunk := raw.read(READ_CHUNK):
        yield chunk


def _stow(request, study_uid: str | None) -> HttpResponse:
    content_type = media_type_parse(request.META.get("CONTENT_TYPE", ""))
    if content_type.type != "multipart/related":
        return _error(
            415, 'STOW-RS takes multipart/related; type="application/dicom" (one DICOM file per part).'
        )
    if content_type.subtype_param not in ("", "application/dicom"):
        return _error(
            415,
            f"Parts of type {content_type.subtype_param!r} are not supported: send Part 10 files as "
            'multipart/related; type="application/dicom".',
        )
    boundary = content_type.params.get("boundary", "")
    if not boundary:
        return _error(400, "The Content-Type has no boundary parameter.")
    if access.stores_as_reader(request.user):  # OHIF's "Create SR" (docs/viewer.md)
        result = stow_reader_store(
            user=request.user,
            parts=multipart_parts(_body_chunks(request), boundary),
            study_uid=study_uid,
            peer=_peer(request),
            instance_url=lambda st, se, so: _instance_url(request, st, se, so),
        )
    else:
        try:
            facility = access.stow_facility(request.user, request.query_params.get("facility"))
        except access.StoreRefused as refusal:
            return _error(refusal.status, refusal.message)
        result = stow_request_store(
            facility=facility,
            parts=multipart_parts(_body_chunks(request), boundary),
            study_uid=study_uid,
            peer=_peer(request),
            instance_url=lambda st, se, so: _instance_url(request, st, se, so),
        )
    if not result.outcomes:
        hint = ""
        if "CONTENT_LENGTH" not in request.META:
            hint = " (the body arrived empty: send it with a Content-Length rather than chunked)"
        return _error(400, f"No DICOM parts in the request: {result.syntax_error or 'empty body'}{hint}")
    stored_studies = result.study_uids
    study_for_url = study_uid or (next(iter(stored_studies)) if len(stored_studies) == 1 else "")
    body = stow_response(
        result.outcomes, study_retrieve_url=_study_url(request, study_for_url) if study_for_url else ""
    )
    status = stow_http_status(result.outcomes)
    warnings = []
    if result.syntax_error:
        status = 202 if status == 200 else status
        warnings.append(f"The request body broke off: {result.syntax_error}")
    return _dicom_json(body, status=status, warnings=warnings)


# --- WADO-RS: instances --------------------------------------------------------------------------


AS_STORED = "*"


def _dicom_acceptable(request, syntaxes: set[str], *, single: bool) -> tuple[str, str] | None:
    """(``"multipart"`` or ``"single"``, the transfer syntax to send: a UID or ``*`` = as stored),
    or None (406).

    PS3.18 §8.7.3.5: a range without a transfer-syntax parameter (and no Accept at all) asks for
    Explicit VR Little Endian; ``*`` takes the instances as stored; a named syntax is served when
    every instance is stored in it or it is one ReadRoom transcodes to (native little endian)."""
    for r in accept_parse(_accept(request)):
        ts = r.params.get("transfer-syntax") or ExplicitVRLittleEndian
        if ts != AS_STORED and syntaxes <= {ts}:
            ts = AS_STORED  # already stored that way: no decoding
        fits = ts == AS_STORED or ts in NATIVE_TARGETS
        if r.type in ("*/*", "*"):
            return "multipart", ExplicitVRLittleEndian if syntaxes - {ExplicitVRLittleEndian} else AS_STORED
        if r.type == "multipart/related" and r.subtype_param in ("", "application/dicom", "*/*") and fits:
            return "multipart", ts
        if r.type == "application/dicom" and single and fits:
            return "single", ts
    return None


def _retrieve(request, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None):
    study, instances = access.instances_in(request.user, study_uid, series_uid, sop_uid)
    syntaxes = {i.transfer_syntax_uid or ExplicitVRLittleEndian for i in instances}
    acceptable = _dicom_acceptable(request, syntaxes, single=sop_uid is not None)
    if acceptable is None:
        return _not_acceptable(
            f"Stored as {', '.join(sorted(syntaxes))}; ReadRoom sends instances as stored "
            "(transfer-syntax=*) or transcoded to Explicit or Implicit VR Little Endian."
        )
    mode, target = acceptable
    if len(instances) == 1:
        # One instance: transcoded before the answer starts, so a failure is a 406 with the reason.
        try:
            syntax, data = _instance_bytes(instances[0], target)
        except TranscodeError as exc:
            return _not_acceptable(f"{exc.message}; ask with transfer-syntax=* for the stored bytes")
        access.study_read_record(request.user, study, kind=ReadKind.DICOMWEB_INSTANCES)
        if mode == "single":
            return HttpResponse(data, content_type=f"application/dicom; transfer-syntax={syntax}")
        boundary = boundary_new()
        return HttpResponse(
            b"".join(multipart_stream([(f"application/dicom; transfer-syntax={syntax}", data)], boundary)),
            content_type=multipart_content_type("application/dicom", boundary),
        )
    access.study_read_record(request.user, study, kind=ReadKind.DICOMWEB_INSTANCES)
    boundary = boundary_new()
    # A study can be gigabytes: stream it, one decrypted instance in memory at a time.
    return StreamingHttpResponse(
        multipart_stream(_instance_parts(instances, target), boundary),
        content_type=multipart_content_type("application/dicom", boundary),
    )


def _instance_bytes(instance: Instance, target: str) -> tuple[str, bytes]:
    """(transfer syntax, Part 10 bytes) of one stored instance, transcoded unless ``target`` is ``*``."""
    stored = instance.transfer_syntax_uid or ExplicitVRLittleEndian
    data = encrypted_read(instance.storage_path)
    if target in (AS_STORED, stored):
        return stored, data
    return target, instance_transcode(data, target)


def _instance_parts(instances: list[Instance], target: str) -> Iterator[tuple[str, bytes]]:
    for instance in instances:
        try:
            syntax, data = _instance_bytes(instance, target)
        except (StorageError, TranscodeError):
            # The response is already streaming: stopping short makes the client see an
            # incomplete body rather than a silently missing (or wrongly encoded) instance.
            log.exception("WADO-RS: cannot send %s", instance.sop_instance_uid)
            raise
        yield f"application/dicom; transfer-syntax={syntax}", data


def _metadata(request, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None):
    if not _accepts_json(request):
        return _not_acceptable("Metadata is answered in application/dicom+json")
    study, instances = access.instances_in(request.user, study_uid, series_uid, sop_uid)
    access.study_read_record(request.user, study, kind=ReadKind.DICOMWEB_METADATA)
    items, unreadable = [], []
    for instance in instances:
        url = _instance_url(
            request, study.study_instance_uid, instance.series.series_instance_uid, instance.sop_instance_uid
        )
        try:
            # the side-car's JSON text (metadata_sidecar: made once per file), bulk data under url
            items.append(instance_metadata_json(instance, url))
        except (StorageError, OSError, ValueError) as exc:
            log.error("WADO-RS metadata: cannot read %s: %s", instance.sop_instance_uid, exc)
            unreadable.append(instance.sop_instance_uid)
    if unreadable and not items:
        return _error(500, "The stored files of these instances cannot be read; operations has been told.")
    warnings = [f"{len(unreadable)} instance(s) could not be read and are missing"] if unreadable else []
    return _dicom_json_text(f"[{','.join(items)}]", warnings=warnings)


# --- WADO-RS: rendered and frames ----------------------------------------------------------------


def _rendered_format(request) -> str | None:
    """PNG unless the client prefers JPEG (lossless is what a diagnostic viewer wants). The
    ``accept`` query parameter, when given, stands for the header (PS3.18 §8.3.3.1): an ``<img>``
    (OHIF's direct thumbnails) cannot set one."""
    for r in accept_parse(request.query_params.get("accept") or _accept(request)):
        if r.type == "image/jpeg":
            return "jpeg"
        if r.matches("image/png"):
            return "png"
    return None


@dataclass(frozen=True)
class RenderAsked:
    """The query of a rendered or thumbnail request (PS3.18 §8.3.5.1)."""

    fmt: str
    window: Window | None
    quality: int
    viewport: Viewport | None


# A thumbnail is small unless the client names its viewport (PS3.18 §10.4.1.1.4: the size is the
# origin server's choice); OHIF draws it in a 128-pixel box.
THUMBNAIL_VIEWPORT = Viewport(128, 128)
# Series that are not the modality's images: structured reports, key objects, presentation states.
NON_IMAGE_MODALITIES = frozenset({"SR", "KO", "PR", "DOC", "REG", "SEG", "RWV"})


def _render_asked(request, *, thumbnail: bool) -> RenderAsked | HttpResponse:
    fmt = _rendered_format(request)
    if fmt is None:
        return _not_acceptable("Rendered images are image/png or image/jpeg.")
    params = request.query_params
    try:
        window = window_parse(params["window"]) if params.get("window") else None
    except ValueError as exc:
        return _error(400, f"window: {exc}")
    try:
        viewport = viewport_parse(params["viewport"]) if params.get("viewport") else None
    except ValueError as exc:
        return _error(400, f"viewport: {exc}")
    try:
        quality = int(params.get("quality", 90))
    except ValueError:
        return _error(400, "quality is an integer from 1 to 100")
    if thumbnail and viewport is None:
        viewport = THUMBNAIL_VIEWPORT
    return RenderAsked(fmt, window, quality, viewport)


def _render(instance: Instance, frame_index: int, asked: RenderAsked, part10: bytes | None = None) -> bytes:
    window = asked.window
    return frame_render(
        instance,
        frame_index,
        window.center if window else None,
        window.width if window else None,
        asked.fmt,
        function=window.function if window else "linear",
        quality=asked.quality,
        viewport=asked.viewport,
        part10=part10,
    )


def _image_response(instance: Instance, frame_index: int, asked: RenderAsked) -> HttpResponse:
    try:
        body = _render(instance, frame_index, asked)
    except RenderError as exc:
        if exc.status == 404:
            return _error(404, exc.message)
        # An image that says why, so a viewer's <img> shows the reason; the status tells a client.
        response = HttpResponse(error_image(exc.message), status=exc.status, content_type="image/png")
        response["Warning"] = _warning_header(exc.message)
        return response
    response = HttpResponse(body, content_type=FORMATS[asked.fmt])
    response["Cache-Control"] = "no-store, private"  # PHI: never in a shared or disk cache
    return response


def _rendered(request, study_uid: str, series_uid: str, sop_uid: str, frame: str | None = None):
    """One frame rendered: the instance's first, or the one named (one per request)."""
    asked = _render_asked(request, thumbnail=False)
    if isinstance(asked, HttpResponse):
        return asked
    try:
        frame_index = int(frame) - 1 if frame is not None else 0
    except ValueError:
        return _error(400, "the frame number is an integer (one frame per rendered request)")
    if frame_index < 0:
        return _error(400, "frames are numbered from 1")
    instance = access.instance_by_uid(request.user, study_uid, series_uid, sop_uid)
    access.study_frames_read_record(request.user, instance.series.study)
    return _image_response(instance, frame_index, asked)


def _image_instances(instances: list[Instance]) -> list[Instance]:
    """The modality's images of a study or series, in reading order: not a reader's SR or key
    object, not a report or presentation state."""
    return [
        i for i in instances if i.series.made_by_id is None and i.series.modality not in NON_IMAGE_MODALITIES
    ]


def _rendered_many(request, study_uid: str, series_uid: str | None = None):
    """Study or series rendered (PS3.18 §10.4.1.1.3): every frame of every image, one part each,
    in reading order, streamed. A frame that cannot be rendered is a part with the image that
    says why (the answer has already begun; its status cannot change)."""
    asked = _render_asked(request, thumbnail=False)
    if isinstance(asked, HttpResponse):
        return asked
    study, instances = access.instances_in(request.user, study_uid, series_uid)
    images = _image_instances(instances)
    if not images:
        return _error(404, "There are no images to render here.")
    access.study_frames_read_record(request.user, study)
    boundary = boundary_new()
    return StreamingHttpResponse(
        multipart_stream(_rendered_parts(images, asked), boundary),
        content_type=multipart_content_type(FORMATS[asked.fmt], boundary),
    )


def _rendered_parts(images: list[Instance], asked: RenderAsked) -> Iterator[tuple[str, bytes]]:
    for instance in images:
        # One decryption per file, for its frame count and every frame rendered from it
        try:
            part10 = encrypted_read(instance.storage_path)
        except StorageError:
            part10 = None  # frame_render reads it again, flags the study and says why
        count = part10_frame_count(part10) if part10 is not None else 1
        for frame_index in range(count):
            try:
                yield FORMATS[asked.fmt], _render(instance, frame_index, asked, part10)
            except RenderError as exc:
                yield "image/png", error_image(exc.message)


def _thumbnail(request, study_uid: str, series_uid=None, sop_uid=None, frame: str | None = None):
    """A small rendered image standing for a study, series, instance or frame (PS3.18 §10.4.1.1.4):
    for a study or series, the middle image of its first image series (the slice a reader would
    recognise the series by), for an instance its first frame."""
    asked = _render_asked(request, thumbnail=True)
    if isinstance(asked, HttpResponse):
        return asked
    try:
        frame_index = int(frame) - 1 if frame is not None else 0
    except ValueError:
        return _error(400, "the frame number is an integer")
    if frame_index < 0:
        return _error(400, "frames are numbered from 1")
    study, instances = access.instances_in(request.user, study_uid, series_uid, sop_uid)
    if sop_uid is None:
        images = _image_instances(instances)
        if not images:
            return _error(404, "There are no images here to make a thumbnail of.")
        first_series = [i for i in images if i.series_id == images[0].series_id]
        instances = [first_series[(len(first_series) - 1) // 2]]
    instance = instances[0]
    instance.series.study = study
    access.study_frames_read_record(request.user, study)
    return _image_response(instance, frame_index, asked)


def frame_numbers(text: str) -> list[int]:
    numbers = [int(n) for n in text.split(",") if n.strip()]
    if not numbers or min(numbers) < 1:
        raise ValueError
    return numbers


def frames_acceptable(accept: str, syntax: str) -> tuple[str, str] | None:
    """(part media type, transfer syntax of the frames: the stored one or Explicit VR Little
    Endian = decoded), or None (406). PS3.18 Table 8.7.3-2: application/octet-stream without a
    transfer-syntax (and no Accept) is native little endian; ``*`` is the stored bitstream."""
    compressed = syntax not in UNCOMPRESSED
    native = FRAME_MEDIA_TYPES.get(syntax, "application/octet-stream")
    for r in accept_parse(accept):
        if r.type in ("*/*", "*"):
            return "application/octet-stream", ExplicitVRLittleEndian
        part = (r.subtype_param or "application/octet-stream") if r.type == "multipart/related" else r.type
        ts = r.params.get("transfer-syntax")
        part_range = MediaRange(part)
        if part_range.matches("application/octet-stream") and part in ("application/octet-stream", "*/*"):
            if ts in (None, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
                return "application/octet-stream", ExplicitVRLittleEndian
            if ts in ("*", syntax):
                return "application/octet-stream", syntax if compressed else ExplicitVRLittleEndian
            continue
        if compressed and ts in ("*", syntax, None) and part_range.matches(native):
            return native, syntax
    return None


def _frames(request, study_uid: str, series_uid: str, sop_uid: str, frame_list: str | None):
    return frames_answer(request.user, _accept(request), study_uid, series_uid, sop_uid, frame_list)


def frames_answer(
    user,
    accept: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame_list: str | None,
    *,
    audited: bool = False,
    held_rows: bool = False,
) -> HttpResponse:
    """WADO-RS frames for ``user`` (authenticated and role-checked by the caller: the view, or
    ``web_fast`` for OHIF's frame requests), negotiated by the ``accept`` header's text.
    ``frame_list`` None: every frame (the pixel data's bulkdata resource). 404 (Http404) when the
    instance is not the user's to read. ``audited``: the caller has seen this window's PHI row
    written (``access.frames_read_key`` exists), so none is due. ``held_rows``: the instance from
    the granted study's rows held in this process (``access.granted_rows``); a row that disagrees
    with its file (re-sent since) drops them and the answer is made from a fresh row."""
    try:
        numbers = frame_numbers(frame_list) if frame_list is not None else None
    except ValueError:
        return _error(400, "frames are a comma-separated list of numbers from 1, e.g. 1,2,3")
    instance = access.instance_by_uid(user, study_uid, series_uid, sop_uid, held_rows=held_rows)
    syntax = instance.transfer_syntax_uid or ExplicitVRLittleEndian
    acceptable = frames_acceptable(accept, syntax)
    if acceptable is None:
        return _not_acceptable(
            f"Frames are stored as {UID(syntax).name or syntax}; ask with transfer-syntax=* "
            f"(as stored) or type=application/octet-stream (decoded, Explicit VR Little Endian)."
        )
    media_type, target = acceptable
    if not audited:
        access.study_frames_read_record(user, instance.series.study)
    # Sent as stored or sliced out of native pixels: only the few elements that locate a frame are
    # parsed (a CT header's ~260 elements took three quarters of a frame's reading); decoding needs all
    sliced = syntax in NATIVE_TARGETS or (target == syntax and syntax not in UNCOMPRESSED)
    part10 = encrypted_read(instance.storage_path)
    try:
        ds = dcmread(BytesIO(part10), specific_tags=FRAME_LOCATING if sliced else None)
        if held_rows and str(getattr(ds.file_meta, "TransferSyntaxUID", "")) != syntax:
            # a held row older than a re-send of its file: answer from the row as it is now
            access.granted_rows_drop(study_uid)
            return frames_answer(user, accept, study_uid, series_uid, sop_uid, frame_list, audited=audited)
        if sliced and str(getattr(ds.file_meta, "TransferSyntaxUID", "")) != syntax:
            ds = dcmread(BytesIO(part10))  # the index says otherwise than the file: the file decides
    except (InvalidDicomError, EOFError, ValueError) as exc:
        return _error(422, f"The stored object is not readable DICOM: {exc}")
    if "PixelData" not in ds:
        return _error(404, "This instance has no pixel data.")
    try:
        count = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return _error(422, f"Number of Frames is not a number: {ds['NumberOfFrames'].value!r}")
    numbers = numbers or list(range(1, count + 1))
    if max(numbers) > count:
        return _error(404, f"The instance has {count} frame(s).")
    try:
        frames = [_frame_bytes(ds, syntax, target, n - 1, count) for n in numbers]
    except TranscodeError as exc:
        return _not_acceptable(f"{exc.message}; ask with transfer-syntax=* for the stored bitstream")
    except ValueError as exc:  # a fragment table that does not match the frames (pydicom.encaps)
        instance_display_problem_record(
            instance_id=instance.pk, reason=f"the stored pixel data is broken: {exc}"
        )
        return _error(422, f"The stored pixel data is broken: {exc}")
    part_type = f"{media_type}; transfer-syntax={target}"
    boundary = boundary_new()
    return HttpResponse(
        b"".join(multipart_stream(((part_type, frame) for frame in frames), boundary)),
        content_type=multipart_content_type(media_type, boundary),
    )


# What locating a frame needs: how many, how large, and the pixel data itself
FRAME_LOCATING = ["NumberOfFrames", "Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PixelData"]


def _frame_bytes(ds, syntax: str, target: str, index: int, count: int) -> bytes:
    """One frame's bytes: the compressed bitstream as stored, or native little-endian pixels
    (decoded or byte-swapped when stored otherwise)."""
    if target == syntax and syntax not in UNCOMPRESSED:
        return get_frame(ds.PixelData, index, number_of_frames=count)
    if syntax == ExplicitVRBigEndian:
        bits = int(ds.BitsAllocated)
        if bits % 8:
            raise TranscodeError("bit-packed (1-bit) frames are not served as raw frames; use …/rendered")
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits // 8
        data = ds.PixelData[index * size : (index + 1) * size]
        if bits > 8:
            data = np.frombuffer(data, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
        return data
    return frame_native(ds, index)


# --- WADO-RS: bulkdata ---------------------------------------------------------------------------

PIXEL_DATA_TAGS = ("7FE00008", "7FE00009", "7FE00010")  # Float, Double Float and Pixel Data
WORD_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _bulkdata(request, study_uid: str, series_uid: str, sop_uid: str, reference: str):
    """A ``BulkDataURI`` of the metadata (PS3.18 §10.4.1.1.5). Pixel data is served as its frames
    (the same negotiation as …/frames: as stored with ``transfer-syntax=*``, else decoded to
    native little endian); any other binary value as ``application/octet-stream``, little endian."""
    if reference.upper() in PIXEL_DATA_TAGS:
        return _frames(request, study_uid, series_uid, sop_uid, None)
    single = _bulkdata_acceptable(request)
    if single is None:
        return _not_acceptable(
            'Bulk data is multipart/related; type="application/octet-stream" or application/octet-stream.'
        )
    instance = access.instance_by_uid(request.user, study_uid, series_uid, sop_uid)
    access.study_frames_read_record(request.user, instance.series.study)
    try:
        ds = dcmread(BytesIO(encrypted_read(instance.storage_path)))
    except (InvalidDicomError, EOFError, ValueError) as exc:
        return _error(422, f"The stored object is not readable DICOM: {exc}")
    found = element_at(ds, reference)
    if found is None or found.VR == "SQ" or not isinstance(found.value, bytes):
        return _error(404, f"This instance has no bulk data at {reference}.")
    data = found.value
    size = WORD_SIZES.get(found.VR)
    if size and not ds.original_encoding[1] and len(data) % size == 0:  # stored big endian
        data = np.frombuffer(data, dtype=f">u{size}").astype(f"<u{size}").tobytes()
    if single:
        return HttpResponse(data, content_type="application/octet-stream")
    boundary = boundary_new()
    return HttpResponse(
        b"".join(multipart_stream([("application/octet-stream", data)], boundary)),
        content_type=multipart_content_type("application/octet-stream", boundary),
    )


def _bulkdata_acceptable(request) -> bool | None:
    """True: a single application/octet-stream body; False: multipart (the default); None: 406."""
    for r in accept_parse(_accept(request)):
        if r.type in ("*/*", "*"):
            return False
        if r.type == "multipart/related" and r.subtype_param in ("", "application/octet-stream", "*/*"):
            return False
        if r.type == "application/octet-stream":
            return True
    return None


# --- the views -----------------------------------------------------------------------------------

STUDY_UID = OpenApiParameter("study", str, OpenApiParameter.PATH, description="Study Instance UID")
DICOM_PARTS = OpenApiResponse(OpenApiTypes.BINARY, description='multipart/related; type="application/dicom"')
DICOM_JSON_LIST = OpenApiResponse(OpenApiTypes.OBJECT, description="application/dicom+json array")


class RootView(DicomWebView):
    """``/dicomweb/`` itself: nothing to get; it anchors the URLs the others build."""

    @extend_schema(exclude=True)
    def get(self, request):
        return _error(404, "DICOMweb resources are under studies, series and instances.")


class StudiesView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_search_studies",
        tags=["DICOMweb"],
        summary="QIDO-RS: search for studies",
        description="Studies you may see, newest first, in application/dicom+json (PS3.18 §10.6).",
        parameters=QIDO_PARAMETERS,
        responses={200: DICOM_JSON_LIST},
    )
    def get(self, request):
        return _qido(request, STUDY)

    @extend_schema(
        operation_id="dicomweb_store_instances",
        tags=["DICOMweb"],
        summary="STOW-RS: store instances",
        description=(
            'Body: multipart/related; type="application/dicom", one Part 10 file per part. Stored into the '
            "facility you administer, or ?facility=CODE. 200 all stored, 202 some failed, 409 none, 400 bad "
            "syntax, 415 wrong media type; the answer lists stored and failed instances (PS3.18 §10.5)."
        ),
        parameters=[
            OpenApiParameter("facility", str, description="facility code (operations, admins of several)")
        ],
        request={"multipart/related": OpenApiTypes.BINARY},
        responses={200: DICOM_JSON_LIST, 202: DICOM_JSON_LIST, 409: DICOM_JSON_LIST},
    )
    def post(self, request):
        return _stow(request, None)


class StudyView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_retrieve_study",
        tags=["DICOMweb"],
        summary="WADO-RS: retrieve a study",
        parameters=[STUDY_UID],
        responses={200: DICOM_PARTS},
    )
    def get(self, request, study):
        return _retrieve(request, study)

    @extend_schema(
        operation_id="dicomweb_store_study_instances",
        tags=["DICOMweb"],
        summary="STOW-RS: store instances of this study",
        description="As POST /dicomweb/studies; an instance of another study fails (FailureReason 0xA901).",
        parameters=[STUDY_UID],
        request={"multipart/related": OpenApiTypes.BINARY},
        responses={200: DICOM_JSON_LIST},
    )
    def post(self, request, study):
        return _stow(request, study)


class StudyMetadataView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_study_metadata",
        tags=["DICOMweb"],
        summary="WADO-RS: study metadata",
        responses={200: DICOM_JSON_LIST},
    )
    def get(self, request, study):
        return _metadata(request, study)


class StudySeriesView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_search_study_series",
        tags=["DICOMweb"],
        summary="QIDO-RS: series of a study",
        parameters=QIDO_PARAMETERS,
        responses={200: DICOM_JSON_LIST},
    )
    def get(self, request, study):
        return _qido(request, SERIES, study=access.study_by_uid(request.user, study))


class StudyInstancesView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_search_study_instances",
        tags=["DICOMweb"],
        summary="QIDO-RS: instances of a study",
        responses={200: DICOM_JSON_LIST},
    )
    def get(self, request, study):
        return _qido(request, INSTANCE, study=access.study_by_uid(request.user, study))


class SeriesView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_retrieve_series",
        tags=["DICOMweb"],
        summary="WADO-RS: retrieve a series",
        responses={200: DICOM_PARTS},
    )
    def get(self, request, study, series):
        return _retrieve(request, study, series)


class SeriesMetadataView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_series_metadata",
        tags=["DICOMweb"],
        summary="WADO-RS: series metadata",
        responses={200: DICOM_JSON_LIST},
    )
    def get(self, request, study, series):
        return _metadata(request, study, series)


class SeriesInstancesView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_search_series_instances",
        tags=["DICOMweb"],
        summary="QIDO-RS: instances of a series",
        responses={200: DICOM_JSON_LIST},
    )
    def get(self, request, study, series):
        found = access.series_by_uid(request.user, study, series)
        return _qido(request, INSTANCE, study=found.study, series=found)


class InstanceView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_retrieve_instance",
        tags=["DICOMweb"],
        summary="WADO-RS: retrieve an instance",
        responses={200: DICOM_PARTS},
    )
    def get(self, request, study, series, instance):
        return _retrieve(request, study, series, instance)


class InstanceMetadataView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_instance_metadata",
        tags=["DICOMweb"],
        summary="WADO-RS: instance metadata",
        responses={200: DICOM_JSON_LIST},
    )
    def get(self, request, study, series, instance):
        return _metadata(request, study, series, instance)


RENDER_PARAMETERS = [
    OpenApiParameter("window", str, description="center,width[,function] in modality units (HU for CT)"),
    OpenApiParameter("viewport", str, description="vw,vh[,sx,sy,sw,sh]: fit in vw×vh, aspect kept"),
    OpenApiParameter("quality", int, description="JPEG quality 1–100"),
]


class InstanceRenderedView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_instance_rendered",
        tags=["DICOMweb"],
        summary="WADO-RS: rendered first frame",
        description="image/png (or image/jpeg when Accept asks), windowed; 415 with an explanatory image "
        "when the pixel data cannot be decoded here.",
        parameters=RENDER_PARAMETERS,
        responses={(200, "image/png"): OpenApiTypes.BINARY},
    )
    def get(self, request, study, series, instance):
        return _rendered(request, study, series, instance)


THUMBNAIL_PARAMETERS = [
    OpenApiParameter("viewport", str, description="vw,vh[,sx,sy,sw,sh]: fit in vw×vh (default 128,128)"),
    *RENDER_PARAMETERS,
]


def _rendered_view(name: str, summary: str, handler, parameters=RENDER_PARAMETERS):
    """A rendered or thumbnail view class for one level (study, series, instance, frame)."""

    @extend_schema(
        operation_id=f"dicomweb_{name}",
        tags=["DICOMweb"],
        summary=summary,
        parameters=parameters,
        responses={(200, "image/png"): OpenApiTypes.BINARY},
    )
    def get(self, request, **uids):
        return handler(request, *uids.values())

    return type(f"{name.title().replace('_', '')}View", (DicomWebView,), {"get": get})


StudyRenderedView = _rendered_view(
    "study_rendered", "WADO-RS: every image of the study rendered (multipart)", _rendered_many
)
SeriesRenderedView = _rendered_view(
    "series_rendered", "WADO-RS: every image of the series rendered (multipart)", _rendered_many
)
StudyThumbnailView = _rendered_view(
    "study_thumbnail", "WADO-RS: study thumbnail", _thumbnail, THUMBNAIL_PARAMETERS
)
SeriesThumbnailView = _rendered_view(
    "series_thumbnail", "WADO-RS: series thumbnail", _thumbnail, THUMBNAIL_PARAMETERS
)
InstanceThumbnailView = _rendered_view(
    "instance_thumbnail", "WADO-RS: instance thumbnail", _thumbnail, THUMBNAIL_PARAMETERS
)
FrameThumbnailView = _rendered_view(
    "frame_thumbnail", "WADO-RS: frame thumbnail", _thumbnail, THUMBNAIL_PARAMETERS
)


class FrameRenderedView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_frame_rendered",
        tags=["DICOMweb"],
        summary="WADO-RS: rendered frame",
        parameters=RENDER_PARAMETERS,
        responses={(200, "image/png"): OpenApiTypes.BINARY},
    )
    def get(self, request, study, series, instance, frames):
        return _rendered(request, study, series, instance, frames)


class FramesView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_frames",
        tags=["DICOMweb"],
        summary="WADO-RS: frames",
        description='multipart/related; type="application/octet-stream" with native little-endian frames, '
        "or the compressed bitstreams as stored (transfer-syntax=*).",
        responses={200: OpenApiResponse(OpenApiTypes.BINARY)},
    )
    def get(self, request, study, series, instance, frames):
        return _frames(request, study, series, instance, frames)


class BulkdataView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_bulkdata",
        tags=["DICOMweb"],
        summary="WADO-RS: bulk data",
        description="The value a metadata BulkDataURI points to: pixel data as its frames (as …/frames), "
        'other binary values as multipart/related; type="application/octet-stream".',
        responses={200: OpenApiResponse(OpenApiTypes.BINARY)},
    )
    def get(self, request, study, series, instance, reference):
        return _bulkdata(request, study, series, instance, reference)


class AllSeriesView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_search_series",
        tags=["DICOMweb"],
        summary="QIDO-RS: search for series",
        parameters=QIDO_PARAMETERS,
        responses={200: DICOM_JSON_LIST},
    )
    def get(self, request):
        return _qido(request, SERIES)


class AllInstancesView(DicomWebView):
    @extend_schema(
        operation_id="dicomweb_search_instances",
        tags=["DICOMweb"],
        summary="QIDO-RS: search for instances",
        parameters=QIDO_PARAMETERS,
        responses={200: DICOM_JSON_LIST},
    )
    def get(self, request):
        return _qido(request, INSTANCE)
