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

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="final") | Q(signed_by__isnull=False, signed_at__isnull=False),
                name="report_final_is_signed",
            ),
        ]
        indexes = [models.Index(fields=["status", "signed_at"], name="report_status_signed_idx")]

    def __str__(self) -> str:
        return f"report of study {self.study_id} ({self.status})"
