"""Facility privileges: the status workflow, the application checklist, credentialing by proxy, the
database's own rules, and the audit trail of every change."""

from __future__ import annotations

from datetime import date

import pytest
from auditlog.models import LogEntry
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from credentialing import services
from credentialing.models import (
    FacilityPrivilege,
    PrivilegeStatus,
    StateLicence,
)
from credentialing.services import PrivilegeTransitionError
from tests.credentialing.factories import LicenceFactory, PrivilegeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def application(dr_neuro_il, chicago, mso_mary):
    services.facility_requirements_set(
        actor=mso_mary, facility=chicago, labels=["NPDB query", "Two peer references"]
    )
    return services.privilege_apply(actor=mso_mary, profile=dr_neuro_il.radiologist_profile, facility=chicago)


def test_an_application_copies_the_facility_checklist(application):
    assert [i.label for i in application.checklist.all()] == ["NPDB query", "Two peer references"]
    assert application.status == PrivilegeStatus.APPLIED


def test_a_facility_without_its_own_list_gets_the_default_checklist(dr_msk_wi, lakeview, mso_mary):
    privilege = services.privilege_apply(
        actor=mso_mary, profile=dr_msk_wi.radiologist_profile, facility=lakeview
    )
    labels = [i.label for i in privilege.checklist.all()]
    assert "NPDB query" in labels and "Delineation of privileges signed" in labels


def test_approval_needs_review_first_and_a_complete_checklist(application, mso_mary):
    # given an application straight after applying
    # when approval is attempted before review
    with pytest.raises(PrivilegeTransitionError, match="applied cannot become approved"):
        services.privilege_approve(actor=mso_mary, privilege=application, granted_on=date(2026, 12, 1))
    # and after review, with items still open
    services.privilege_review_start(actor=mso_mary, privilege=application)
    with pytest.raises(
        PrivilegeTransitionError, match="2 required checklist items are still open: NPDB query"
    ):
        services.privilege_approve(actor=mso_mary, privilege=application, granted_on=date(2026, 12, 1))
    # then, with every item completed by someone, it is approved for the facility's appointment length
    for item in application.checklist.all():
        services.checklist_item_complete(actor=mso_mary, item=item)
    services.privilege_approve(actor=mso_mary, privilege=application, granted_on=date(2026, 12, 1))
    application.refresh_from_db()
    assert application.status == PrivilegeStatus.APPROVED
    assert application.expires_on == date(2028, 11, 30)  # two years, through the day before
    assert application.decided_by == mso_mary
    item = application.checklist.first()
    assert item.completed_by == mso_mary and item.completed_at is not None


def test_proxy_approval_records_the_distant_site_and_needs_an_agreement(application, mso_mary, chicago):
    services.privilege_review_start(actor=mso_mary, privilege=application)
    for item in application.checklist.all():
        services.checklist_item_complete(actor=mso_mary, item=item)
    proxy = dict(
        distant_site_name="St. Anne's Regional",
        distant_site_approved_on=date(2026, 10, 14),
        granted_on=date(2026, 11, 1),
    )
    # without an agreement on record the facility cannot rely on the distant site
    with pytest.raises(PrivilegeTransitionError, match="no credentialing-by-proxy agreement"):
        services.privilege_approve_by_proxy(actor=mso_mary, privilege=application, **proxy)
    services.facility_credentialing_update(actor=mso_mary, facility=chicago, accepts_proxy=True)
    services.privilege_approve_by_proxy(actor=mso_mary, privilege=application, **proxy)
    application.refresh_from_db()
    assert application.status == PrivilegeStatus.APPROVED_BY_PROXY
    assert (application.distant_site_name, application.distant_site_approved_on) == (
        "St. Anne's Regional",
        date(2026, 10, 14),
    )


def test_closed_records_stay_closed(application, mso_mary):
    services.privilege_deny(actor=mso_mary, privilege=application, note="Incomplete references")
    with pytest.raises(PrivilegeTransitionError):
        services.privilege_review_start(actor=mso_mary, privilege=application)


def test_a_new_application_may_follow_a_denial(application, mso_mary, dr_neuro_il, chicago):
    services.privilege_deny(actor=mso_mary, privilege=application, note="Incomplete references")
    again = services.privilege_apply(
        actor=mso_mary, profile=dr_neuro_il.radiologist_profile, facility=chicago
    )
    assert again.pk != application.pk


