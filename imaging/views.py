"""The image viewer page (DESIGN.md §4 step 5, §8): a study's series, a stack scrolled by wheel
and keyboard, window/level presets; frames rendered on the server (WADO-RS ``…/rendered``).

The page itself is a permission-checked fetch (``access_study``: 404 for a study the user may
not see, an audit row for one they may) and a little JSON for static/readroom/viewer.js."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from imaging.models import Instance, Study
from imaging.rendering import PRESETS
from imaging.selectors import access_study
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


@login_required
def study_viewer(request: HttpRequest, study_id: int) -> HttpResponse:
    study = access_study(request.user, study_id)
    study_viewer_opened(study_id=study.pk, user=request.user, at=timezone.now())  # TAT: the read began
    # Opening the images is work on a claim: it holds off the abandoned-claim timeout.
    study_activity_touch(study_id=study.pk, user=request.user, at=timezone.now())
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
