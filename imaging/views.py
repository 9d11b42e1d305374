"""The image viewer page (DESIGN.md §4 step 5, §8): a study's series, a stack scrolled by wheel
and keyboard, window/level presets; frames rendered on the server (WADO-RS ``…/rendered``).

The page itself is a permission-checked fetch (``access_study``: 404 for a study the user may
not see, an audit row for one they may) and a little JSON for static/readroom/viewer.js."""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC
from io import BytesIO

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST, require_safe
from pydicom import dcmread
from pydicom.multival import MultiValue

from accounts.audit import ReadKind
from imaging import ohif
from imaging.models import Instance, Study
from imaging.rendering import PRESETS, presets_for
from imaging.selectors import (
    AiFlaggedImage,
    access_study,
    ai_flagged_image,
    ohif_viewer_url,
    studies_visible_to,
    study_blinded_for,
    study_display_problems,
    study_priors,
)
from imaging.storage import StorageError, encrypted_read
from worklist.assignment import study_activity_touch
from worklist.tat import study_viewer_opened

log = logging.getLogger(__name__)
# Objects without pixels: SR, key objects, presentation states, encapsulated PDF/CDA, RT plans.
NO_PIXEL_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.88.11",
    "1.2.840.10008.5.1.4.1.1.88.22",
    "1.2.840.10008.5.1.4.1.1.88.33",
    "1.2.840.10008.5.1.4.1.1.88.34",
    "1.2.840.10008.5.1.4.1.1.88.59",
    "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA
)

SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("↓ → PageDown / wheel down", "next image or frame (PageDown: 10)"),
    ("↑ ← PageUp / wheel up", "previous image (PageUp: 10 images)"),
    ("Home / End", "first / last image"),
    *((p.key, f"{p.name} window ({p.window.center:g}/{p.window.width:g})") for p in PRESETS),
    ("0", "the image's own window"),
    ("drag", "window/level (left/right: width, up/down: level)"),
    ("Shift + drag / + −", "pan / zoom in, out"),
    ("I / R", "invert / reset zoom, pan, invert and window"),
    ("C", "cine: play or stop"),
    ("] / [", "next / previous series"),
    ("?", "show or hide this list"),
    ("Esc", "close this list"),
)


def _read_begun(request: HttpRequest, study: Study) -> None:
    study_viewer_opened(study_id=study.pk, user=request.user, at=timezone.now())  # TAT: the read began
    # Opening the images is work on a claim: it holds off the abandoned-claim timeout.
    study_activity_touch(study_id=study.pk, user=request.user, at=timezone.now())
    from imaging.signals import study_opened

    session_key = getattr(request.session, "session_key", None) or ""
    study_opened.send(sender=Study, study=study, user=request.user, session_key=session_key)


# The three pages the report editor's images pane loads (docs/viewer.md "One reading screen") may be
# framed by this origin, and only while the view itself answers: a refusal (another facility's
# study: 404; a locked screen) is built outside the view and keeps "never framed".
@xframe_options_sameorigin
@login_required
@require_safe
def study_open(request: HttpRequest, study_id: int) -> HttpResponse:
    """*Open* on the worklist and the report: OHIF on the study and its priors when OHIF is
    installed, else the built-in viewer. Priors are computed here, at the click, for this reader."""
    study = access_study(request.user, study_id, kind=ReadKind.VIEWER)
    priors = [p.study_instance_uid for p in study_priors(request.user, study)]
    url = ohif_viewer_url(study, prior_uids=priors, flagged=ai_flagged_image(study))
    return HttpResponseRedirect(url or reverse("imaging:viewer", args=[study.pk]))


@login_required
@require_POST
def study_close(request: HttpRequest, study_id: int) -> HttpResponse:
    """The reader's page on this study went away unsigned (``navigator.sendBeacon`` on page hide,
    with the CSRF token in its form body): tell the session's FHIRcast subscribers the study is
    closed. Only a study the user may see (404 otherwise, as for opening it)."""
    study = access_study(request.user, study_id, kind=ReadKind.VIEWER)
    from imaging.signals import study_closed

    session_key = getattr(request.session, "session_key", None) or ""
    study_closed.send(sender=Study, study=study, user=request.user, session_key=session_key)
    return HttpResponse(status=204)


