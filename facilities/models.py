"""Client facilities and their contracts.

A facility is one hospital or imaging centre that sends orders and images and receives reports.
Its US state decides which licence a reader needs; its time zone decides what "on shift" and
"expires at midnight" mean; its contract sets the turnaround targets per priority class."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, available_timezones

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models


class PriorityClass(models.TextChoices):
    """Turnaround classes, most urgent first (DESIGN.md §6)."""

    STROKE = "STROKE", "Code stroke"
    TRAUMA = "TRAUMA", "Trauma"
    STAT = "STAT", "STAT (ED)"
    ASAP = "ASAP", "ASAP / inpatient"
    ROUTINE = "ROUTINE", "Routine"


# Default contract targets in minutes (DESIGN.md §6); each facility contract may override them.
DEFAULT_SLA_MINUTES: dict[str, int] = {
    PriorityClass.STROKE: 20,
    PriorityClass.TRAUMA: 30,
    PriorityClass.STAT: 30,
    PriorityClass.ASAP: 4 * 60,
    PriorityClass.ROUTINE: 24 * 60,
}


class USState(models.TextChoices):
    AL = "AL", "Alabama"
    AK = "AK", "Alaska"
    AZ = "AZ", "Arizona"
    AR = "AR", "Arkansas"
    CA = "CA", "California"
    CO = "CO", "Colorado"
    CT = "CT", "Connecticut"
    DE = "DE", "Delaware"
    DC = "DC", "District of Columbia"
    FL = "FL", "Florida"
    GA = "GA", "Georgia"
    HI = "HI", "Hawaii"
    ID = "ID", "Idaho"
    IL = "IL", "Illinois"
    IN = "IN", "Indiana"
    IA = "IA", "Iowa"
    KS = "KS", "Kansas"
    KY = "KY", "Kentucky"
    LA = "LA", "Louisiana"
    ME = "ME", "Maine"
    MD = "MD", "Maryland"
    MA = "MA", "Massachusetts"
    MI = "MI", "Michigan"
    MN = "MN", "Minnesota"
    MS = "MS", "Mississippi"
    MO = "MO", "Missouri"
    MT = "MT", "Montana"
    NE = "NE", "Nebraska"
    NV = "NV", "Nevada"
    NH = "NH", "New Hampshire"
    NJ = "NJ", "New Jersey"
    NM = "NM", "New Mexico"
    NY = "NY", "New York"
    NC = "NC", "North Carolina"
    ND = "ND", "North Dakota"
    OH = "OH", "Ohio"
    OK = "OK", "Oklahoma"
    OR = "OR", "Oregon"
    PA = "PA", "Pennsylvania"
    PR = "PR", "Puerto Rico"
    RI = "RI", "Rhode Island"
    SC = "SC", "South Carolina"
    SD = "SD", "South Dakota"
    TN = "TN", "Tennessee"
    TX = "TX", "Texas"
    UT = "UT", "Utah"
    VT = "VT", "Vermont"
    VA = "VA", "Virginia"
    WA = "WA", "Washington"
    WV = "WV", "West Virginia"
    WI = "WI", "Wisconsin"
    WY = "WY", "Wyoming"


class FacilityKind(models.TextChoices):
    LEVEL1_TRAUMA = "level1_trauma", "Level 1 trauma centre"
    LEVEL2_TRAUMA = "level2_trauma", "Level 2 trauma centre"
    COMMUNITY = "community", "Community hospital"
    CRITICAL_ACCESS = "critical_access", "Critical access hospital"
    OUTPATIENT_IMAGING = "outpatient_imaging", "Outpatient imaging centre"
    URGENT_CARE = "urgent_care", "Urgent care"


class RoutingMode(models.TextChoices):
    PULL = "pull", "Pull: readers claim from the worklist"
    PUSH = "push", "Push: assigned to the best eligible reader"


def validate_timezone(value: str) -> None:
    if value not in available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (e.g. America/Chicago)")


facility_code_validator = RegexValidator(
    r"^[A-Z0-9][A-Z0-9_-]{1,31}$", "2–32 characters: capital letters, digits, '-' or '_'"
)


class Facility(models.Model):
    code = models.CharField(max_length=32, unique=True, validators=[facility_code_validator])
    name = models.CharField(max_length=200)
    state = models.CharField("US state", max_length=2, choices=USState.choices)
    timezone = models.CharField(max_length=64, validators=[validate_timezone], default="America/Chicago")
    kind = models.CharField(max_length=32, choices=FacilityKind.choices)
    active = models.BooleanField(default=True)

    # Contract turnaround targets (minutes) per priority class.
    sla_stroke_minutes = models.PositiveIntegerField(
        default=DEFAULT_SLA_MINUTES[PriorityClass.STROKE], validators=[MinValueValidator(1)]
    )
    sla_trauma_minutes = models.PositiveIntegerField(
        default=DEFAULT_SLA_MINUTES[PriorityClass.TRAUMA], validators=[MinValueValidator(1)]
    )
    sla_stat_minutes = models.PositiveIntegerField(
        default=DEFAULT_SLA_MINUTES[PriorityClass.STAT], validators=[MinValueValidator(1)]
    )
    sla_asap_minutes = models.PositiveIntegerField(
        default=DEFAULT_SLA_MINUTES[PriorityClass.ASAP], validators=[MinValueValidator(1)]
    )
    sla_routine_minutes = models.PositiveIntegerField(
        default=DEFAULT_SLA_MINUTES[PriorityClass.ROUTINE], validators=[MinValueValidator(1)]
    )

    # Code-stroke escalation (DESIGN.md §4): minutes after the alert at which a still-unclaimed stroke
    # study goes to every eligible reader + operations, then to the medical director + operations.
    stroke_readers_minutes = models.PositiveIntegerField(default=2, validators=[MinValueValidator(1)])
    stroke_director_minutes = models.PositiveIntegerField(default=5, validators=[MinValueValidator(1)])
    # Optional: the director step is also POSTed (JSON) here, e.g. a paging or chat integration.
    escalation_webhook_url = models.URLField(
        "escalation webhook URL", max_length=500, blank=True, help_text="POSTed JSON at the director step"
    )

    # Whether a general/ER reader may read studies whose subspecialty no reader of that
    # subspecialty covers (typical for critical-access hospitals at night).
    accepts_general_readers = models.BooleanField(default=True)

    # Assignment (worklist.assignment): pull = eligible readers see a study and claim it; push = each
    # newly routed study is given to the best eligible reader on shift (core team, same patient,
    # lowest RVU load), falling back to the pull worklist when nobody fits.
    routing_mode = models.CharField(max_length=8, choices=RoutingMode.choices, default=RoutingMode.PULL)
    # A claim with no activity (viewer, report editor) for this long goes back to the worklist.
    claim_timeout_minutes = models.PositiveIntegerField(default=30, validators=[MinValueValidator(1)])
    # Reporting (issue 6). Whether the contract includes preliminary ("wet") reads, sent as P before
    # the final read; how long a critical result may stay uncommunicated before operations is
    # escalated to; what the facility pays per final read (billing charges).
    accepts_preliminary = models.BooleanField(
        "accepts preliminary reads", default=False, help_text="The contract includes wet reads (sent as P)."
    )
    critical_result_minutes = models.PositiveIntegerField(
        "critical result deadline (minutes)",
        default=60,
        validators=[MinValueValidator(1)],
        help_text="A critical result not communicated this long after it was marked escalates to operations.",
    )
    read_rate = models.DecimalField(
        "rate per final read",
        max_digits=8,
        decimal_places=2,
        default=Decimal("0.00"),
        validators=[MinValueValidator(Decimal("0"))],
    )

    # Interfaces. Outbound ORU goes to the facility's EMR interface engine.
    hl7_outbound_host = models.CharField("ORU host", max_length=255, blank=True)
    hl7_outbound_port = models.PositiveIntegerField("ORU port", null=True, blank=True)
    # Accession when neither IPC-1 nor OBR-18 carries one (STANDARDS.md §1 precedence).
    hl7_accession_fallback = models.CharField(
        max_length=8,
        choices=[
            ("filler", "Filler order number (ORC-3/OBR-3)"),
            ("placer", "Placer order number (ORC-2/OBR-2)"),
            ("none", "None: reject"),
        ],
        default="filler",
    )
    # A study is complete when no instance has arrived for this long (DESIGN.md §4).
    study_quiet_seconds = models.PositiveIntegerField(default=90, validators=[MinValueValidator(5)])
    # An interface silent for longer than this turns red on the operations page.
    hl7_expected_gap_minutes = models.PositiveIntegerField(default=60, validators=[MinValueValidator(1)])
    dicom_expected_gap_minutes = models.PositiveIntegerField(default=120, validators=[MinValueValidator(1)])

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "facilities"
        permissions = [
            # Granted per facility through django-guardian (facility admins), never model-wide.
            ("administer_facility", "Administer this facility's templates, catalogue and contacts"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(sla_stroke_minutes__gt=0)
                & models.Q(sla_trauma_minutes__gt=0)
                & models.Q(sla_stat_minutes__gt=0)
                & models.Q(sla_asap_minutes__gt=0)
                & models.Q(sla_routine_minutes__gt=0),
                name="facility_sla_targets_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def sla_target(self, priority: PriorityClass | str) -> timedelta:
        """The contract's turnaround target for a priority class."""
        minutes = getattr(self, f"sla_{PriorityClass(priority).value.lower()}_minutes")
        return timedelta(minutes=minutes)

    def get_additional_data(self) -> dict:
        return {"facility_id": self.pk}


