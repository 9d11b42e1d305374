"""The credentialing packet: a PDF for one radiologist and one facility that names their licences,
boards, privileges elsewhere and verification records."""

from __future__ import annotations

from datetime import date
from io import BytesIO

import pytest
from pypdf import PdfReader

from credentialing import services
from credentialing.models import PrivilegeStatus
from tests.credentialing.factories import BoardFactory, LicenceFactory, PrivilegeFactory

pytestmark = pytest.mark.django_db


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(BytesIO(content)).pages)


@pytest.fixture
def dossier(dr_neuro_il, neuro_il_credentials, mso_mary, lakeview, prairie):
    profile = dr_neuro_il.radiologist_profile
    LicenceFactory(profile=profile, state="WI", number="58231-20", expires_on=date(2027, 10, 31))
    BoardFactory(profile=profile, specialty="Neuroradiology", certificate_number="ABR-NR-4471")
    PrivilegeFactory(profile=profile, facility=prairie, status=PrivilegeStatus.APPROVED)
    services.credential_verify(
        actor=mso_mary,
        credential=neuro_il_credentials["licence"],
        method="source_website",
        note="IDFPR lookup 4411",
    )
    services.facility_credentialing_update(
        actor=mso_mary,
        facility=lakeview,
        mso_contact_name="Jo Lindgren",
        mso_contact_email="mso@lakeview.example",
    )
    return profile


def test_the_packet_names_licences_boards_privileges_and_verifications(client, mso_mary, dossier):
    # given the MSO preparing Lakeview's packet for the neuroradiologist
    client.force_login(mso_mary)
    # when they download it
    response = client.get(f"/credentialing/profiles/{dossier.pk}/packet/WI-LAKEVIEW.pdf")
    # then it is a PDF that names what the facility's medical-staff office needs
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    text = " ".join(pdf_text(response.content).split())  # table cells wrap: compare words, not lines
    for expected in [
        "Credentialing packet: Dr dr_neuro_il",
        "Lakeview Outpatient Imaging",
        "Jo Lindgren",
        "036-142857",  # IL licence
        "58231-20",  # WI licence
        "ABR-NR-4471",
        "Lakeshore Medical Center",  # privileges elsewhere
        "Prairie Valley Critical Access Hospital",
        "IDFPR lookup 4411",  # the verification record
        "mso_mary",
    ]:
        assert expected in text, expected


def test_only_credentialing_staff_download_packets(verified_client, dr_neuro_il, ops_omar, client, dossier):
    own = verified_client(dr_neuro_il)
    assert own.get(f"/credentialing/profiles/{dossier.pk}/packet/WI-LAKEVIEW.pdf").status_code == 403
    client.force_login(ops_omar)
    assert client.get(f"/credentialing/profiles/{dossier.pk}/packet/WI-LAKEVIEW.pdf").status_code == 403
