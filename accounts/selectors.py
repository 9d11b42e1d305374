from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from importlib import import_module

from auditlog.models import LogEntry
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.db.models import Q, QuerySet

from accounts.middleware import session_locked
from accounts.roles import Role, has_role
from imaging.models import Patient


def session_state(session_key: str, user_id: int) -> str | None:
    """``"live"``, ``"locked"`` (the screen lock, docs/alerts.md), or None when the session ended: it
    no longer exists, has expired or is another user's. A session that ended by logout (flushed) or
    idleness (expired) loads as empty."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    data = store.load()
    if str(data.get(SESSION_KEY, "")) != str(user_id):
        return None
    return "locked" if session_locked(data) else "live"


def can_read_audit_log(user) -> bool:
    return user.is_authenticated and (
        user.is_superuser or has_role(user, Role.OPERATIONS, Role.MEDICAL_DIRECTOR)
    )


def audit_entries(
    *,
    patient: str = "",
    username: str = "",
    date_from: date | None = None,
    date_to: date | None = None,
    action: int | None = None,
    object_text: str = "",
    facility_id: int | None = None,
) -> QuerySet[LogEntry]:
    """Audit rows, newest first. ``patient`` matches an MRN exactly or a family name
    case-insensitively; every row about that patient (the patient record, their orders, studies
    and reads) carries ``patient_id`` in its additional data."""
    entries = LogEntry.objects.select_related("actor", "content_type").order_by("-timestamp", "-id")
    if patient:
        patient_ids = list(
            Patient.objects.filter(Q(mrn=patient) | Q(family_name__iexact=patient)).values_list(
                "id", flat=True
            )
        )
        entries = entries.filter(additional_data__patient_id__in=patient_ids)
    if username:
        entries = entries.filter(actor__username__iexact=username)
    if date_from:
        entries = entries.filter(timestamp__gte=datetime.combine(date_from, time.min, tzinfo=UTC))
    if date_to:
        entries = entries.filter(
            timestamp__lt=datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=UTC)
        )
    if action is not None:
        entries = entries.filter(action=action)
    if object_text:
        # "study", "report 42", "ACC-1": the kind of record or its description
        entries = entries.filter(
            Q(content_type__model__iexact=object_text) | Q(object_repr__icontains=object_text)
        )
    if facility_id is not None:
        entries = entries.filter(additional_data__facility_id=facility_id)
    return entries