@xframe_options_sameorigin
@login_required
def study_viewer(request: HttpRequest, study_id: int) -> HttpResponse:
    study = access_study(request.user, study_id, kind=ReadKind.VIEWER)
    _read_begun(request, study)
    series = _series_stack(study)
    flagged = ai_flagged_image(study)
    start = _stack_position(series, flagged)
    config = {
        "studyUid": study.study_instance_uid,
        "seriesBase": reverse("dicomweb:study", args=[study.study_instance_uid]) + "/series/",
        "series": series,
        "presets": [{"key": p.key, "name": p.name, "window": p.window.query()} for p in PRESETS],
        "start": start,
    }
    context = {
        "study": study,
        "ai_start": start,
        "start_series": start["series"] if start else 0,
        "ohif_url": ohif_viewer_url(study),
        "banner": _banner(study),
        "display_problems": study_display_problems(study),
        "series": series,
        "presets": PRESETS,
        "shortcuts": SHORTCUTS,
        "viewer_config": config,
        "report_link": not study_blinded_for(request.user, study.pk),
        "theme": "dark",  # a reading-room page, whoever opens it (DESIGN.md §8)
    }
    # framed in the isolated report editor (docs/viewer.md "Cross-origin isolation"), and the
    # two-window viewer in the same browsing-context group as the editor that opened it
    return cross_origin_isolated(render(request, "imaging/viewer.html", context))


# SOP classes whose instances often hold many frames (cine, enhanced, tomosynthesis): their headers
# are read for the frame count; a classic CT or MR slice is one frame and is not opened here.
MULTI_FRAME_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame
        "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
        "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic
        "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA
        "1.2.840.10008.5.1.4.1.1.12.2",  # X-Ray Radiofluoroscopic
        "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis
        "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
        "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET
        "1.2.840.10008.5.1.4.1.1.128.1",  # Legacy Converted Enhanced PET
    }
)


@dataclass(frozen=True)
class _Header:
    frames: int
    window: list[float] | None  # the image's own centre/width, the start of window/level by drag
    frame_ms: float | None  # cine: the acquisition's frame time


def _header(instance: Instance) -> _Header:
    try:
        ds = dcmread(BytesIO(encrypted_read(instance.storage_path)), stop_before_pixels=True)
    except (StorageError, OSError, ValueError) as exc:
        log.warning("viewer: cannot read the header of %s: %s", instance.sop_instance_uid, exc)
        return _Header(1, None, None)
    window = None
    try:
        centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if centre is not None and width is not None:
            first = lambda v: float(v[0] if isinstance(v, MultiValue) else v)  # noqa: E731
            window = [first(centre), first(width)]
    except (TypeError, ValueError, IndexError):
        window = None
    frame_time = ds.get("FrameTime")
    rate = ds.get("RecommendedDisplayFrameRate") or ds.get("CineRate")
    frame_ms = float(frame_time) if frame_time else (1000.0 / float(rate) if rate else None)
    return _Header(int(ds.get("NumberOfFrames", 1) or 1), window, frame_ms)


def _series_stack(study: Study) -> list[dict]:
    """Series of images in order with their instances (SOP UID, instance number, frames) in stack
    order. A reader's own objects (measurement SRs) and other objects without pixels are left out;
    each series' first image and every multi-frame instance have their header read (frames,
    window, cine rate)."""
    by_series: dict[int, list] = defaultdict(list)
    rows = (
        Instance.objects.filter(series__study=study, series__made_by__isnull=True)
        .exclude(sop_class_uid__in=NO_PIXEL_CLASSES)
        .order_by("instance_number", "id")
    )
    for instance in rows:
        by_series[instance.series_id].append(instance)
    stack = []
    for s in study.series.filter(made_by__isnull=True):
        instances = by_series[s.pk]
        if not instances:
            continue
        first = _header(instances[0])
        entries = []
        for i, instance in enumerate(instances):
            frames = first.frames if i == 0 else 1
            if i and (instance.sop_class_uid in MULTI_FRAME_CLASSES or len(instances) <= 2):
                frames = _header(instance).frames
            entries.append([instance.sop_instance_uid, instance.instance_number, frames])
        stack.append(
            {
                "uid": s.series_instance_uid,
                "number": s.series_number,
                "description": s.description or "(no description)",
                "modality": s.modality,
                "count": sum(e[2] for e in entries),
                "instances": entries,
                "window": first.window,
                "frameMs": first.frame_ms,
                "presets": [p.key for p in presets_for(s.modality)],
            }
        )
    return stack


