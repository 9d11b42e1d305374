"""Helpers for routing and claims: studies with or without an order, readers made eligible now."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import pytest
from django.utils import timezone

from credentialing.models import FacilityPrivilege, LicenceStatus, PrivilegeStatus, StateLicence
from imaging.models import Order, Patient, Study, StudyStatus
from tests.conftest import VERIFIED, make_radiologist
from worklist.models import Shift
from worklist.services import study_route

_uids = itertools.count(1)


def make_study(
    facility, *, code: str = "", text: str = "", description: str = "", modalities: str = "CT", **extra
):
    """A study at ``facility``; with an order when ``code`` or ``text`` is given."""
    n = next(_uids)
    order = None
    if code or text:
        patient = Patient.objects.create(facility=facility, mrn=f"MRN-{n}", assigning_authority=facility.code)
        order = Order.objects.create(
            facility=facility,
            patient=patient,
            accession_number=f"ACC-{n}",
            procedure_code=code,
            procedure_text=text,
            **(
                {"priority": extra["priority"]} if "priority" in extra else {}
            ),  # ingest copies it to the study
        )
    return Study.objects.create(
        facility=facility,
        order=order,
        patient=order.patient if order else None,
        study_instance_uid=f"1.2.826.0.1.3680043.10.77.{n}",
        accession_number=f"ACC-{n}",
        description=description,
        modalities=modalities,
        **extra,
    )


def make_eligible(user, facility, *, shift_hours: int = 8) -> None:
    """Licence in the facility's state, approved privileges there and a shift around now."""
    profile = user.radiologist_profile
    if not StateLicence.objects.filter(profile=profile, state=facility.state).exists():
        StateLicence.objects.create(
            profile=profile,
            state=facility.state,
            number=f"{facility.state}-{user.pk}",
            status=LicenceStatus.ACTIVE,
            issued_on=date(2019, 1, 1),
            expires_on=date.today() + timedelta(days=365),
            **VERIFIED,
        )
    if not FacilityPrivilege.objects.filter(profile=profile, facility=facility).exists():
        FacilityPrivilege.objects.create(
            profile=profile,
            facility=facility,
            status=PrivilegeStatus.APPROVED,
            applied_on=date(2024, 1, 2),
            granted_on=date(2024, 2, 1),
            expires_on=date.today() + timedelta(days=365),
        )
    now = timezone.now()
    Shift.objects.create(
        radiologist=user, starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=shift_hours)
    )


@pytest.fixture
def neuro_reader(dr_neuro_il, chicago):
    """dr_neuro_il, eligible for neuro studies at Lakeshore right now."""
    make_eligible(dr_neuro_il, chicago)
    return dr_neuro_il


@pytest.fixture
def other_neuro_reader(chicago):
    from tests.conftest import enrol_totp

    user = make_radiologist("dr_neuro_two", "neuro")
    enrol_totp(user)
    make_eligible(user, chicago)
    return user


class Screens:
    """Test screens: one channel joined to each given group, like a browser's socket. ``received()``
    drains what each group's screen got, as ``{group: [event, …]}``. All channel-layer calls run on one
    event loop of their own (channels-redis binds a channel's receive queue to its first loop)."""

    def __init__(self, groups: list[str]):
        import asyncio
        import threading

        from channels.layers import get_channel_layer

        self.layer = get_channel_layer()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.channels = {group: self._run(self.layer.new_channel()) for group in groups}
        for group, channel in self.channels.items():
            self._run(self.layer.group_add(group, channel))

    def _run(self, coroutine):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def received(self) -> dict[str, list[dict]]:
        import asyncio

        async def drain(channel: str) -> list[dict]:
            events = []
            while True:
                try:
                    message = await asyncio.wait_for(self.layer.receive(channel), timeout=0.3)
                except TimeoutError:
                    return events
                events.append(message["event"])

        return {group: self._run(drain(channel)) for group, channel in self.channels.items()}

    def types(self) -> dict[str, list[str]]:
        return {group: [e["type"] for e in events] for group, events in self.received().items()}


def weekday_dates(since, days: int, weekdays) -> int:
    """How many of the ``days`` dates from ``since`` fall on ``weekdays`` (Monday 0): the rota tests'
    own count of a template's occurrences, independent of the expansion code under test."""
    from datetime import timedelta

    return sum(1 for n in range(days) if (since + timedelta(days=n)).weekday() in weekdays)


@pytest.fixture
def waiting(chicago):
    """A Chicago CT whose images carried a mistyped accession: routed ROUTINE, 45 min without order."""
    patient = Patient.objects.create(facility=chicago, mrn="MRN8080", assigning_authority="LAKESHORE")
    study = make_study(
        chicago,
        status=StudyStatus.COMPLETE,
        first_received_at=timezone.now() - timedelta(minutes=45),
        completed_at=timezone.now() - timedelta(minutes=43),
        description="CT HEAD WO",
    )
    Study.objects.filter(pk=study.pk).update(patient=patient, accession_number="A9O01")  # O for 0
    study_route(study_id=study.pk)
    return Study.objects.get(pk=study.pk)


def order_open(facility, accession: str, *, mrn: str = "MRN8080", **extra) -> Order:
    """An open CT head order for the patient ``mrn`` (created if new), e.g. the one ``waiting`` awaits."""
    patient, _ = Patient.objects.get_or_create(
        facility=facility, mrn=mrn, defaults={"assigning_authority": "LAKESHORE"}
    )
    return Order.objects.create(
        facility=facility, patient=patient, accession_number=accession, procedure_code="70450",
        procedure_text="CT HEAD WO CONTRAST", modality="CT", **extra,
    )  # fmt: skip
