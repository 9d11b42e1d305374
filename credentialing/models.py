"""Credentialing records: who a radiologist is (profile, subspecialties), what they hold (licences,
board certifications, fellowships, DEA registrations, malpractice cover, documents) and where they
may read (facility privileges with their application checklist).

The eligibility engine (``credentialing.eligibility``) reads these rows; nothing here decides
eligibility by itself except the small date/status helpers the engine uses.

Dates of expiry are calendar dates as printed on the licence or letter: a credential is valid up to
the end of its expiry date *in the facility's time zone* (see ``credentialing.eligibility``)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q

from facilities.models import Facility, USState


class Subspecialty(models.Model):
    """A reading subspecialty. Rows are fixed by migration; routing maps procedures onto them."""

    NEURO = "neuro"
    MSK = "msk"
    BODY = "body"
    CHEST = "chest"
    PEDIATRIC = "pediatric"
    BREAST = "breast"
    NUCLEAR = "nuclear"
    GENERAL = "general"

    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "subspecialties"

    def __str__(self) -> str:
        return self.name


npi_validator = RegexValidator(r"^\d{10}$", "An NPI has 10 digits")


class RadiologistProfile(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="radiologist_profile"
    )
    npi = models.CharField("NPI", max_length=10, blank=True, validators=[npi_validator])
    subspecialties = models.ManyToManyField(Subspecialty, blank=True, related_name="radiologists")
    # Push routing stops giving this reader studies once the RVUs they hold reach this; empty: the
    # site default (READROOM_PUSH_RVU_CAP). Stroke and trauma bypass it (worklist.assignment).
    rvu_load_cap = models.DecimalField(
        "RVU load cap",
        max_digits=6,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["npi"], condition=~models.Q(npi=""), name="unique_radiologist_npi"
            ),
        ]

    def __str__(self) -> str:
        return str(self.user)

    def get_additional_data(self) -> dict:
        return {"radiologist_id": self.user_id}


# --- the dossier ------------------------------------------------------------------------------


class VerificationMethod(models.TextChoices):
    """How a credential was verified with its primary source (Joint Commission MS.06.01.03)."""

    SOURCE_WEBSITE = "source_website", "Issuing body's website (online lookup)"
    SOURCE_LETTER = "source_letter", "Letter or e-mail from the issuing body"
    TELEPHONE = "telephone", "Telephone call to the issuing body"
    FSMB = "fsmb", "FSMB / FCVS report"
    NPDB = "npdb", "NPDB query"
    CVO = "cvo", "Credentials verification organisation report"
    OTHER = "other", "Other (see note)"


class PrimarySourceVerification(models.Model):
    """Who verified a credential with its primary source, when, how, and the evidence kept.

    Either all unverified (no date, no method) or verified (date and method); the database keeps it
    that way so a half-recorded verification never counts as one in the packet."""

    verified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    verification_method = models.CharField(max_length=32, choices=VerificationMethod.choices, blank=True)
    verification_document = models.ForeignKey(
        "credentialing.Document", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    verification_note = models.CharField(max_length=300, blank=True)

    class Meta:
        abstract = True
        constraints = [
            models.CheckConstraint(
                condition=(Q(verified_at__isnull=True) & Q(verification_method=""))
                | (Q(verified_at__isnull=False) & ~Q(verification_method="")),
                name="%(app_label)s_%(class)s_verification_complete",
            ),
        ]

    @property
    def is_verified(self) -> bool:
        return self.verified_at is not None

    def clean(self) -> None:
        super().clean()
        if self.verification_document_id and self.verification_document.profile_id != self.profile_id:
            raise ValidationError({"verification_document": "That document belongs to someone else."})


class LicenceKind(models.TextChoices):
    FULL = "full", "Full and unrestricted"
    TELEMEDICINE = "telemedicine", "Telemedicine"
    TEMPORARY = "temporary", "Temporary"
    COMPACT = "compact", "Interstate compact (IMLC)"


class LicenceStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PENDING = "pending", "Pending with the board"
    EXPIRED = "expired", "Expired"
    SUSPENDED = "suspended", "Suspended"
    REVOKED = "revoked", "Revoked"
    INACTIVE = "inactive", "Inactive (relinquished)"


class StateLicence(PrimarySourceVerification):
    """A state medical licence. Only an *active* licence counts, and only from its issue date to the
    end of its expiry date in the facility's time zone."""

    profile = models.ForeignKey(RadiologistProfile, on_delete=models.PROTECT, related_name="licences")
    state = models.CharField("US state", max_length=2, choices=USState.choices)
    number = models.CharField("licence number", max_length=40)
    kind = models.CharField(
        "licence type", max_length=16, choices=LicenceKind.choices, default=LicenceKind.FULL
    )
    status = models.CharField(max_length=16, choices=LicenceStatus.choices, default=LicenceStatus.PENDING)
    issued_on = models.DateField()
    expires_on = models.DateField()
    notes = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["state", "-expires_on"]
        constraints = [
            *PrimarySourceVerification.Meta.constraints,
            models.CheckConstraint(
                condition=Q(expires_on__gt=F("issued_on")), name="licence_expires_after_issue"
            ),
            # A state board numbers its licences uniquely.
            models.UniqueConstraint(fields=["state", "number"], name="unique_licence_number_per_state"),
        ]
        indexes = [models.Index(fields=["profile", "state"], name="licence_profile_state_idx")]

    def __str__(self) -> str:
        return f"{self.state} licence {self.number}"

    def get_additional_data(self) -> dict:
        return {"radiologist_id": self.profile.user_id}


