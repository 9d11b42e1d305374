"""A FHIRcast hub (HL7 FHIRcast STU3, docs/fhircast.md): an external viewer, dictation system or AI
side-car follows the study the reader has open.

* ``hub.topic`` is per user session: an HMAC of the session key, so it names nobody and cannot be
  guessed; it is registered to its user (cache) when computed, so an API-token client of that user may
  subscribe to it and nobody else may.
* Subscriptions are websocket channels (``hub.channel.type=websocket``): the subscribe request answers
  202 with ``hub.channel.endpoint`` — ``/ws/fhircast/<secret id>/`` — which carries the subscription
  confirmation and then the events.
* Events are built here and their contexts validated with fhir.resources (R4B) before they are sent:
  a context that would not parse as FHIR is a bug, never something a subscriber sees."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.core.cache import cache
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts.selectors import session_state

EVENTS = (
    "ImagingStudy-open",
    "ImagingStudy-close",
    "DiagnosticReport-open",
    "DiagnosticReport-close",
    "DiagnosticReport-update",
    # infrastructure events (STU3 §3.2): the session was suspended (the screen lock) or ended
    "UserHibernate",
    "UserLogout",
)
# the reason codes of UserHibernate / UserLogout (STU3 FHIRcastHibernateReason, FHIRcastLogoutReason)
REASON_SYSTEM = "http://fhircast.hl7.org/CodeSystem/fhircast-codesystem"
REASONS = {
    "user-initiated": "User initiated action.",
    "system-timeout": "System initiated action due to timeout",
}
TOPIC_SECONDS = 12 * 3600  # as long as a locked session may live (READROOM_LOCK_MAX_HOURS)
MAX_LEASE_SECONDS = 8 * 3600


def topic_group(topic: str) -> str:
    return f"fhircast.{topic}"


def topic_of(session_key: str) -> str:
    """The hub.topic of a session, computed only (``session_topic`` also registers it)."""
    return salted_hmac("readroom.fhircast.topic", session_key).hexdigest()[:40]


def session_topic(session_key: str, user_id: int) -> str:
    """The hub.topic of a session (registered to its user, and to the session itself so the
    topic's channels can look whether it still lives — server-side only, never sent anywhere)."""
    topic = topic_of(session_key)
    cache.set_many(
        {f"fhircast:topic:{topic}": user_id, f"fhircast:session:{topic}": session_key}, TOPIC_SECONDS
    )
    return topic


def topic_session(topic: str) -> str | None:
    """The session key whose topic this is (None once the registration lapsed)."""
    return cache.get(f"fhircast:session:{topic}")


def topic_owner(topic: str) -> int | None:
    return cache.get(f"fhircast:topic:{topic}")


def topic_end(topic: str) -> None:
    """The topic's session ended (logout or idle expiry): the topic is no longer registered, so no
    one may subscribe to it and no channel of it opens again (``topic_live``)."""
    cache.delete_many([f"fhircast:topic:{topic}", f"fhircast:session:{topic}"])


def topic_live(topic: str, user_id: int) -> bool:
    """Whether the topic's session still lives (signed in, locked or not). A registration can
    outlive its session (idle expiry comes with no request), so the session itself is looked at."""
    session_key = topic_session(topic)
    return bool(session_key and session_state(session_key, user_id))


@dataclass(frozen=True)
class Subscription:
    topic: str
    events: tuple[str, ...]
    user_id: int
    lease_seconds: int


class SubscribeError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def subscription_parse(data, *, user_id: int) -> tuple[str, Subscription]:
    """(mode, subscription) from a subscribe/unsubscribe request (form fields per the spec)."""
    mode = data.get("hub.mode", "")
    if mode not in ("subscribe", "unsubscribe"):
        raise SubscribeError("hub.mode must be subscribe or unsubscribe.")
    if data.get("hub.channel.type", "websocket").lower() != "websocket":
        raise SubscribeError("Only hub.channel.type=websocket is offered.")
    topic = data.get("hub.topic", "")
    if not topic:
        raise SubscribeError("hub.topic is required.")
    if topic_owner(topic) != user_id or not topic_live(topic, user_id):
        raise SubscribeError("That hub.topic is not one of your live sessions.", status=403)
    events = tuple(e.strip() for e in data.get("hub.events", "").split(",") if e.strip())
    unknown = [e for e in events if e not in EVENTS]
    if not events or unknown:
        raise SubscribeError(
            f"hub.events must name some of {', '.join(EVENTS)}; unknown: {', '.join(unknown)}."
        )
    try:
        lease = min(int(data.get("hub.lease_seconds") or 3600), MAX_LEASE_SECONDS)
    except ValueError as error:
        raise SubscribeError("hub.lease_seconds must be a number of seconds.") from error
    return mode, Subscription(topic, events, user_id, lease)


def channel_open(subscription: Subscription) -> str:
    """A websocket endpoint id for the subscription (the secret the consumer is opened with)."""
    endpoint = secrets.token_urlsafe(24)
    cache.set(f"fhircast:endpoint:{endpoint}", subscription, subscription.lease_seconds)
    return endpoint


def channel_subscription(endpoint: str) -> Subscription | None:
    return cache.get(f"fhircast:endpoint:{endpoint}")


def channel_group(endpoint: str) -> str:
    """The channel layer group of one subscription's open websocket (an unsubscribe closes it)."""
    return f"fhircast.channel.{salted_hmac('readroom.fhircast.channel', endpoint).hexdigest()[:40]}"


def channel_close(endpoint: str) -> None:
    """The subscription is removed: its endpoint no longer opens, and the caller closes the
    websocket that is open on it (``channel_group``)."""
    cache.delete(f"fhircast:endpoint:{endpoint}")


@dataclass(frozen=True)
class OpenContext:
    """What the reader has open on a topic — the study, and its report when the editor shows it —
    so that a lock or the session's end can close it for the subscribers, and an unlock open it
    again (STU3 §2.9: the hub keeps each topic's current context)."""

    study_id: int
    report_id: int | None = None


def _context_key(topic: str, held: bool) -> str:
    return f"fhircast:{'held' if held else 'context'}:{topic}"


def context_of(topic: str, *, held: bool = False) -> OpenContext | None:
    """The topic's open context, or (``held``) the one a screen lock closed."""
    return cache.get(_context_key(topic, held))


def context_set(topic: str, context: OpenContext | None, *, held: bool = False) -> None:
    if context is None:
        cache.delete(_context_key(topic, held))
    else:
        cache.set(_context_key(topic, held), context, TOPIC_SECONDS)


def reason_parameters(code: str) -> dict:
    """The ``parameters`` context of UserHibernate / UserLogout: why."""
    coding = {"system": REASON_SYSTEM, "code": code, "display": REASONS[code]}
    return {"resourceType": "Parameters", "parameter": [{"name": "code", "valueCoding": coding}]}


def confirmation(subscription: Subscription) -> dict:
    return {
        "hub.mode": "subscribe",
        "hub.topic": subscription.topic,
        "hub.events": ",".join(subscription.events),
        "hub.lease_seconds": subscription.lease_seconds,
    }


_MODELS = {
    "Bundle": "fhir.resources.R4B.bundle.Bundle",
    "Parameters": "fhir.resources.R4B.parameters.Parameters",
    "Patient": "fhir.resources.R4B.patient.Patient",
    "ImagingStudy": "fhir.resources.R4B.imagingstudy.ImagingStudy",
    "DiagnosticReport": "fhir.resources.R4B.diagnosticreport.DiagnosticReport",
}


def _validated(resource: dict) -> dict:
    from importlib import import_module

    resource = {k: v for k, v in resource.items() if v not in (None, [], "")}  # FHIR forbids empties
    module, _, name = _MODELS[resource["resourceType"]].rpartition(".")
    getattr(import_module(module), name).model_validate(resource)  # raises on an invalid context
    return resource


def event_build(topic: str, event: str, context: Iterable[tuple[str, dict]]) -> dict:
    """A FHIRcast event notification (STU3 §2.3): timestamp, id, event{hub.topic, hub.event, context}."""
    assert event in EVENTS, event
    return {
        "timestamp": timezone.now().isoformat(),
        "id": str(uuid.uuid4()),
        "event": {
            "hub.topic": topic,
            "hub.event": event,
            "context": [{"key": key, "resource": _validated(resource)} for key, resource in context],
        },
    }