def test_only_one_open_privilege_per_radiologist_and_facility(application, mso_mary, dr_neuro_il, chicago):
    # the service says why
    with pytest.raises(ValidationError, match="already has an open application or grant"):
        services.privilege_apply(actor=mso_mary, profile=dr_neuro_il.radiologist_profile, facility=chicago)
    # and the database refuses it even if code forgets
    with pytest.raises(IntegrityError), transaction.atomic():
        FacilityPrivilege.objects.create(
            profile=dr_neuro_il.radiologist_profile, facility=chicago, applied_on=date(2026, 11, 2)
        )


@pytest.mark.parametrize(
    "fields",
    [
        {"status": PrivilegeStatus.APPROVED, "granted_on": None, "expires_on": None},
        {"status": PrivilegeStatus.APPROVED, "granted_on": date(2026, 1, 1), "expires_on": date(2025, 1, 1)},
        {"status": PrivilegeStatus.APPROVED_BY_PROXY, "distant_site_name": ""},
    ],
    ids=["granted without dates", "expires before granted", "proxy without distant site"],
)
def test_the_database_refuses_inconsistent_privileges(dr_neuro_il, chicago, fields):
    with pytest.raises(IntegrityError), transaction.atomic():
        PrivilegeFactory(profile=dr_neuro_il.radiologist_profile, facility=chicago, **fields)


def test_the_database_refuses_a_licence_expiring_before_issue(dr_neuro_il):
    with pytest.raises(IntegrityError), transaction.atomic():
        StateLicence.objects.create(
            profile=dr_neuro_il.radiologist_profile,
            state="IL",
            number="036-1",
            issued_on=date(2026, 1, 1),
            expires_on=date(2025, 1, 1),
        )


def test_the_service_explains_a_bad_licence(dr_neuro_il, mso_mary):
    with pytest.raises(ValidationError) as caught:
        services.licence_record(
            actor=mso_mary,
            profile=dr_neuro_il.radiologist_profile,
            state="IL",
            number="036-1",
            issued_on=date(2026, 1, 1),
            expires_on=date(2025, 1, 1),
        )
    assert "licence_expires_after_issue" in str(caught.value)


def test_verification_records_who_when_how(dr_neuro_il, mso_mary):
    licence = LicenceFactory(profile=dr_neuro_il.radiologist_profile)
    services.credential_verify(
        actor=mso_mary, credential=licence, method="source_website", note="IDFPR lookup"
    )
    licence.refresh_from_db()
    assert licence.verified_by == mso_mary
    assert licence.verified_at is not None
    assert licence.get_verification_method_display() == "Issuing body's website (online lookup)"


def test_every_change_is_audited_with_the_radiologist(client, mso_mary, dr_neuro_il, chicago):
    # given the MSO working in the workspace (the audit middleware knows who and from where)
    client.force_login(mso_mary)
    profile = dr_neuro_il.radiologist_profile
    # when they record a licence and change its expiry
    client.post(
        f"/credentialing/profiles/{profile.pk}/licences/new/",
        {
            "state": "IL",
            "number": "036-555",
            "kind": "full",
            "status": "active",
            "issued_on": "2020-01-01",
            "expires_on": "2026-12-31",
        },
    )
    licence = StateLicence.objects.get(number="036-555")
    client.post(
        f"/credentialing/profiles/{profile.pk}/licences/{licence.pk}/",
        {
            "state": "IL",
            "number": "036-555",
            "kind": "full",
            "status": "active",
            "issued_on": "2020-01-01",
            "expires_on": "2028-12-31",
        },
    )
    # then the audit log has both, by the MSO, with before/after and the radiologist's id
    entries = LogEntry.objects.get_for_object(licence).order_by("timestamp")
    assert [e.action for e in entries] == [LogEntry.Action.CREATE, LogEntry.Action.UPDATE]
    update = entries.last()
    assert update.actor == mso_mary
    assert update.changes_dict["expires_on"] == ["2026-12-31", "2028-12-31"]
    assert update.additional_data == {"radiologist_id": dr_neuro_il.pk}
    assert update.remote_addr == "127.0.0.1"
