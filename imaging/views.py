"""The image viewer page (DESIGN.md §4 step 5, §8): a study's series, a stack scrolled by wheel
and keyboard, window/level presets; frames rendered on the server (WADO-RS ``…/rendered``).

The page itself is a permission-checked fetch (``access_study``: 404 for a study the user may
not see, an audit row for one they may) and a little JSON for static/readroom/viewer.js."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC

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
from django.views.decorators.http import require_safe

from imaging import ohif
from imaging.models import Instance, Study
from imaging.rendering import PRESETS
from imaging.selectors import access_study, ohif_viewer_url, studies_visible_to, study_priors
from worklist.assignment import study_activity_touch
from worklist.tat import study_viewer_opened

SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("↓ → PageDown / wheel down", "next image (PageDown: 10 images)"),
    ("↑ ← PageUp / wheel up", "previous image (PageUp: 10 images)"),
    ("Home / End", "first / last image"),
    *((p.key, f"{p.name} window ({p.window.center:g}/{p.window.width:g})") for p in PRESETS),
    ("0", "the image's own window"),
    ("] / [", "next / previous series"),
    ("?", "show or hide this list"),
    ("Esc", "close this list"),
)


def _read_begun(request: HttpRequest, study: Study) -> None:
    study_viewer_opened(study_id=study.pk, user=request.user, at=timezone.now())  # TAT: the read began
    # Opening the images is work on a claim: it holds off the abandoned-claim timeout.
    study_activity_touch(study_id=study.pk, user=request.user, at=timezone.now())


@login_required
@require_safe
def study_open(request: HttpRequest, study_id: int) -> HttpResponse:
    """*Open* on the worklist and the report: OHIF on the study and its priors when OHIF is
    installed, else the built-in viewer. Priors are computed here, at the click, for this reader."""
    study = access_study(request.user, study_id)
    url = ohif_viewer_url(study, prior_uids=[p.study_instance_uid for p in study_priors(request.user, study)])
    return HttpResponseRedirect(url or reverse("imaging:viewer", args=[study.pk]))


@login_required
def study_viewer(request: HttpRequest, study_id: int) -> HttpResponse:
    study = access_study(request.user, study_id)
    _read_begun(request, study)
    series = _series_stack(study)
    config = {
        "studyUid": study.study_instance_uid,
        "seriesBase": reverse("dicomweb:study", args=[study.study_instance_uid]) + "/series/",
        "series": series,
        "presets": [{"key": p.key, "name": p.name, "window": p.window.query()} for p in PRESETS],
    }
    context = {
        "study": study,
        "banner": _banner(study),
        "series": series,
        "presets": PRESETS,
        "shortcuts": SHORTCUTS,
        "viewer_config": config,
        "theme": "dark",  # a reading-room page, whoever opens it (DESIGN.md §8)
        "ohif_url": ohif_viewer_url(study),
    }
    return render(request, "imaging/viewer.html", context)


def _series_stack(study: Study) -> list[dict]:
    """Series in order with their instances (SOP UID, instance number) in stack order: two queries."""
    by_series: dict[int, list] = defaultdict(list)
    rows = (
        Instance.objects.filter(series__study=study)
        .order_by("instance_number", "id")
        .values_list("series_id", "sop_instance_uid", "instance_number")
    )
    for series_id, sop_uid, number in rows:
        by_series[series_id].append([sop_uid, number])
    return [
        {
            "uid": s.series_instance_uid,
            "number": s.series_number,
            "description": s.description or "(no description)",
            "modality": s.modality,
            "count": len(by_series[s.pk]),
            "instances": by_series[s.pk],
        }
        for s in study.series.all()
        if by_series[s.pk]
    ]


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
        access_study(request.user, found[uid].pk)  # one audit row per study shown
    _read_begun(request, found[uids[0]])
    html = ohif.ohif_install_dir().index_html.read_text(encoding="utf-8")
    head = (
        f'<meta name="csrf-token" content="{escape(get_token(request))}">'
        f'<script src="{escape(static("readroom/ohif_bridge.js"))}"></script>'
    )
    html = html.replace("<head>", "<head>" + head, 1)
    html = html.replace("</body>", _live_channel(request) + "</body>", 1)
    response = HttpResponse(html, content_type="text/html; charset=utf-8")
    response["Cache-Control"] = "no-store, private"  # the page names the studies (PHI)
    return cross_origin_isolated(response)


def _live_channel(request: HttpRequest) -> str:
    """The per-user live channel (banner, sound, lock: templates/live/_channel.html, TEAM.md) so
    alerts reach the reader inside OHIF too; nothing when that template does not exist."""
    try:
        return render_to_string("live/_channel.html", request=request)
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
    return cross_origin_isolated(response)
