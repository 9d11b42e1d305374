"""Telling credentialing staff: in-app notifications and e-mail.

Idempotent by construction: each notification has a key naming the event — the credential, its
expiry date and the threshold (90/60/30 days, or overdue) — unique per recipient, so running the
daily check twice, or after a restart, tells nobody anything twice. A renewal changes the expiry
date and so re-arms the thresholds. Only notifications created by this run go into its e-mail."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import datetime

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction

from accounts.models import User
from accounts.roles import Role
from credentialing.models import (
    GRANTED_PRIVILEGE_STATUSES,
    FacilityPrivilege,
    LicenceStatus,
    Notification,
    NotificationLevel,
    PrivilegeStatus,
    RadiologistProfile,
    StateLicence,
)
from credentialing.selectors import (
    LATEST_US_ZONE,
    CredentialFlag,
    ExpiringItem,
    expiring_items,
    expiry_windows,
    facility_day,
    flagged_readers,
)


def staff_recipients() -> list[User]:
    return list(User.objects.filter(groups__name=Role.CREDENTIALING.value, is_active=True).order_by("pk"))


def staff_notify(
    *, key: str, message: str, url: str = "", level: str = NotificationLevel.INFO
) -> list[Notification]:
    """One notification per credentialing staff member, unless they already have this key.
    Returns the ones created now."""
    created = []
    for recipient in staff_recipients():
        notification, was_created = Notification.objects.get_or_create(
            recipient=recipient, key=key, defaults={"message": message[:500], "url": url, "level": level}
        )
        if was_created:
            created.append(notification)
    return created


def _describe(item: ExpiringItem) -> tuple[str, str, str]:
    """(threshold, level, sentence) for an expiring or overdue credential."""
    who = f"{item.profile}'s {item.label}"
    plural = item.kind == "privilege"  # "privileges at … expire"
    if item.overdue:
        verb = "were" if plural else "was"
        sentence = f"{who} expired on {item.expires_on:%Y-%m-%d} and {verb} not renewed"
        return "overdue", NotificationLevel.DANGER, sentence
    level = NotificationLevel.WARNING if item.window == 30 else NotificationLevel.INFO
    when = "today" if item.days_left == 0 else f"in {item.days_left} day{'s' if item.days_left != 1 else ''}"
    return (
        str(item.window),
        level,
        f"{who} expire{'' if plural else 's'} on {item.expires_on:%Y-%m-%d} ({when})",
    )


@transaction.atomic
def expiries_notify(*, at: datetime) -> tuple[int, int]:
    """Notify every credentialing staff member of each credential entering a 90/60/30-day window or
    overdue, once; e-mail each of them a digest of what is new. Returns (notifications, e-mails)."""
    new: dict[int, list[Notification]] = defaultdict(list)
    for item in expiring_items(at, within_days=max(expiry_windows(), default=0)):
        if item.window is None and not item.overdue:
            continue
        threshold, level, sentence = _describe(item)
        key = f"expiry:{item.key}:{item.expires_on.isoformat()}:{threshold}"
        url = f"/credentialing/profiles/{item.profile.pk}/"
        for notification in staff_notify(key=key, message=sentence, url=url, level=level):
            new[notification.recipient_id].append(notification)
    emails = _digests(new)
    transaction.on_commit(lambda: [send_mail(**mail) for mail in emails])
    return sum(map(len, new.values())), len(emails)


def _flag_sentence(flag: CredentialFlag) -> str:
    problems = "; ".join(flag.problems)
    if flag.barred_names:
        sentence = (
            f"{flag.reader_name} is not eligible at {', '.join(flag.barred_names)} until verified: {problems}"
        )
    else:
        sentence = f"{flag.reader_name}'s credentials need verification: {problems}"
    if flag.allowed:
        sentence += f" (reads at {', '.join(flag.allowed)} before verification)"
    return sentence


@transaction.atomic
def verification_notify(*, at: datetime) -> int:
    """Tell credentialing staff of each reader the matrix flags (an unverified licence in force, a
    malpractice cover missing, lapsed or unverified), once per reader and set of problems: a new
    problem, or one solved, is a new state to hear of; the same flag tomorrow is not. In-app only:
    the e-mail digest is about dates (expiries_notify), and the flag stays on the matrix until solved.
    Returns the notifications created."""
    flags = flagged_readers(at)
    profiles = dict(
        RadiologistProfile.objects.filter(user_id__in=[f.user_id for f in flags]).values_list("user_id", "pk")
    )
    created = 0
    for flag in flags:
        state = hashlib.sha256("\n".join(flag.problems).encode()).hexdigest()[:16]
        created += len(
            staff_notify(
                key=f"verification:{flag.user_id}:{state}",
                message=_flag_sentence(flag),
                url=f"/credentialing/profiles/{profiles[flag.user_id]}/",
                level=NotificationLevel.WARNING if flag.barred_names else NotificationLevel.INFO,
            )
        )
    return created


def _digests(new: dict[int, list[Notification]]) -> list[dict]:
    recipients = {u.pk: u for u in User.objects.filter(pk__in=new.keys())}
    mails = []
    for user_id, notifications in new.items():
        user = recipients[user_id]
        if not user.email:
            continue
        overdue = sum(n.level == NotificationLevel.DANGER for n in notifications)
        subject = (
            f"ReadRoom credentialing: {len(notifications)} expir{'y' if len(notifications) == 1 else 'ies'}"
        )
        subject += f", {overdue} overdue" if overdue else ""
        lines = [
            f"- {n.message}" for n in sorted(notifications, key=lambda n: n.level != NotificationLevel.DANGER)
        ]
        body = "\n".join(
            [
                "Credentials that need attention:",
                "",
                *lines,
                "",
                "Open the credentialing workspace to renew them.",
            ]
        )
        mails.append(
            {
                "subject": subject,
                "message": body,
                "from_email": settings.DEFAULT_FROM_EMAIL,
                "recipient_list": [user.email],
            }
        )
    return mails


@transaction.atomic
def overdue_close(*, at: datetime) -> int:
    """Close what has passed its expiry: grants become *lapsed* (the day after expiry in the
    facility's zone), licences *expired* (once the day has ended in every US zone). Eligibility does
    not wait for this — it compares dates itself — this keeps the statuses people read truthful."""
    closed = 0
    for privilege in FacilityPrivilege.objects.filter(status__in=GRANTED_PRIVILEGE_STATUSES).select_related(
        "facility"
    ):
        if facility_day(privilege.facility, at) > privilege.expires_on:
            privilege.status = PrivilegeStatus.LAPSED
            privilege.status_note = f"Expired on {privilege.expires_on:%Y-%m-%d} without reappointment."
            privilege.save(update_fields=["status", "status_note", "updated_at"])
            closed += 1
    day = at.astimezone(LATEST_US_ZONE).date()
    for licence in StateLicence.objects.filter(status=LicenceStatus.ACTIVE, expires_on__lt=day):
        licence.status = LicenceStatus.EXPIRED
        licence.save(update_fields=["status", "updated_at"])
        closed += 1
    return closed
