"""Report templates (per facility, versioned) and the reports written on them (issue 6).

* ``ReportTemplate``: what a facility reads a kind of procedure on — chosen by procedure code, else by
  modality + body part (``reports.selectors.template_for_study``). ``facility`` NULL is a template
  ReadRoom ships; a facility's own template for the same procedure wins.
* ``TemplateVersion``: the template's content (``reports.schema``) at one edit. Versions are never
  changed: an edit adds a version, and a report keeps the version it was written on.
* ``Report``: one per study; its field ``values`` on that version; states draft → preliminary → final.
  Signing, immutability and addenda are ``reports.services``' business."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class ReportTemplate(models.Model):
    facility = models.ForeignKey(
        "facilities.Facility",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="report_templates",
        help_text="Empty: shipped with ReadRoom, used where the facility has no template of its own.",
    )
    name = models.CharField(max_length=200)
    procedure_codes = models.JSONField(
        default=list, blank=True, help_text="Procedure codes (e.g. CPT 70450) this template is for."
    )
    modality = models.CharField(max_length=16, blank=True, help_text="Used when no code matches, e.g. CT")
    body_part = models.CharField(max_length=32, blank=True, help_text="With modality, e.g. HEAD")
    variant = models.CharField(
        max_length=32, blank=True, help_text="e.g. stroke: preferred for a code-stroke study of the procedure"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["facility_id", "name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["facility", "name"], name="report_template_unique_name"),
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(facility__isnull=True),
                name="report_template_default_unique_name",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.facility or 'shipped'}: {self.name}"

    def current_version(self) -> TemplateVersion | None:
        return self.versions.order_by("-number").first()

    def get_additional_data(self) -> dict:
        return {"facility_id": self.facility_id}


class TemplateVersion(models.Model):
    template = models.ForeignKey(ReportTemplate, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    content = models.JSONField(help_text="Sections and fields, see reports.schema")
    change_note = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["template_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["template", "number"], name="template_version_unique_number"),
        ]

    def __str__(self) -> str:
        return f"{self.template.name} v{self.number}"

    def get_additional_data(self) -> dict:
        return {"facility_id": self.template.facility_id}


class Macro(models.Model):
    """A named text snippet a radiologist inserts while writing: a facility's (shared by everyone reading
    there, kept by its admins) or one radiologist's own (``owner``). Exactly one of the two is set."""

    facility = models.ForeignKey(
        "facilities.Facility", null=True, blank=True, on_delete=models.CASCADE, related_name="macros"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="macros"
    )
    name = models.CharField(max_length=80)
    text = models.TextField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(facility__isnull=True, owner__isnull=False)
                | Q(facility__isnull=False, owner__isnull=True),
                name="macro_one_scope",
            ),
            models.UniqueConstraint(
                fields=["facility", "name"], condition=Q(facility__isnull=False), name="macro_facility_name"
            ),
            models.UniqueConstraint(
                fields=["owner", "name"], condition=Q(owner__isnull=False), name="macro_owner_name"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.facility or self.owner}: {self.name}"

    def get_additional_data(self) -> dict:
        return {"facility_id": self.facility_id}


class ReportStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PRELIMINARY = "preliminary", "Preliminary"
    FINAL = "final", "Final"


class Report(models.Model):
    """The radiologist's report of one study. ``values`` maps template field keys to text."""

    study = models.OneToOneField("imaging.Study", on_delete=models.PROTECT, related_name="report")
    template_version = models.ForeignKey(TemplateVersion, on_delete=models.PROTECT, related_name="reports")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=ReportStatus.choices, default=ReportStatus.DRAFT)
    values = models.JSONField(default=dict, blank=True)
    is_critical = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The signature: who signed, when, and the exact text they signed (what the EMR and the PDF show).
    signed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    signed_at = models.DateTimeField(null=True, blank=True)
    signed_text = models.TextField(blank=True)
    # SHA-256 (hex) of ``signed_text`` as UTF-8: what the signature vouches for, checkable later.
    signed_sha256 = models.CharField(max_length=64, blank=True)
    # Turnaround timestamps (issue 6 "TAT timestamps (opened, prelim, final)"): the final one is
    # ``signed_at`` of a final report. Written here, on the report, which reports.services owns.
    opened_at = models.DateTimeField(null=True, blank=True)
    preliminary_at = models.DateTimeField(null=True, blank=True)
    # Critical result (ACR practice parameter): when it was marked, and when operations was told that
    # it stayed uncommunicated past the facility's deadline (set once: the escalation is idempotent).
    critical_marked_at = models.DateTimeField(null=True, blank=True)
    critical_escalated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="final") | Q(signed_by__isnull=False, signed_at__isnull=False),
                name="report_final_is_signed",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "signed_at"], name="report_status_signed_idx"),
            models.Index(fields=["is_critical", "status"], name="report_critical_open_idx"),
        ]

    def __str__(self) -> str:
        return f"report of study {self.study_id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status == ReportStatus.FINAL

    def get_additional_data(self) -> dict:
        return {"patient_id": self.study.patient_id, "facility_id": self.study.facility_id}


