"""The operations notifier of an escalation: e-mail through Django's mail backend and an optional
webhook (the facility's ``escalation_webhook_url``). Every delivery is a row (recipient, channel, status,
error, time). Deliveries are planned *pending* inside the step's transaction and sent after it
commits (a rolled-back step pages nobody); a failure is recorded, never raised.

What leaves the building is workflow metadata only — facility, study id, procedure, priority, step and
times, and the link to the study — never the patient's name, MRN or accession: e-mail and chat
integrations are not where PHI belongs; the recipient signs in to see the study."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from accounts.roles import Role
from imaging.models import Study
from worklist.models import (
    DeliveryChannel,
    DeliveryStatus,
    EscalationDelivery,
    EscalationStep,
    StudyEscalation,
)

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 5.0  # a pager integration that hangs must not hold up the worker


def notifier_addresses() -> list[str]:
    """The medical directors' and operations users' e-mail addresses (active users with one)."""
    User = get_user_model()
    roles = [Role.MEDICAL_DIRECTOR.value, Role.OPERATIONS.value]
    users = User.objects.filter(is_active=True, groups__name__in=roles).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))


def escalation_deliveries_plan(*, escalation: StudyEscalation, study: Study) -> list[EscalationDelivery]:
    """Pending deliveries for the step (call inside its transaction); sent after commit."""
    deliveries = [
        EscalationDelivery(escalation=escalation, channel=DeliveryChannel.EMAIL, recipient=address)
        for address in notifier_addresses()
    ]
    if study.facility.escalation_webhook_url:
        deliveries.append(
            EscalationDelivery(
                escalation=escalation,
                channel=DeliveryChannel.WEBHOOK,
                recipient=study.facility.escalation_webhook_url,
            )
        )
    created = EscalationDelivery.objects.bulk_create(deliveries)
    if created:
        transaction.on_commit(lambda: _deliveries_enqueue(escalation.pk), robust=True)
    return created


def _deliveries_enqueue(escalation_id: int) -> None:
    from worklist.tasks import escalation_deliveries_send_task

    escalation_deliveries_send_task.delay(escalation_id)


def escalation_message(escalation: StudyEscalation) -> dict:
    """What the notifier says (the webhook's JSON body; the e-mail is written from it)."""
    study = escalation.study
    order = study.order
    base = settings.READROOM_BASE_URL.rstrip("/")
    return {
        "event": "study.escalated",
        "step": escalation.step,
        "label": EscalationStep(escalation.step).label,
        "due_at": escalation.due_at.isoformat(),
        "at": escalation.at.isoformat(),
        "study": {
            "id": study.pk,
            "facility": study.facility.code,
            "facility_name": study.facility.name,
            "priority": study.priority,
            "procedure": (order.procedure_text if order else "") or study.description,
            "url": f"{base}/studies/{study.pk}/open/",
        },
    }


def _email_text(message: dict, escalation: StudyEscalation) -> tuple[str, str]:
    study = message["study"]
    zone = escalation.study.facility.zone
    local = escalation.at.astimezone(zone).strftime("%H:%M:%S %Z")
    subject = f"CODE STROKE unclaimed — {study['facility_name']}: study {study['id']}"
    body = (
        f"{message['label']}.\n\n"
        f"Facility: {study['facility_name']} ({study['facility']})\n"
        f"Study: {study['id']} — {study['procedure'] or 'procedure not given'} ({study['priority']})\n"
        f"Escalated at: {local} ({escalation.at.isoformat()} UTC)\n\n"
        f"Open the study: {study['url']}\n"
    )
    return subject, body


def _deliver(delivery: EscalationDelivery, message: dict) -> None:
    if delivery.channel == DeliveryChannel.EMAIL:
        subject, body = _email_text(message, delivery.escalation)
        send_mail(subject, body, None, [delivery.recipient], fail_silently=False)
        return
    if not delivery.recipient.lower().startswith(("http://", "https://")):
        raise ValueError("the webhook URL must be http:// or https://")
    request = urllib.request.Request(  # noqa: S310 — the scheme is checked above
        delivery.recipient,
        data=json.dumps(message).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "ReadRoom escalation notifier"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
        response.read(1024)  # a non-2xx answer raises HTTPError


def _failure_text(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    return f"{type(error).__name__}: {error}"[:1000]


def escalation_deliveries_send(*, escalation_id: int) -> int:
    """Send the step's pending deliveries; returns how many were sent. Each delivery is taken by a
    compare-and-set (pending → sending), so a redelivered task sends nothing twice."""
    escalation = StudyEscalation.objects.select_related("study__facility", "study__order").get(
        pk=escalation_id
    )
    message = escalation_message(escalation)
    sent = 0
    for delivery in escalation.deliveries.filter(status=DeliveryStatus.PENDING):
        taken = EscalationDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.SENDING
        )
        if not taken:
            continue
        delivery.escalation = escalation
        status, error = DeliveryStatus.SENT, ""
        try:
            _deliver(delivery, message)
        except Exception as failure:  # recorded for operations, never raised: the step already fired
            status, error = DeliveryStatus.FAILED, _failure_text(failure)
            logger.warning(
                "escalation %s: %s delivery to %s failed: %s",
                escalation_id,
                delivery.channel,
                delivery.recipient,
                error,
            )
        EscalationDelivery.objects.filter(pk=delivery.pk).update(
            status=status, error=error, at=timezone.now()
        )
        sent += status == DeliveryStatus.SENT
    return sent