class Hl7Sender(models.Model):
    """An HL7 sender (MSH-3 sending application + MSH-4 sending facility) that speaks for a facility.
    Inbound messages from a pair not listed here get AR (unknown sender)."""

    facility = models.ForeignKey(Facility, on_delete=models.CASCADE, related_name="hl7_senders")
    sending_application = models.CharField("MSH-3 sending application", max_length=180)
    sending_facility = models.CharField("MSH-4 sending facility", max_length=180)

    class Meta:
        verbose_name = "HL7 sender"
        constraints = [
            models.UniqueConstraint(
                fields=["sending_application", "sending_facility"], name="unique_hl7_sender"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sending_application}^{self.sending_facility}"

    def get_additional_data(self) -> dict:
        return {"facility_id": self.facility_id}


class DicomSender(models.Model):
    """A calling AE title (modality or PACS) that sends images for a facility."""

    facility = models.ForeignKey(Facility, on_delete=models.CASCADE, related_name="dicom_senders")
    ae_title = models.CharField(
        "calling AE title",
        max_length=16,
        unique=True,
        validators=[
            RegexValidator(r"^[\x20-\x5b\x5d-\x7e]{1,16}$", "1–16 printable characters, no backslash")
        ],
    )
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name = "DICOM sender"

    def __str__(self) -> str:
        return self.ae_title

    def get_additional_data(self) -> dict:
        return {"facility_id": self.facility_id}