def _stack_position(series: list[dict], flagged: AiFlaggedImage | None) -> dict | None:
    """Where the page opens when an AI flagged images (docs/ai.md): the series' index in the list and
    the flagged image's first frame in the stack ({"series", "index", "finding"}); None: the top."""
    if flagged is None:
        return None
    for number, entry in enumerate(series):
        if entry["uid"] != flagged.series_instance_uid:
            continue
        index = 0
        for sop, _instance_number, frames in entry["instances"]:
            if sop == flagged.sop_instance_uid:
                return {"series": number, "index": index, "finding": flagged.finding}
            index += frames or 1
    return None


def _banner(study: Study) -> dict:
    """The patient banner: who, which exam, when — in the facility's local time (DESIGN.md §8)."""
    zone = study.facility.zone
    local = study.study_datetime.astimezone(zone) if study.study_datetime else None
    patient = study.patient
    age = patient.age_on(local.date()) if patient and local else None
    return {
        "name": patient.display_name if patient else "Patient not yet matched",
        "mrn": patient.mrn if patient else "",
        "age_sex": " · ".join(
            filter(None, [f"{age} y" if age is not None else "", patient.sex if patient else ""])
        ),
        "birth_date": patient.birth_date if patient else None,
        "accession": study.accession_number,
        "description": study.description,
        "facility": study.facility.name,
        "local_time": local.strftime("%Y-%m-%d %H:%M %Z") if local else "",
        "utc_time": study.study_datetime.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        if study.study_datetime
        else "",
        "stroke": study.is_stroke,
        "priority": study.get_priority_display(),
        # in full: a code stroke's last-known-well and anticoagulant are in OBR-13 and OBR-31
        "history": study.order.clinical_history if study.order_id else "",
    }


# --- OHIF (docs/viewer.md) ------------------------------------------------------------------------


def cross_origin_isolated(response: HttpResponse) -> HttpResponse:
    """COOP/COEP (HTML Standard "cross-origin isolation"): OHIF's volume/MPR viewports need
    SharedArrayBuffer. Only the viewer's own responses carry them: on ReadRoom's other pages they
    would block nothing useful but could break an embed or a pop-up."""
    response["Cross-Origin-Opener-Policy"] = "same-origin"
    response["Cross-Origin-Embedder-Policy"] = "require-corp"
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    return response


def _ohif_user_or_refuse(request: HttpRequest) -> HttpResponse | None:
    """The viewer's scripts and config: signed-in users whose work involves images (403 otherwise:
    a script tag cannot follow a redirect to the login page)."""
    from interfaces.dicom.web_access import may_use_images  # the one rule DICOMweb applies too

    if not ohif.ohif_available():
        raise Http404("The OHIF viewer is not installed")
    if not may_use_images(request.user):
        return HttpResponse("Images are not part of your role, or you are not signed in.", status=403)
    return None


@xframe_options_sameorigin
@login_required
@require_safe
def ohif_viewer(request: HttpRequest, route: str = "") -> HttpResponse:
    """OHIF's page for ``?StudyInstanceUIDs=A,B,…``: every study must be one the user may see now
    (404 otherwise, as for a missing one); each is audited; the first is the study being read."""
    if (refusal := _ohif_user_or_refuse(request)) is not None:
        return refusal
    uids = [u for value in request.GET.getlist("StudyInstanceUIDs") for u in value.split(",") if u.strip()]
    if not uids or len(uids) > 50:
        raise Http404("Open the viewer from the worklist or a report")
    visible = studies_visible_to(request.user).filter(study_instance_uid__in=uids)
    found = {s.study_instance_uid: s for s in visible}
    if set(uids) - found.keys():
        raise Http404("No such study")
    for uid in dict.fromkeys(uids):
        access_study(request.user, found[uid].pk, kind=ReadKind.VIEWER)  # one audit row per study shown
    _read_begun(request, found[uids[0]])
    html = ohif.ohif_install_dir().index_html.read_text(encoding="utf-8")
    head = (
        f'<meta name="csrf-token" content="{escape(get_token(request))}">'
        f'<script src="{escape(static("readroom/ohif_bridge.js"))}"></script>'
    )
    html = html.replace("<head>", "<head>" + head, 1)
    html = html.replace("</body>", _live_channel(request) + "</body>", 1)
    nonce = secrets.token_urlsafe(18)
    # OHIF's page has two small inline scripts of its own (public path, import shim): only they
    # run inline, by a per-response nonce.
    html = html.replace("<script>", f'<script nonce="{nonce}">')
    response = HttpResponse(html, content_type="text/html; charset=utf-8")
    response["Cache-Control"] = "no-store, private"  # the page names the studies (PHI)
    response["Content-Security-Policy"] = ohif_content_security_policy(nonce, framed_by_self=True)
    return cross_origin_isolated(response)