class Board(models.TextChoices):
    ABR = "ABR", "American Board of Radiology"
    AOBR = "AOBR", "American Osteopathic Board of Radiology"
    ABNM = "ABNM", "American Board of Nuclear Medicine"
    RCPSC = "RCPSC", "Royal College of Physicians and Surgeons of Canada"
    OTHER = "OTHER", "Other (see specialty)"


class BoardCertification(PrimarySourceVerification):
    """A board certificate. ``expires_on`` is empty for lifetime certificates (ABR before 2002)."""

    profile = models.ForeignKey(
        RadiologistProfile, on_delete=models.PROTECT, related_name="board_certifications"
    )
    board = models.CharField(max_length=8, choices=Board.choices, default=Board.ABR)
    specialty = models.CharField(max_length=120, help_text="e.g. Diagnostic Radiology; Neuroradiology")
    certificate_number = models.CharField(max_length=40, blank=True)
    issued_on = models.DateField()
    expires_on = models.DateField(null=True, blank=True, help_text="Leave empty for a lifetime certificate.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["board", "specialty"]
        constraints = [
            *PrimarySourceVerification.Meta.constraints,
            models.CheckConstraint(
                condition=Q(expires_on__isnull=True) | Q(expires_on__gt=F("issued_on")),
                name="board_expires_after_issue",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.board} {self.specialty}"

    def get_additional_data(self) -> dict:
        return {"radiologist_id": self.profile.user_id}


class Fellowship(PrimarySourceVerification):
    profile = models.ForeignKey(RadiologistProfile, on_delete=models.PROTECT, related_name="fellowships")
    institution = models.CharField(max_length=200)
    subspecialty = models.ForeignKey(
        Subspecialty, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    started_on = models.DateField()
    completed_on = models.DateField(null=True, blank=True, help_text="Empty while in training.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-started_on"]
        constraints = [
            *PrimarySourceVerification.Meta.constraints,
            models.CheckConstraint(
                condition=Q(completed_on__isnull=True) | Q(completed_on__gt=F("started_on")),
                name="fellowship_completed_after_start",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subspecialty or 'Fellowship'} — {self.institution}"

    def get_additional_data(self) -> dict:
        return {"radiologist_id": self.profile.user_id}


dea_validator = RegexValidator(r"^[A-Z]{2}\d{7}$", "A DEA number is two capital letters and seven digits")


class DeaRegistration(PrimarySourceVerification):
    """A DEA registration, per state; radiologists need one where they give contrast or sedation."""

    profile = models.ForeignKey(
        RadiologistProfile, on_delete=models.PROTECT, related_name="dea_registrations"
    )
    number = models.CharField("DEA number", max_length=9, unique=True, validators=[dea_validator])
    state = models.CharField("US state", max_length=2, choices=USState.choices)
    schedules = models.CharField(max_length=40, default="2, 2N, 3, 3N, 4, 5")
    issued_on = models.DateField()
    expires_on = models.DateField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["state"]
        verbose_name = "DEA registration"
        constraints = [
            *PrimarySourceVerification.Meta.constraints,
            models.CheckConstraint(
                condition=Q(expires_on__gt=F("issued_on")), name="dea_expires_after_issue"
            ),
        ]

    def __str__(self) -> str:
        return f"DEA {self.number} ({self.state})"

    def get_additional_data(self) -> dict:
        return {"radiologist_id": self.profile.user_id}


class CoverageKind(models.TextChoices):
    CLAIMS_MADE = "claims_made", "Claims-made"
    OCCURRENCE = "occurrence", "Occurrence"


class MalpracticeCoverage(PrimarySourceVerification):
    profile = models.ForeignKey(
        RadiologistProfile, on_delete=models.PROTECT, related_name="malpractice_coverages"
    )
    carrier = models.CharField(max_length=200)
    policy_number = models.CharField(max_length=60)
    kind = models.CharField(max_length=16, choices=CoverageKind.choices, default=CoverageKind.CLAIMS_MADE)
    per_claim_limit = models.PositiveBigIntegerField("per-claim limit (USD)")
    aggregate_limit = models.PositiveBigIntegerField("aggregate limit (USD)")
    effective_on = models.DateField()
    expires_on = models.DateField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-expires_on"]
        verbose_name_plural = "malpractice coverages"
        constraints = [
            *PrimarySourceVerification.Meta.constraints,
            models.CheckConstraint(
                condition=Q(expires_on__gt=F("effective_on")), name="malpractice_expires_after_effective"
            ),
            models.CheckConstraint(
                condition=Q(aggregate_limit__gte=F("per_claim_limit")),
                name="malpractice_aggregate_at_least_per_claim",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.carrier} {self.policy_number}"

    def get_additional_data(self) -> dict:
        return {"radiologist_id": self.profile.user_id}


class DocumentKind(models.TextChoices):
    LICENCE = "licence", "State licence"
    BOARD = "board", "Board certificate"
    FELLOWSHIP = "fellowship", "Fellowship certificate"
    DEA = "dea", "DEA registration"
    MALPRACTICE = "malpractice", "Certificate of insurance"
    CV = "cv", "Curriculum vitae"
    PRIVILEGE_LETTER = "privilege_letter", "Privilege letter"
    DISTANT_SITE = "distant_site", "Distant-site privilege list (proxy)"
    VERIFICATION = "verification", "Primary-source verification record"
    OTHER = "other", "Other"


class DocumentContentType(models.TextChoices):
    """What we accept, decided from the file's first bytes, never from the browser's header."""

    PDF = "application/pdf", "PDF"
    PNG = "image/png", "PNG image"
    JPEG = "image/jpeg", "JPEG image"


class Document(models.Model):
    """An uploaded credentialing document, stored encrypted (imaging.storage) under
    ``credentialing/<profile id>/<uuid>``. Documents are never deleted: verifications point at them."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    profile = models.ForeignKey(RadiologistProfile, on_delete=models.PROTECT, related_name="documents")
    kind = models.CharField(max_length=20, choices=DocumentKind.choices, default=DocumentKind.OTHER)
    title = models.CharField(max_length=200)
    original_filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=32, choices=DocumentContentType.choices)
    size_bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    storage_path = models.CharField(max_length=255, unique=True)
    storage_key_id = models.CharField(max_length=32)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    uploaded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-uploaded_at", "-id"]
        constraints = [models.CheckConstraint(condition=Q(size_bytes__gt=0), name="document_not_empty")]

    def __str__(self) -> str:
        return self.title

    @property
    def extension(self) -> str:
        return {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg"}.get(
            self.content_type, "bin"
        )

    def get_additional_data(self) -> dict:
        return {"radiologist_id": self.profile.user_id}


# --- facility privileges ----------------------------------------------------------------------


class Modality(models.TextChoices):
    """Imaging modalities a privilege's scope may be limited to (DICOM PS3.3 C.7.3.1.1.1)."""

    CR = "CR", "Computed radiography"
    DX = "DX", "Digital radiography"
    CT = "CT", "CT"
    MR = "MR", "MRI"
    US = "US", "Ultrasound"
    NM = "NM", "Nuclear medicine"
    PT = "PT", "PET"
    MG = "MG", "Mammography"
    XA = "XA", "Angiography"
    RF = "RF", "Fluoroscopy"


# Objects that travel with images but are not images: they never need a privilege of their own, so a
# study "CT\SR" is a CT study. Anything else outside a privilege's modalities is not covered.
NON_IMAGE_MODALITIES = ("SR", "PR", "KO", "DOC", "REG", "SEG", "RWV", "FID", "PLAN")


def validate_modalities(value) -> None:
    if not isinstance(value, list) or any(m not in Modality.values for m in value):
        raise ValidationError(f"Choose modalities from {', '.join(Modality.values)}.")


class PrivilegeStatus(models.TextChoices):
    APPLIED = "applied", "Applied"
    IN_REVIEW = "in_review", "In review"
    APPROVED = "approved", "Approved"
    APPROVED_BY_PROXY = "approved_by_proxy", "Approved by proxy"
    DENIED = "denied", "Denied"
    LAPSED = "lapsed", "Lapsed"


# An application or a grant in force: at most one per radiologist per facility.
OPEN_PRIVILEGE_STATUSES = (
    PrivilegeStatus.APPLIED,
    PrivilegeStatus.IN_REVIEW,
    PrivilegeStatus.APPROVED,
    PrivilegeStatus.APPROVED_BY_PROXY,
)
# Statuses under which a radiologist may read there (DESIGN.md §6), within granted_on..expires_on.
GRANTED_PRIVILEGE_STATUSES = (PrivilegeStatus.APPROVED, PrivilegeStatus.APPROVED_BY_PROXY)


class FacilityPrivilege(models.Model):
    """Clinical privileges of one radiologist at one facility.

    applied → in_review → approved | approved_by_proxy | denied; a grant later lapses (expiry,
    resignation). *Approved by proxy* is credentialing by proxy (42 CFR 482.22(a)(3)): the facility
    relies on the privileging decision of the distant-site hospital, recorded with its approval date.

    Scope: empty lists mean everything; otherwise the study's subspecialty must be one of
    ``scope_subspecialties`` and its image modalities among ``scope_modalities``."""

    profile = models.ForeignKey(RadiologistProfile, on_delete=models.PROTECT, related_name="privileges")
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="privileges")
    status = models.CharField(max_length=20, choices=PrivilegeStatus.choices, default=PrivilegeStatus.APPLIED)
    applied_on = models.DateField()
    granted_on = models.DateField(null=True, blank=True)
    expires_on = models.DateField(null=True, blank=True, help_text="Reappointment is due by this date.")
    scope_subspecialties = models.ManyToManyField(Subspecialty, blank=True, related_name="+")
    scope_modalities = models.JSONField(default=list, blank=True, validators=[validate_modalities])
    distant_site_name = models.CharField("distant-site hospital", max_length=200, blank=True)
    distant_site_approved_on = models.DateField("distant-site approval date", null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    status_note = models.CharField(max_length=500, blank=True, help_text="Why denied or lapsed, and by whom.")
    # The facility's core team: push routing offers its studies to these readers first. Kept on the
    # privilege (not the facility) because membership only means something while privileges hold.
    core_team = models.BooleanField(
        default=False, help_text="Push routing offers this facility's studies to its core team first."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["facility__name"]
        constraints = [
            # History (denied, lapsed) stays; only one application or grant is open at a time.
            models.UniqueConstraint(
                fields=["profile", "facility"],
                condition=Q(status__in=OPEN_PRIVILEGE_STATUSES),
                name="one_open_privilege_per_facility",
            ),
            models.CheckConstraint(
                condition=Q(expires_on__isnull=True)
                | Q(granted_on__isnull=True)
                | Q(expires_on__gt=F("granted_on")),
                name="privilege_expires_after_grant",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=GRANTED_PRIVILEGE_STATUSES)
                | (Q(granted_on__isnull=False) & Q(expires_on__isnull=False)),
                name="privilege_granted_has_dates",
            ),
            models.CheckConstraint(
                condition=~Q(status=PrivilegeStatus.APPROVED_BY_PROXY)
                | (~Q(distant_site_name="") & Q(distant_site_approved_on__isnull=False)),
                name="privilege_proxy_names_distant_site",
            ),
        ]
        indexes = [models.Index(fields=["facility", "status"], name="privilege_facility_status_idx")]

    def __str__(self) -> str:
        return f"{self.profile} at {self.facility.name}"

    @property
    def is_granted(self) -> bool:
        return self.status in GRANTED_PRIVILEGE_STATUSES

    def get_additional_data(self) -> dict:
        return {"radiologist_id": self.profile.user_id, "facility_id": self.facility_id}


class PrivilegeChecklistItem(models.Model):
    """One item of an application (e.g. "NPDB query"), copied from the facility's required items
    when the application is opened, with who completed it and when."""

    privilege = models.ForeignKey(FacilityPrivilege, on_delete=models.CASCADE, related_name="checklist")
    label = models.CharField(max_length=200)
    position = models.PositiveSmallIntegerField(default=0)
    required = models.BooleanField(default=True)
    completed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    completed_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["privilege", "label"], name="unique_checklist_label"),
            models.CheckConstraint(
                condition=(Q(completed_by__isnull=True) & Q(completed_at__isnull=True))
                | (Q(completed_by__isnull=False) & Q(completed_at__isnull=False)),
                name="checklist_completion_has_who_and_when",
            ),
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def is_complete(self) -> bool:
        return self.completed_at is not None

    def get_additional_data(self) -> dict:
        return {"facility_id": self.privilege.facility_id, "radiologist_id": self.privilege.profile.user_id}


class FacilityCredentialing(models.Model):
    """A facility's medical-staff office: whom the MSO deals with, how long appointments last, and
    whether its bylaws allow credentialing by proxy. (Kept here, keyed by facility, so credentialing
    owns its settings.)"""

    facility = models.OneToOneField(Facility, on_delete=models.PROTECT, related_name="credentialing")
    mso_contact_name = models.CharField("MSO contact", max_length=200, blank=True)
    mso_contact_email = models.EmailField("MSO e-mail", blank=True)
    mso_contact_phone = models.CharField("MSO telephone", max_length=40, blank=True)
    reappointment_months = models.PositiveSmallIntegerField(
        default=24,
        validators=[MinValueValidator(1), MaxValueValidator(36)],
        help_text="Appointment length; CMS allows at most 36 months, most bylaws say 24.",
    )
    accepts_proxy = models.BooleanField(
        "credentialing by proxy agreed",
        default=False,
        help_text="The facility's bylaws and a written agreement allow relying on a distant site's "
        "privileges.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "facility credentialing settings"
        verbose_name_plural = "facility credentialing settings"

    def __str__(self) -> str:
        return f"Credentialing at {self.facility.name}"

    def get_additional_data(self) -> dict:
        return {"facility_id": self.facility_id}


class FacilityChecklistRequirement(models.Model):
    """An item every application at this facility must complete."""

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="checklist_requirements")
    label = models.CharField(max_length=200)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["facility", "label"], name="unique_requirement_per_facility"),
        ]

    def __str__(self) -> str:
        return self.label

    def get_additional_data(self) -> dict:
        return {"facility_id": self.facility_id}


# Used for a facility that has not configured its own list (typical delegated-credentialing items).
DEFAULT_CHECKLIST = (
    "Signed application and attestation",
    "State licence verified with the board",
    "Board certification verified",
    "NPDB query",
    "Certificate of malpractice insurance",
    "Two peer references",
    "Delineation of privileges signed",
    "Medical executive committee approval",
)


# --- notifications ----------------------------------------------------------------------------


class NotificationLevel(models.TextChoices):
    INFO = "info", "Information"
    WARNING = "warning", "Warning"
    DANGER = "danger", "Overdue"


class Notification(models.Model):
    """An in-app message to credentialing staff. ``key`` names the event (e.g. a licence at the
    30-day threshold for one expiry date) so the daily check never tells anyone the same thing twice."""

    # No reverse accessor on User: django-auditlog would list it as a field of every user change.
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    key = models.CharField(max_length=200)
    level = models.CharField(max_length=8, choices=NotificationLevel.choices, default=NotificationLevel.INFO)
    message = models.CharField(max_length=500)
    url = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["recipient", "key"], name="unique_notification_per_recipient"),
        ]
        indexes = [models.Index(fields=["recipient", "read_at"], name="notification_unread_idx")]

    def __str__(self) -> str:
        return self.message
