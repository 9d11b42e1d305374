"""The credentialing packet: one radiologist's credentials for one facility's medical-staff office,
as a PDF (WeasyPrint) — licences, boards, fellowships, DEA, malpractice cover, the privileges held
elsewhere (what proxy credentialing relies on) and every primary-source verification record."""

from __future__ import annotations

import logging
from datetime import datetime

from django.template.loader import render_to_string

from credentialing.models import FacilityCredentialing, RadiologistProfile
from credentialing.selectors import dossier
from facilities.models import Facility

# WeasyPrint logs every layout step at INFO; one packet would add ten lines to the service log.
logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)


def _no_fetch(url: str, *args, **kwargs):
    # The packet is self-contained (inline CSS, system fonts). Refusing every fetch means no text a
    # user typed into a record can make the server request a URL.
    raise ValueError(f"the packet does not load external resources ({url[:60]})")


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
    from weasyprint import HTML  # imported on use: it loads pango, which most requests never need

    html = render_to_string(
        "credentialing/packet.html", packet_context(profile=profile, facility=facility, at=at)
    )
    return HTML(string=html, url_fetcher=_no_fetch).write_pdf()