def ohif_content_security_policy(nonce: str | None = None, *, framed_by_self: bool = False) -> str:
    """OHIF's page gets its own policy (docs/security.md): everything still from this origin, framed
    by this origin at most, no plugins, but what OHIF needs to run — its two inline scripts by
    nonce, WebAssembly compilation for the image codecs ('wasm-unsafe-eval'), workers and images
    from blob: URLs, and inline styles (React components and its UI library inject <style> elements
    at run time).

    Without a nonce it is the policy of OHIF's bundles (``ohif_asset``). A browser applies a
    script response's policy only when the script runs as a worker, and OHIF's codec workers need
    'unsafe-eval': the JPEG-LS/JPEG 2000 decoders are emscripten builds whose embind makes
    functions with ``new Function`` (seen in tests/e2e/test_ohif.py's JPEG-LS MR).

    The page gets 'unsafe-eval' too (docs/security.md "OHIF's page and 'unsafe-eval'"): decoding a
    DICOM SEG runs scijs ndarray's ``compileConstructor`` (``new Function``) in the page, and an
    AI's segmentation overlay is not drawn without it. Scripts still run only from this origin or
    by the nonce; ReadRoom's own pages keep no 'unsafe-eval'.

    ``framed_by_self``: the page may be shown in the report editor's images pane (same origin only)."""
    script = (
        f"script-src 'self' 'nonce-{nonce}' 'unsafe-eval' 'wasm-unsafe-eval'"
        if nonce
        else ("script-src 'self' 'unsafe-eval' 'wasm-unsafe-eval'")
    )
    return "; ".join(
        (
            "default-src 'self'",
            script,
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            "connect-src 'self' data: blob:",
            "worker-src 'self' blob:",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'self'" if framed_by_self else "frame-ancestors 'none'",
        )
    )


def _live_channel(request: HttpRequest) -> str:
    """The per-user live channel (banner, sound, lock: templates/live/_channel.html, TEAM.md) so
    alerts reach the reader inside OHIF too; nothing when that template does not exist."""
    try:
        return render_to_string("live/_channel.html", {"live_overlay": True}, request=request)
    except TemplateDoesNotExist:
        return ""


@require_safe
def ohif_app_config(request: HttpRequest) -> HttpResponse:
    if (refusal := _ohif_user_or_refuse(request)) is not None:
        return refusal
    response = HttpResponse(ohif.app_config_js(), content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    return cross_origin_isolated(response)


@require_safe
def ohif_asset(request: HttpRequest, version: str, path: str) -> HttpResponse:
    """OHIF's bundles, wasm and icons: versioned URLs, so cached for a year; the gzipped twin made
    at install is sent to browsers that take gzip (17 MB of app.bundle.js become ~4 MB)."""
    if (refusal := _ohif_user_or_refuse(request)) is not None:
        return refusal
    if version != ohif.VERSION:
        raise Http404("Not this OHIF version")
    asset = ohif.asset_path(path)
    if asset is None:
        raise Http404("No such file")
    gzipped = asset.with_name(asset.name + ".gz")
    use_gzip = "gzip" in request.META.get("HTTP_ACCEPT_ENCODING", "") and gzipped.exists()
    response = FileResponse((gzipped if use_gzip else asset).open("rb"), content_type=ohif.media_type(asset))
    if use_gzip:
        response["Content-Encoding"] = "gzip"
    response["Vary"] = "Accept-Encoding"
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    response["Content-Security-Policy"] = ohif_content_security_policy()  # the codec workers' policy
    return cross_origin_isolated(response)
