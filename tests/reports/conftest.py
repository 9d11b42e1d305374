"""The cast for authoring and signing: a CT head template at Lakeshore (Chicago), a head CT of a
67-year-old woman with an order, claimed by dr_neuro_il (eligible now), and helpers to sign."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from imaging.models import Sex
from reports.models import ReportTemplate, TemplateVersion
from tests.conftest import PASSWORD
from tests.worklist.conftest import make_eligible, make_study, neuro_reader, other_neuro_reader  # noqa: F401
from worklist.models import StudyAssignment
from worklist.services import study_claim

CT_HEAD = {
    "sections": [
        {
            "key": "history",
            "title": "Clinical history",
            "fields": [
                {
                    "key": "history",
                    "label": "History",
                    "kind": "text",
                    "default": "{{patient_age}} {{patient_sex}}. {{reason}}",
                }
            ],
        },
        {
            "key": "technique",
            "title": "Technique",
            "fields": [
                {
                    "key": "technique",
                    "label": "Technique",
                    "kind": "text",
                    "default": "{{procedure}}. Contrast: {{contrast}}.",
                },
                {"key": "comparison", "label": "Comparison", "kind": "text", "default": "{{comparison}}"},
            ],
        },
        {
            "key": "findings",
            "title": "Findings",
            "fields": [
                {
                    "key": "hemorrhage",
                    "label": "Intracranial hemorrhage",
                    "kind": "choice",
                    "choices": ["None", "Intraparenchymal", "Subarachnoid"],
                    "required": True,
                    "default": "None",
                },
                {
                    "key": "aspects",
                    "label": "ASPECTS",
                    "kind": "number",
                    "min": 0,
                    "max": 10,
                    "required": True,
                },
                {"key": "findings", "label": "Findings", "kind": "text"},
            ],
        },
        {
            "key": "impression",
            "title": "Impression",
            "fields": [{"key": "impression", "label": "Impression", "kind": "text", "required": True}],
        },
    ]
}

FILLED = {"aspects": "10", "findings": "No mass effect.", "impression": "No acute intracranial abnormality."}


@pytest.fixture
def ct_head_template(chicago) -> TemplateVersion:
    template = ReportTemplate.objects.create(facility=chicago, name="CT head", procedure_codes=["70450"])
    return TemplateVersion.objects.create(template=template, number=1, content=CT_HEAD)


def head_ct_study(facility, **extra):
    study = make_study(facility, code="70450", text="CT HEAD W/O CONTRAST", **extra)
    patient = study.patient
    patient.birth_date, patient.sex, patient.family_name, patient.given_name = (
        date(1958, 6, 1),
        Sex.FEMALE,
        "Rivera",
        "Ana",
    )
    patient.save()
    order = study.order
    order.reason, order.ordering_provider_name = "Sudden left-sided weakness.", "Dr Emily Stone"
    order.save()
    study.study_datetime = datetime(2026, 3, 1, 14, 0, tzinfo=facility.zone)
    study.save()
    StudyAssignment.objects.create(study=study, rvu=Decimal("1.50"), routed_at=timezone.now())
    return study


@pytest.fixture
def claimed_head_ct(neuro_reader, chicago, ct_head_template):  # noqa: F811
    chicago.read_rate = Decimal("42.00")
    chicago.save()
    study = head_ct_study(chicago)
    study_claim(study_id=study.pk, user=neuro_reader, at=timezone.now())
    return study


def next_totp(user) -> str:
    """The authenticator's code for the *next* 30-second step: django-otp refuses a code already used
    (the session's verification used the current one), and accepts one step of drift."""
    device = TOTPDevice.objects.get(user=user, confirmed=True)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + device.step
    return f"{totp.token():0{device.digits}d}"


@pytest.fixture
def sign_kwargs():
    def kwargs(user, **extra):
        return {"user": user, "secret": PASSWORD, "at": timezone.now(), "final": True, **extra}

    return kwargs


__all__ = ["make_eligible", "timedelta"]
