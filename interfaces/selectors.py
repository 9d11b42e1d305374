from __future__ import annotations

from facilities.models import Facility
from interfaces.simulator import SimulatedFacility


def simulated_facilities(*, code: str | None = None) -> list[SimulatedFacility]:
    """Active facilities that can be simulated: an HL7 sender and a DICOM calling AE registered."""
    facilities = Facility.objects.filter(active=True).prefetch_related("hl7_senders", "dicom_senders")
    if code is not None:
        facilities = facilities.filter(code=code)
    found = []
    for facility in facilities:
        senders, modalities = list(facility.hl7_senders.all()), list(facility.dicom_senders.all())
        if senders and modalities:
            sender = (senders[0].sending_application, senders[0].sending_facility)
            found.append(SimulatedFacility(facility.code, sender, modalities[0].ae_title, facility.timezone))
    return found
