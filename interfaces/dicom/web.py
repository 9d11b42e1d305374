"""DICOMweb (PS3.18) under ``/dicomweb/``: STOW-RS, QIDO-RS and WADO-RS, so OHIF, a hospital PACS or
``dicomweb-client`` can store, search and retrieve (DESIGN.md §5).

Views are thin: authentication is DRF's (session or ``Authorization: Token …``), who sees which
study is decided in ``web_access`` (on top of ``imaging.selectors.studies_visible_to``), matching in
``web_query``, DICOM JSON in ``web_json``, multipart in ``web_multipart``, pixels in
``imaging.rendering``. Content negotiation is done here by DICOMweb's media types, not DRF's."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
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
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from rest_framework.authentication import SessionAuthentication
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from accounts.authentication import AuditedTokenAuthentication
from imaging.models import Instance, Series, Study
from imaging.rendering import FORMATS, RenderError, error_image, frame_render, window_parse
from imaging.storage import StorageError, encrypted_read
from interfaces.dicom import web_access as access
from interfaces.dicom.web_json import (
    JsonDataset,
    dataset_json,
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
UNCOMPRESSED = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, "1.2.840.10008.1.2.1.99"}
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
    safe = text.encode("ascii", "replace").decode().replace('"', "'").replace("\r", " ").replace("\n", " ")
    return f'299 ReadRoom "{safe[:300]}"'


def _dicom_json(data, *, status: int = 200, warnings: list[str] | None = None) -> HttpResponse:
    response = HttpResponse(json.dumps(data, separators=(",", ":")), status=status, content_type=DICOM_JSON)
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
    if len(page) > size:
        page = page[:size]
        if not query.limit or query.limit > cap:
            warnings.append(f"There are more than {size} results; ask for the rest with limit and offset.")
    if study is not None:
        access.study_read_record(request.user, study)  # the series/instances of one patient's study
    return _dicom_json(
        [_qido_result(request, row, level, query, study, series) for row in page], warnings=warnings
    )


def _qido_result(request, row, level: str, query: QidoRequest, study, series) -> JsonDataset:
    if level == STUDY:
        return study_attributes(row, retrieve_url=_study_url(request, row.study_instance_uid))
    if level == SERIES:
        result = {} if study is not None else _study_json(request, row.study)
        result.update(
            series_attributes(
                row, retrieve_url=_series_url(request, row.study.study_instance_uid, row.series_instance_uid)
            )
        )
        return result
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
    wanted = None if query.include_all else query.includefields - {int(k, 16) for k in result}
    if wanted is None or wanted:
        # Attributes the index does not hold (Rows, Columns, Number of Frames …): from the header.
        try:
            ds = dcmread(BytesIO(encrypted_read(row.storage_path)), stop_before_pixels=True)
            for key, value in header_attributes(ds, wanted).items():
                result.setdefault(key, value)
        except (StorageError, OSError, ValueError) as exc:
            log.warning("QIDO includefield: cannot read %s: %s", row.sop_instance_uid, exc)
    return dict(sorted(result.items()))


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


def _dicom_acceptable(request, syntaxes: set[str], *, single: bool) -> str | None:
    """``"multipart"``, ``"single"`` (bare application/dicom, one instance) or None (406).

    Instances are sent as stored (we do not transcode). A range without a transfer-syntax
    parameter, or with ``*``, takes them as they are; a range naming transfer syntaxes takes them
    only when every instance is stored in one of those."""
    for r in accept_parse(_accept(request)):
        ts = r.params.get("transfer-syntax")
        fits = ts in (None, "*") or syntaxes <= {ts}
        if r.type in ("*/*", "*"):
            return "multipart"
        if r.type == "multipart/related" and r.subtype_param in ("", "application/dicom", "*/*") and fits:
            return "multipart"
        if r.type == "application/dicom" and single and fits:
            return "single"
    return None


def _retrieve(request, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None):
    study, instances = access.instances_in(request.user, study_uid, series_uid, sop_uid)
    syntaxes = {i.transfer_syntax_uid or ExplicitVRLittleEndian for i in instances}
    mode = _dicom_acceptable(request, syntaxes, single=sop_uid is not None)
    if mode is None:
        return _not_acceptable(
            f"Stored as {', '.join(sorted(syntaxes))}; ask for multipart/related; "
            'type="application/dicom"; transfer-syntax=* (instances are sent as stored).'
        )
    access.study_read_record(request.user, study)
    if mode == "single":
        instance = instances[0]
        return HttpResponse(encrypted_read(instance.storage_path), content_type="application/dicom")
    boundary = boundary_new()
    content_type = multipart_content_type("application/dicom", boundary)
    if len(instances) == 1:  # one instance: no need to stream (nor for ASGI to iterate in a thread)
        return HttpResponse(
            b"".join(multipart_stream(_instance_parts(instances), boundary)), content_type=content_type
        )
    # A study can be gigabytes: stream it, one decrypted instance in memory at a time.
    return StreamingHttpResponse(
        multipart_stream(_instance_parts(instances), boundary), content_type=content_type
    )


def _instance_parts(instances: list[Instance]) -> Iterator[tuple[str, bytes]]:
    for instance in instances:
        try:
            data = encrypted_read(instance.storage_path)
        except StorageError:
            # The response is already streaming: stopping short makes the client see an
            # incomplete body rather than a silently missing instance.
            log.exception("WADO-RS: cannot read %s", instance.sop_instance_uid)
            raise
        syntax = instance.transfer_syntax_uid or ExplicitVRLittleEndian
        yield f"application/dicom; transfer-syntax={syntax}", data


def _metadata(request, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None):
    if not _accepts_json(request):
        return _not_acceptable("Metadata is answered in application/dicom+json")
    study, instances = access.instances_in(request.user, study_uid, series_uid, sop_uid)
    access.study_read_record(request.user, study)
    items, unreadable = [], []
    for instance in instances:
        try:
            ds = dcmread(BytesIO(encrypted_read(instance.storage_path)), stop_before_pixels=True)
        except (StorageError, OSError, ValueError) as exc:
            log.error("WADO-RS metadata: cannot read %s: %s", instance.sop_instance_uid, exc)
            unreadable.append(instance.sop_instance_uid)
            continue
        items.append(dataset_json(ds, transfer_syntax_uid=instance.transfer_syntax_uid))
    if unreadable and not items:
        return _error(500, "The stored files of these instances cannot be read; operations has been told.")
    warnings = [f"{len(unreadable)} instance(s) could not be read and are missing"] if unreadable else []
    return _dicom_json(items, warnings=warnings)


# --- WADO-RS: rendered and frames ----------------------------------------------------------------


def _rendered_format(request) -> str | None:
    """PNG unless the client prefers JPEG (lossless is what a diagnostic viewer wants)."""
    for r in accept_parse(_accept(request)):
        if r.type == "image/jpeg":
            return "jpeg"
        if r.matches("image/png"):
            return "png"
    return None


def _rendered(request, study_uid: str, series_uid: str, sop_uid: str, frame: str | None = None):
    fmt = _rendered_format(request)
    if fmt is None:
        return _not_acceptable("Rendered frames are image/png or image/jpeg.")
    window = None
    if request.query_params.get("window"):
        try:
            window = window_parse(request.query_params["window"])
        except ValueError as exc:
            return _error(400, f"window: {exc}")
    try:
        quality = int(request.query_params.get("quality", 90))
        frame_index = int(frame) - 1 if frame is not None else 0
    except ValueError:
        return _error(400, "quality and the frame number are integers (one frame per rendered request)")
    if frame_index < 0:
        return _error(400, "frames are numbered from 1")
    instance = access.instance_by_uid(request.user, study_uid, series_uid, sop_uid)
    access.study_frames_read_record(request.user, instance.series.study)
    try:
        body = frame_render(
            instance,
            frame_index,
            window.center if window else None,
            window.width if window else None,
            fmt,
            function=window.function if window else "linear",
            quality=quality,
        )
    except RenderError as exc:
        if exc.status == 404:
            return _error(404, exc.message)
        # An image that says why, so a viewer's <img> shows the reason; the status tells a client.
        response = HttpResponse(error_image(exc.message), status=exc.status, content_type="image/png")
        response["Warning"] = _warning_header(exc.message)
        return response
    response = HttpResponse(body, content_type=FORMATS[fmt])
    response["Cache-Control"] = "no-store, private"  # PHI: never in a shared or disk cache
    return response


def _frame_numbers(text: str) -> list[int]:
    numbers = [int(n) for n in text.split(",") if n.strip()]
    if not numbers or min(numbers) < 1:
        raise ValueError
    return numbers


def _frames_acceptable(request, syntax: str) -> str | None:
    """The media type the frames go out as, or None (406)."""
    compressed = syntax not in UNCOMPRESSED
    native = (
        FRAME_MEDIA_TYPES.get(syntax, "application/octet-stream")
        if compressed
        else "application/octet-stream"
    )
    for r in accept_parse(_accept(request)):
        if r.type in ("*/*", "*"):
            return native
        if r.type == "multipart/related":
            part = r.subtype_param or "application/octet-stream"
            ts = r.params.get("transfer-syntax")
        else:
            part, ts = r.type, r.params.get("transfer-syntax")
        part_range = MediaRange(part)
        if (
            not compressed
            and part_range.matches("application/octet-stream")
            and ts
            in (
                None,
                "*",
                ExplicitVRLittleEndian,
                ImplicitVRLittleEndian,
            )
        ):
            return "application/octet-stream"
        if compressed and ts in ("*", syntax, None):
            if part == "application/octet-stream":
                if ts is None:
                    continue  # octet-stream without a transfer syntax asks for native frames
                return part
            if part_range.matches(native):
                return native
    return None


def _frames(request, study_uid: str, series_uid: str, sop_uid: str, frame_list: str):
    try:
        numbers = _frame_numbers(frame_list)
    except ValueError:
        return _error(400, "frames are a comma-separated list of numbers from 1, e.g. 1,2,3")
    instance = access.instance_by_uid(request.user, study_uid, series_uid, sop_uid)
    syntax = instance.transfer_syntax_uid or ExplicitVRLittleEndian
    media_type = _frames_acceptable(request, syntax)
    if media_type is None:
        return _not_acceptable(
            f"Frames are stored as {UID(syntax).name or syntax}; ask with transfer-syntax=* "
            f"or type={FRAME_MEDIA_TYPES.get(syntax, 'application/octet-stream')}."
        )
    access.study_frames_read_record(request.user, instance.series.study)
    ds = dcmread(BytesIO(encrypted_read(instance.storage_path)))
    if "PixelData" not in ds:
        return _error(404, "This instance has no pixel data.")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if max(numbers) > count:
        return _error(404, f"The instance has {count} frame(s).")
    try:
        frames = [_frame_bytes(ds, syntax, n - 1, count) for n in numbers]
    except ValueError as exc:
        return _error(406, str(exc))
    part_type = (
        f"{media_type}; transfer-syntax={syntax if syntax not in UNCOMPRESSED else ExplicitVRLittleEndian}"
    )
    boundary = boundary_new()
    return HttpResponse(
        b"".join(multipart_stream(((part_type, frame) for frame in frames), boundary)),
        content_type=multipart_content_type(media_type, boundary),
    )


def _frame_bytes(ds, syntax: str, index: int, count: int) -> bytes:
    """One frame's bytes: the little-endian native pixels (PS3.18 §8.7.3.3.2: octet-stream frames
    are Explicit VR Little Endian), or the compressed bitstream as stored."""
    if syntax not in UNCOMPRESSED:
        return get_frame(ds.PixelData, index, number_of_frames=count)
    bits = int(ds.BitsAllocated)
    if bits % 8:
        raise ValueError("bit-packed (1-bit) frames are not served as raw frames; use …/rendered")
    size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits // 8
    data = ds.PixelData[index * size : (index + 1) * size]
    if syntax == ExplicitVRBigEndian and bits > 8:
        data = np.frombuffer(data, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
    return data


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