class Addendum(models.Model):
    """A signed correction appended to a final report; never changed or removed (database triggers,
    ``reports.setup``). Each one is re-sent to the EMR as a correction."""

    report = models.ForeignKey(Report, on_delete=models.PROTECT, related_name="addenda")
    sequence = models.PositiveIntegerField()
    text = models.TextField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    signed_at = models.DateTimeField()
    # SHA-256 (hex) of the exact text signed (``Addendum.signed_content``).
    signature = models.CharField(max_length=64)

    class Meta:
        ordering = ["report_id", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["report", "sequence"], name="addendum_unique_sequence"),
        ]

    def __str__(self) -> str:
        return f"addendum {self.sequence} to report {self.report_id}"


class CommunicationMethod(models.TextChoices):
    PHONE = "phone", "Phone"
    IN_PERSON = "in_person", "In person"
    SECURE_MESSAGE = "secure_message", "Secure message"


class CriticalResultCommunication(models.Model):
    """Who was told of a critical result, how, when, and that they read it back (ACR practice
    parameter on communication of diagnostic imaging findings; Joint Commission NPSG.02.03.01)."""

    report = models.ForeignKey(Report, on_delete=models.PROTECT, related_name="communications")
    person_notified = models.CharField(max_length=200)
    role = models.CharField(max_length=100, help_text="e.g. ED attending, ordering physician, charge nurse")
    method = models.CharField(max_length=16, choices=CommunicationMethod.choices)
    communicated_at = models.DateTimeField()
    read_back_confirmed = models.BooleanField()
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["report_id", "communicated_at", "id"]
        constraints = [
            # Read-back is what makes it a communication rather than a message left somewhere.
            models.CheckConstraint(
                condition=Q(read_back_confirmed=True), name="critical_read_back_confirmed"
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.person_notified} ({self.role}) by {self.method} at {self.communicated_at:%Y-%m-%d %H:%M}"
        )


class SigningAttempt(models.Model):
    """A failed re-authentication at signing. Counted to lock signing after too many (like the sign-in
    lockout) and kept as an audit trail."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    report = models.ForeignKey(Report, null=True, on_delete=models.SET_NULL, related_name="+")
    at = models.DateTimeField()
    address = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "at"], name="signing_attempt_user_at_idx")]

    def __str__(self) -> str:
        return f"failed signing re-authentication by {self.user_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class ChargeKind(models.TextChoices):
    CHARGE = "charge", "Charge"  # the final read's own row
    REVERSAL = "reversal", "Reversal"  # cancels one earlier row: its amounts negated
    CORRECTION = "correction", "Correction"  # what should have been billed, after a reversal


class Charge(models.Model):
    """What the facility is billed for one final read. Append-only (a database trigger refuses
    UPDATE and DELETE, reports.setup): the read's own row (``charge``) is exactly one per study — a
    unique constraint, so re-signing, addenda and retries never bill twice — and a correction is
    new rows that reference the row they correct (``corrects``), with the reason and who posted it:
    a ``reversal`` with the amounts negated and, unless the read is not billable at all, a
    ``correction`` with the right values (``reports.services.charge_correct``). The sum of a study's
    rows is what it costs; the month a row belongs to is when it was posted."""

    facility = models.ForeignKey("facilities.Facility", on_delete=models.PROTECT, related_name="charges")
    study = models.ForeignKey("imaging.Study", on_delete=models.PROTECT, related_name="charges")
    report = models.ForeignKey(Report, on_delete=models.PROTECT, related_name="charges")
    kind = models.CharField(max_length=16, choices=ChargeKind.choices, default=ChargeKind.CHARGE)
    corrects = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="corrections"
    )
    reason = models.TextField(blank=True)
    posted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )  # empty for the read's own row (the signature posted it)
    procedure_code = models.CharField(max_length=64, blank=True)
    rvu = models.DecimalField("RVU", max_digits=6, decimal_places=2, default=0)
    rate = models.DecimalField(max_digits=8, decimal_places=2)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    radiologist = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    signed_at = models.DateTimeField()  # the read's signature, on every row of the study
    posted_at = models.DateTimeField()  # the invoice month: the signature, or when the correction was posted

    class Meta:
        ordering = ["facility_id", "posted_at", "id"]
        indexes = [models.Index(fields=["facility", "posted_at"], name="charge_facility_posted_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["study"], condition=models.Q(kind="charge"), name="charge_once_per_study"
            ),
            models.UniqueConstraint(
                fields=["corrects"], condition=models.Q(kind="reversal"), name="charge_reversed_once"
            ),
            models.CheckConstraint(
                condition=models.Q(kind="charge", corrects__isnull=True)
                | (~models.Q(kind="charge") & models.Q(corrects__isnull=False) & ~models.Q(reason="")),
                name="charge_correction_references_original_with_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.facility_id} study {self.study_id}: {self.kind} {self.amount}"


class AiVerdictChoice(models.TextChoices):
    AGREE = "agree", "Agree"
    DISAGREE = "disagree", "Disagree"
    NOT_ASSESSABLE = "not_assessable", "Not assessable"


class AiVerdict(models.Model):
    """The reader's verdict on one AI finding, given at signing and kept with the report (docs/ai.md);
    the QA dashboard measures each algorithm by these (qa.ai_metrics)."""

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="ai_verdicts")
    finding = models.ForeignKey("imaging.AiFinding", on_delete=models.CASCADE, related_name="verdicts")
    verdict = models.CharField(max_length=16, choices=AiVerdictChoice.choices)
    given_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    given_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["report", "finding"], name="ai_verdict_once_per_finding")
        ]

    def __str__(self) -> str:
        return f"{self.finding}: {self.verdict}"
