"""The credentialing packet: one radiologist's credentials for one facility's medical-staff office,
as a PDF (WeasyPrint) — licences, boards, fellowships, DEA, malpractice cover, the privileges held
elsewhere (what proxy credentialing relies on) and every primary-source verification record."""

from __future__ import annotations

from datetime import datetime

from django.template.loader import render_to_string

from credentialing.models import FacilityCredentialing, RadiologistProfile
from credentialing.selectors import dossier
from facilities.models import Facility
from radiology.pdf import html_to_pdf


def packet_context(*, profile: RadiologistProfile, facility: Facility, at: datetime) -> dict:
    context = dossier(profile)
    here = [p for p in context["privileges"] if p.facility_id == facility.pk]
    context.update(
        facility=facility,
        facility_settings=FacilityCredentialing.objects.filter(facility=facility).first(),
        privileges_here=here,
        privileges_elsewhere=[p for p in context["privileges"] if p.facility_id != facility.pk],
        generated_at=at,
    )
    return context


def packet_pdf(*, profile: RadiologistProfile, facility: Facility, at: datetime) -> bytes:
    return html_to_pdf(
        render_to_string(
            "credentialing/packet.html", packet_context(profile=profile, facility=facility, at=at)
        )
    )
