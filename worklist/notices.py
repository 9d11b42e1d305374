"""Notices to one user on the live channel (issue 14, docs/alerts.md): a study pushed to them, their
claim taken over, a peer review for them, feedback on their read, their critical result overdue —
and, to each operations user, an interface gone silent, a coverage gap starting within the hour, a
claim that timed out (``operations_notice_send``).

Each notice is a ``UserNotice`` row — so a page opened later still shows it (``/live/pending/``) and
only its addressee may acknowledge it — and, after commit, one event on *that user's* group only
(``worklist.user.<id>``): never the study's audience, so nobody else hears of it. The payload is
workflow metadata (facility, procedure, accession), never the patient's name."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q

from accounts.roles import Role
from imaging.models import Study
from worklist.broadcast import group_event_send
from worklist.groups import user_group
from worklist.models import AlertAcknowledgement, NoticeKind, UserNotice

NOTICE_KEY_PREFIX = "notice:"


class NoticeNotFound(Exception):
    """No such notice for this user (someone else's, already acknowledged, or none)."""


def notice_key(notice: UserNotice) -> str:
    return f"{NOTICE_KEY_PREFIX}{notice.pk}"


def notice_payload(notice: UserNotice) -> dict:
    study = notice.study
    return {
        "key": notice_key(notice),
        "kind": notice.kind,
        "title": NoticeKind(notice.kind).label,
        "facility": study.facility.name if study else "",
        "study": study.pk if study else None,
        "text": notice.text,
        "url": notice.url,
        "at": notice.created_at.isoformat(),
    }


def study_line(study: Study) -> str:
    procedure = (study.order.procedure_text if study.order_id else "") or study.description
    return " · ".join(part for part in (procedure, study.accession_number) if part)


def user_notice_send(
    *,
    user_id: int,
    kind: str,
    at: datetime,
    study: Study | None = None,
    text: str = "",
    url: str = "",
    about: str = "",
) -> UserNotice:
    """Record the notice and tell the user's own pages once the caller's transaction commits."""
    if study is not None and not text:
        text = study_line(study)
    notice = UserNotice.objects.create(
        user_id=user_id,
        kind=kind,
        study=study,
        text=text[:200],
        url=url[:200],
        created_at=at,
        about=about[:80],
    )
    group_event_send(user_group(user_id), {"type": "notice", "notice": notice_payload(notice)})
    return notice


def operations_notice_send(
    *,
    kind: str,
    at: datetime,
    text: str,
    url: str = "",
    study: Study | None = None,
    facility_name: str = "",
    about: str = "",
) -> list[UserNotice]:
    """A notice to every operations user (the desk's own socket group hears of it on all their
    pages), each one's own to acknowledge, recorded (who, when). ``facility_name``: for a notice with
    no study, put at the head of its text (the banner's facility is the study's). ``about``: the
    thing told, so that telling it again (a later sweep, another worker) adds nothing for a user who
    has it already."""
    desk = (
        get_user_model()
        .objects.filter(Q(groups__name=Role.OPERATIONS.value) | Q(is_superuser=True), is_active=True)
        .distinct()
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if facility_name and study is None:
        text = f"{facility_name}: {text}"
    sent = []
    for user_id in desk:
        if about and UserNotice.objects.filter(user_id=user_id, about=about[:80]).exists():
            continue
        try:
            with transaction.atomic():  # a savepoint: a concurrent sweep's row must not abort ours
                sent.append(
                    user_notice_send(
                        user_id=user_id, kind=kind, at=at, study=study, text=text, url=url, about=about
                    )
                )
        except IntegrityError:
            continue  # told already by a concurrent run
    return sent


def notices_pending(user, *, limit: int = 50) -> list[dict]:
    """The user's notices not yet acknowledged, oldest first (the resync)."""
    acknowledged = AlertAcknowledgement.objects.filter(
        user=user, kind__startswith=NOTICE_KEY_PREFIX
    ).values_list("kind", flat=True)
    done = {int(kind.removeprefix(NOTICE_KEY_PREFIX)) for kind in acknowledged}
    notices = UserNotice.objects.filter(user=user).exclude(pk__in=done).select_related("study__facility")
    return [notice_payload(n) for n in notices.select_related("study__order")[:limit]]


def user_notice_acknowledge(user, *, key: str, at: datetime) -> AlertAcknowledgement:
    """Only the addressee acknowledges a notice, once: who and when."""
    ref = key.removeprefix(NOTICE_KEY_PREFIX)
    notice = UserNotice.objects.filter(pk=int(ref), user=user).first() if ref.isdigit() else None
    if notice is None or AlertAcknowledgement.objects.filter(user=user, kind=key).exists():
        raise NoticeNotFound("No such notice for you.")
    return AlertAcknowledgement.objects.create(user=user, study_id=notice.study_id, kind=key, at=at)
