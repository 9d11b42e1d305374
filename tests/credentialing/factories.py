"""factory_boy factories for credentialing records, shifts and bare studies (no patient)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import factory

from credentialing.models import (
    BoardCertification,
    FacilityPrivilege,
    LicenceStatus,
    PrivilegeStatus,
    StateLicence,
    VerificationMethod,
)
from imaging.models import Study
from worklist.models import Shift


class LicenceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StateLicence

    state = "IL"
    number = factory.Sequence(lambda n: f"036-{100000 + n}")
    status = LicenceStatus.ACTIVE
    issued_on = date(2020, 1, 1)
    expires_on = date(2027, 12, 31)
    # verified with the board, as facilities require by default (``unverified=True``: not yet)
    verified_at = datetime(2020, 1, 15, 15, 0, tzinfo=UTC)
    verification_method = VerificationMethod.SOURCE_WEBSITE

    class Params:
        unverified = factory.Trait(verified_at=None, verification_method="")


class BoardFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BoardCertification

    board = "ABR"
    specialty = "Diagnostic Radiology"
    certificate_number = factory.Sequence(lambda n: f"ABR-{5000 + n}")
    issued_on = date(2015, 7, 1)
    expires_on = date(2028, 3, 31)


class PrivilegeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FacilityPrivilege
        skip_postgeneration_save = True

    status = PrivilegeStatus.APPROVED
    applied_on = date(2025, 1, 2)
    granted_on = date(2025, 2, 1)
    expires_on = date(2027, 1, 31)

    @factory.post_generation
    def scope(self, create, extracted, **kwargs):
        if create and extracted:
            self.scope_subspecialties.set(extracted)


class ShiftFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Shift
        skip_postgeneration_save = True

    @factory.post_generation
    def facilities(self, create, extracted, **kwargs):
        if create and extracted:
            self.facilities.set(extracted)

    @factory.post_generation
    def subspecialties(self, create, extracted, **kwargs):
        if create and extracted:
            self.subspecialties.set(extracted)


class StudyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Study

    study_instance_uid = factory.Sequence(lambda n: f"1.2.826.0.1.3680043.10.5.{n}")
    modalities = "CT"
