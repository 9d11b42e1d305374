"""Coverage shifts: who is reading, when, and optionally for which facilities and subspecialties.

Kept minimal for credentialing's eligibility rule "on shift now" (DESIGN.md §6); routing adds
repeating templates and time off later."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.db.models.signals import post_delete
from django.dispatch import receiver

from facilities.models import PriorityClass, validate_timezone


class Shift(models.Model):
    """A radiologist on duty from ``starts_at`` (inclusive) to ``ends_at`` (exclusive).

    Empty ``facilities`` / ``subspecialties`` mean the shift covers every facility / subspecialty;
    otherwise it covers only the ones listed (e.g. a neuro call shift for the stroke centres)."""

    # No reverse accessor on User (query ``Shift.objects.filter(radiologist=…)``): django-auditlog
    # would list a reverse relation as a field of every user change.
    radiologist = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    facilities = models.ManyToManyField("facilities.Facility", blank=True, related_name="shifts")
    subspecialties = models.ManyToManyField("credentialing.Subspecialty", blank=True, related_name="shifts")
    note = models.CharField(max_length=200, blank=True)
    # Set on shifts materialised from a repeating template (``worklist.coverage``); NULL for one-offs.
    template = models.ForeignKey(
        "worklist.ShiftTemplate", null=True, blank=True, on_delete=models.SET_NULL, related_name="shifts"
    )

    class Meta:
        ordering = ["starts_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="shift_ends_after_start"),
            # Materialisation is idempotent even with two workers running it at once: the second
            # INSERT of the same occurrence fails here instead of doubling the rota.
            models.UniqueConstraint(
                fields=["template", "starts_at"],
                condition=Q(template__isnull=False),
                name="shift_unique_template_start",
            ),
        ]
        indexes = [models.Index(fields=["starts_at", "ends_at"], name="shift_window_idx")]

    def __str__(self) -> str:
        return f"{self.radiologist} {self.starts_at:%Y-%m-%d %H:%M}–{self.ends_at:%H:%M} UTC"


# --- routing: the procedure catalogue -----------------------------------------------------------


class CatalogueRule(models.Model):
    """Maps a procedure (CPT code, or a pattern over its description) onto how it is read.

    ``facility`` NULL is the built-in default catalogue (seeded by ``worklist.setup``); a facility's own
    rows override it. Precedence, first hit wins (``worklist.catalogue``):

    1. the facility's rule for the exact procedure code;
    2. the default rule for the exact procedure code;
    3. the facility's description patterns, by ``rank`` then id;
    4. the default description patterns, by ``rank`` then id.

    A code identifies the procedure exactly, so any code rule beats any pattern; to change how a coded
    procedure is read at one facility, add a code rule for that facility. A pattern is a
    case-insensitive regular expression searched anywhere in the order's procedure text or the study
    description — a plain word ("KNEE") is a substring match."""

    facility = models.ForeignKey(
        "facilities.Facility",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="catalogue_rules",
        help_text="Empty: the built-in default catalogue, used where a facility has no rule of its own.",
    )
    procedure_code = models.CharField(max_length=64, blank=True, help_text="e.g. CPT 70450")
    description_pattern = models.CharField(
        max_length=200, blank=True, help_text="Case-insensitive regular expression, e.g. KNEE or HEAD|BRAIN"
    )
    rank = models.PositiveSmallIntegerField(default=100, help_text="Order among patterns: lower first.")
    modality = models.CharField(max_length=16, blank=True)
    body_part = models.CharField(max_length=32, blank=True)
    subspecialty = models.ForeignKey(
        "credentialing.Subspecialty", on_delete=models.PROTECT, related_name="catalogue_rules"
    )
    rvu = models.DecimalField("RVU", max_digits=6, decimal_places=2, default=0)
    priority = models.CharField(
        "default priority",
        max_length=16,
        choices=PriorityClass.choices,
        blank=True,
        help_text="Used when the study came without an order.",
    )
    stroke_protocol = models.BooleanField(default=False)
    trauma_protocol = models.BooleanField(default=False)
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["facility_id", "procedure_code", "rank", "id"]
        constraints = [
            # exactly one of code / pattern: a rule that has both would make precedence ambiguous
            models.CheckConstraint(
                condition=(Q(procedure_code="") & ~Q(description_pattern=""))
                | (~Q(procedure_code="") & Q(description_pattern="")),
                name="catalogue_rule_code_xor_pattern",
            ),
            # one rule per code per facility, and one default per code (NULLs are distinct in a plain
            # unique constraint, hence the second, partial one)
            models.UniqueConstraint(
                fields=["facility", "procedure_code"],
                condition=~Q(procedure_code=""),
                name="catalogue_rule_unique_code",
            ),
            models.UniqueConstraint(
                fields=["procedure_code"],
                condition=~Q(procedure_code="") & Q(facility__isnull=True),
                name="catalogue_default_unique_code",
            ),
        ]

    def __str__(self) -> str:
        what = self.procedure_code or f"/{self.description_pattern}/"
        return f"{self.facility or 'default'}: {what} → {self.subspecialty_id and self.subspecialty}"

    def clean(self) -> None:
        if bool(self.procedure_code.strip()) == bool(self.description_pattern.strip()):
            raise ValidationError("Give a procedure code or a description pattern, not both.")
        if self.description_pattern:
            try:
                re.compile(self.description_pattern, re.IGNORECASE)
            except re.error as error:
                raise ValidationError({"description_pattern": f"Not a valid pattern: {error}"}) from error


# --- routing and claims: per-study state and its history --------------------------------------------


# StudyAssignment's fields that imaging.Study carries a copy of, for the worklist (see Study.worklist_*).
_MIRRORED = {"sla_deadline", "claimed_by", "claimed_by_id"}


def study_worklist_mirror(study_ids) -> None:
    """Copy routing's state (whether the study is routed, its deadline, its holder) onto the studies'
    worklist columns, from the assignment rows as they are now in this transaction. Idempotent."""
    from imaging.models import Study

    ids = sorted(set(study_ids))
    if not ids:
        return
    own = StudyAssignment.objects.filter(study_id=OuterRef("pk"))
    Study.objects.filter(pk__in=ids).update(
        worklist_routed=Exists(own),
        worklist_sla_deadline=Subquery(own.values("sla_deadline")[:1]),
        worklist_claimed_by=Subquery(own.values("claimed_by")[:1]),
    )


def worklist_mirror_drift() -> list[int]:
    """Ids of the studies whose worklist columns differ from their routing row (a check for tests and
    operations; there should never be any)."""
    from imaging.models import Study

    routing = {
        study_id: (True, deadline, holder)
        for study_id, deadline, holder in StudyAssignment.objects.values_list(
            "study_id", "sla_deadline", "claimed_by_id"
        )
    }
    copies = Study.objects.values_list(
        "pk", "worklist_routed", "worklist_sla_deadline", "worklist_claimed_by_id"
    ).order_by("pk")
    return [pk for pk, *copy in copies if tuple(copy) != routing.get(pk, (False, None, None))]


class StudyAssignmentQuerySet(models.QuerySet):
    """Every write of the mirrored fields — the services' compare-and-set UPDATEs included — copies
    them onto the study in the same transaction, so the worklist's copy cannot drift."""

    def update(self, **kwargs) -> int:
        if not _MIRRORED & kwargs.keys():
            return super().update(**kwargs)
        with transaction.atomic(using=self.db):
            # Lock the rows first: the ids are then exactly the rows the UPDATE's WHERE (a
            # compare-and-set's included) still matches, even with a concurrent writer.
            ids = list(self.select_for_update(of=("self",)).values_list("study_id", flat=True))
            changed = super().update(**kwargs)
            study_worklist_mirror(ids)
        return changed

    def bulk_create(self, objs, *args, **kwargs):
        with transaction.atomic(using=self.db):
            created = super().bulk_create(objs, *args, **kwargs)
            study_worklist_mirror(o.study_id for o in created)
        return created

    def bulk_update(self, objs, fields, *args, **kwargs) -> int:
        with transaction.atomic(using=self.db):
            changed = super().bulk_update(objs, fields, *args, **kwargs)
            study_worklist_mirror(o.study_id for o in objs)
        return changed


class StudyAssignment(models.Model):
    """Routing's state for one study: when it was routed, by which rule, and who holds it.

    Kept beside ``imaging.Study`` (one row per routed study) so ingest's model stays about images.
    ``claimed_by`` is written only by compare-and-set (``worklist.services.study_claim``)."""

    study = models.OneToOneField("imaging.Study", on_delete=models.CASCADE, related_name="assignment")
    rule = models.ForeignKey(
        CatalogueRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    because = models.CharField(max_length=300, blank=True)
    rvu = models.DecimalField("RVU", max_digits=6, decimal_places=2, null=True, blank=True)
    routed_at = models.DateTimeField(null=True, blank=True)
    # The turnaround clock (DESIGN.md §4): start = images complete, or the order time for a stroke
    # (routed at its first image); deadline = start + the facility contract's target for the class.
    clock_started_at = models.DateTimeField(null=True, blank=True)
    sla_deadline = models.DateTimeField(null=True, blank=True)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    # The holder's last sign of work on the study (claim, viewer, report editor): an abandoned claim
    # is one idle longer than the facility's ``claim_timeout_minutes`` (``worklist.assignment``).
    last_activity_at = models.DateTimeField(null=True, blank=True)

    objects = StudyAssignmentQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(claimed_by__isnull=True, claimed_at__isnull=True)
                | Q(claimed_by__isnull=False, claimed_at__isnull=False),
                name="assignment_claim_has_time",
            ),
        ]
        indexes = [
            models.Index(fields=["claimed_by"], name="assignment_claimed_by_idx"),
            models.Index(fields=["sla_deadline"], name="assignment_deadline_idx"),
        ]

    def __str__(self) -> str:
        return f"study {self.study_id}: {self.claimed_by or 'unclaimed'}"

    def save(self, *args, **kwargs) -> None:
        with transaction.atomic():
            super().save(*args, **kwargs)
            study_worklist_mirror([self.study_id])


@receiver(post_delete, sender=StudyAssignment)
def _assignment_deleted(sender, instance: StudyAssignment, **kwargs) -> None:
    # a routing row removed (by hand, or with its study): the study is no longer on any worklist
    study_worklist_mirror([instance.study_id])


class StudyEventKind(models.TextChoices):
    ROUTED = "routed", "Routed"
    CLAIMED = "claimed", "Claimed"
    RELEASED = "released", "Released"
    REASSIGNED = "reassigned", "Reassigned"
    CANCELLED = "cancelled", "Cancelled"
    ESCALATED = "escalated", "Escalated"
    # push routing (worklist.assignment): given to a reader, or left on the pull worklist and why
    ASSIGNED = "assigned", "Assigned (push)"
    NOT_ASSIGNED = "not_assigned", "Not assigned (push found nobody)"
    TIMED_OUT = "timed_out", "Claim timed out"
    # an AI result (worklist.ai_triage): a triage rule raised the study, or told its holder instead
    AI_RERANKED = "ai_reranked", "Re-ranked by an AI result"
    AI_NOTIFIED = "ai_notified", "AI result told to the holder"
    # operations matched a study waiting for its order to an open order by hand (worklist.order_match)
    ORDER_MATCHED = "order_matched", "Matched to its order by hand"
    # ... and the match undone, back to what the images alone said (worklist.order_match)
    ORDER_UNMATCHED = "order_unmatched", "Order match undone"


class StudyEvent(models.Model):
    """Every change of a study's routing or holder, in order (the issue's "every change is an event")."""

    study = models.ForeignKey("imaging.Study", on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=StudyEventKind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    at = models.DateTimeField()
    detail = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["study", "at"], name="study_event_study_at_idx")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} study {self.study_id} {self.kind}"


# --- AI triage rules (worklist.ai_triage, docs/ai.md) ----------------------------------------------


class AiTriageRule(models.Model):
    """ "ICH positive → STAT, first within STAT": what a positive AI finding does to a study of this
    facility. Rules only ever raise: a class below the study's is ignored, and nothing lowers it."""

    facility = models.ForeignKey("facilities.Facility", on_delete=models.CASCADE, related_name="ai_rules")
    name = models.CharField(max_length=100, help_text='e.g. "ICH positive → STAT"')
    finding_codes = models.JSONField(
        default=list, help_text='Codes of the finding, any scheme: ["274100004", "RID4700"]'
    )
    modality = models.CharField(max_length=16, blank=True, help_text="Only studies with this modality (CT)")
    procedure_pattern = models.CharField(
        max_length=200, blank=True, help_text="Case-insensitive pattern over the procedure text (CTA)"
    )
    min_probability = models.FloatField(null=True, blank=True)
    raise_to = models.CharField(
        max_length=16, choices=PriorityClass.choices, blank=True, help_text="Empty: no class change"
    )
    rank_first = models.BooleanField(default=True, help_text="First within its class")
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["facility_id", "id"]

    def __str__(self) -> str:
        return f"{self.facility}: {self.name}"

    def clean(self) -> None:
        if not isinstance(self.finding_codes, list) or not all(
            isinstance(c, str) for c in self.finding_codes
        ):
            raise ValidationError({"finding_codes": 'A list of codes, e.g. ["274100004"].'})
        if not self.raise_to and not self.rank_first:
            raise ValidationError("A rule must raise the class, rank first, or both.")
        if self.procedure_pattern:
            try:
                re.compile(self.procedure_pattern, re.IGNORECASE)
            except re.error as error:
                raise ValidationError({"procedure_pattern": f"Not a valid pattern: {error}"}) from error


# --- SLA clocks and escalation (worklist.escalation) ----------------------------------------------


class EscalationStep(models.TextChoices):
    """The steps of the clock (DESIGN.md §4), each recorded at most once per study."""

    SLA_WARNING_50 = "sla_50", "50 % of the turnaround window"
    SLA_WARNING_80 = "sla_80", "80 % of the turnaround window"
    SLA_BREACH = "sla_breach", "Turnaround target breached"
    STROKE_ALERT = "stroke_alert", "Code stroke: eligible neuro and ER readers alerted"
    STROKE_READERS = "stroke_readers", "Code stroke unclaimed: every eligible reader and operations"
    STROKE_DIRECTOR = "stroke_director", "Code stroke unclaimed: medical director and operations notified"


class StudyEscalation(models.Model):
    """One step of a study's escalation, written once: the unique (study, step) pair is how several
    sweepers and timers agree who acts — the one whose INSERT succeeded."""

    study = models.ForeignKey("imaging.Study", on_delete=models.CASCADE, related_name="escalations")
    step = models.CharField(max_length=16, choices=EscalationStep.choices)
    due_at = models.DateTimeField()
    at = models.DateTimeField()
    # who was told: {"users": [{"id", "name", "role"}], "groups": [...]}
    notified = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    detail = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)

    class Meta:
        ordering = ["at", "id"]
        constraints = [models.UniqueConstraint(fields=["study", "step"], name="escalation_once_per_step")]
        indexes = [models.Index(fields=["step", "at"], name="escalation_step_at_idx")]

    def __str__(self) -> str:
        return f"study {self.study_id} {self.step} at {self.at:%Y-%m-%d %H:%M:%S}"


class DeliveryChannel(models.TextChoices):
    EMAIL = "email", "E-mail"
    WEBHOOK = "webhook", "Webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class EscalationDelivery(models.Model):
    """A notifier message of an escalation (e-mail to one address, or one webhook POST) and what
    became of it. Written *pending* with the step; sent after commit; never raised, always recorded."""

    escalation = models.ForeignKey(StudyEscalation, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=16, choices=DeliveryChannel.choices)
    recipient = models.CharField(max_length=500)  # an e-mail address or the webhook URL
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    error = models.TextField(blank=True)
    at = models.DateTimeField(null=True, blank=True)  # when it was sent or failed

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.channel} → {self.recipient}: {self.status}"


class StudyTurnaround(models.Model):
    """The milestones of a study's turnaround that no other table keeps (DESIGN.md §6: exam complete →
    final, order → final, final → EMR ACK). Order, first image and images complete are
    ``Order.ordered_at``/``Study.first_received_at``/``Study.completed_at``; routed is
    ``StudyAssignment.routed_at``. Each field is set once (``worklist.tat.study_milestone_record``)."""

    study = models.OneToOneField("imaging.Study", on_delete=models.CASCADE, related_name="turnaround")
    # claimed_at on the assignment resets on release; the TAT needs the first claim
    first_claimed_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)  # the holder first opened the viewer
    prelim_at = models.DateTimeField(null=True, blank=True)
    final_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)  # the EMR acknowledged the final report

    def __str__(self) -> str:
        return f"turnaround of study {self.study_id}"


# --- coverage: repeating shift templates and time off (worklist.coverage) -------------------------


def validate_weekdays(value) -> None:
    if not isinstance(value, list) or not value or any(d not in range(7) for d in value):
        raise ValidationError("Give one or more weekdays as numbers 0 (Monday) to 6 (Sunday).")
    if len(set(value)) != len(value):
        raise ValidationError("Each weekday once.")


class ShiftTemplate(models.Model):
    """A repeating shift, written as a rota is: "Nighthawk, Mon–Fri 23:00–07:00 America/Chicago".

    The times are wall-clock times in ``timezone``; an end at or before the start means the next day.
    ``weekdays`` are the days the shift *starts* on (0 = Monday). ``Shift`` rows stay the single truth
    the eligibility engine reads: a periodic task materialises each occurrence as a Shift (DST-correct:
    23:00–07:00 across the November change is nine hours), skipping the reader's time off."""

    radiologist = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=100, help_text='e.g. "Nighthawk" or "Weekend days"')
    weekdays = models.JSONField(
        default=list,
        validators=[validate_weekdays],
        help_text="Days the shift starts on: 0 Monday … 6 Sunday",
    )
    start_time = models.TimeField(help_text="Local wall-clock time in the template's time zone")
    end_time = models.TimeField(help_text="At or before the start time: the next day")
    timezone = models.CharField(max_length=64, validators=[validate_timezone], default="America/Chicago")
    valid_from = models.DateField()
    valid_until = models.DateField(null=True, blank=True, help_text="Last day a shift may start; empty: open")
    facilities = models.ManyToManyField("facilities.Facility", blank=True, related_name="+")
    subspecialties = models.ManyToManyField("credentialing.Subspecialty", blank=True, related_name="+")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["radiologist_id", "name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(valid_until__isnull=True) | Q(valid_until__gte=F("valid_from")),
                name="shift_template_valid_range",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.radiologist} {self.start_time:%H:%M}–{self.end_time:%H:%M} {self.timezone}"
        )


class TimeOff(models.Model):
    """A reader away from ``starts_at`` to ``ends_at``: the shifts it overlaps are removed, trimmed or
    split (``worklist.coverage.time_off_record``) and templates do not materialise into it."""

    radiologist = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=200)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["starts_at", "id"]
        verbose_name_plural = "time off"
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="time_off_ends_after_start"),
        ]
        indexes = [models.Index(fields=["radiologist", "starts_at"], name="time_off_reader_idx")]

    def __str__(self) -> str:
        return f"{self.radiologist} off {self.starts_at:%Y-%m-%d %H:%M}–{self.ends_at:%Y-%m-%d %H:%M} UTC"


class AlertAcknowledgement(models.Model):
    """Who acknowledged which live alert, and when (issue 14): a banner goes from a page only when its
    user acknowledges it, and operations and the medical director must be able to show they did.
    ``kind`` is the alert: a code-stroke step (``EscalationStep``) or a notice kind (``worklist.live``)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    study = models.ForeignKey(
        "imaging.Study",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="alert_acknowledgements",
    )
    kind = models.CharField(max_length=32)
    at = models.DateTimeField()

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["user", "study"], name="alert_ack_user_study_idx")]

    def __str__(self) -> str:
        return f"{self.user} acknowledged {self.kind} of study {self.study_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class NoticeKind(models.TextChoices):
    """The live channel's notices to one user (issue 14, docs/alerts.md) besides the code strokes."""

    STUDY_ASSIGNED = "study_assigned", "Study assigned to you"
    CLAIM_TAKEN_OVER = "claim_taken_over", "Your study was reassigned"
    PEER_REVIEW = "peer_review", "Peer review for you"
    REVIEW_FEEDBACK = "review_feedback", "Peer-review feedback for you"
    CRITICAL_OVERDUE = "critical_overdue", "Critical result not yet communicated"
    # to operations (worklist.notices.operations_notice_send): one notice per operations user
    INTERFACE_SILENT = "interface_silent", "Interface silent"
    COVERAGE_GAP = "coverage_gap", "Coverage gap within the hour"
    CLAIM_TIMED_OUT = "claim_timed_out", "Claim timed out"
    RESULT_DEAD_LETTERED = "result_dead_lettered", "Result dead-lettered"


class UserNotice(models.Model):
    """A notice addressed to exactly one user, kept so that a page opened later still shows it (the
    resync) and so that only its addressee can acknowledge it (``AlertAcknowledgement`` with kind
    ``notice:<id>``). Workflow metadata only — facility, procedure, accession — never the patient's
    name; for a peer review, nothing that names the original reader (blinding)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=24, choices=NoticeKind.choices)
    study = models.ForeignKey(
        "imaging.Study", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    text = models.CharField(max_length=200, blank=True)
    url = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()
    # What the notice is about, when one thing must be told once per user (a coverage gap found by
    # every sweep until it starts): unique per user, so a second sweep or worker adds nothing.
    about = models.CharField(max_length=80, blank=True, default="")

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["user", "created_at"], name="user_notice_user_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "about"], condition=~models.Q(about=""), name="user_notice_once_per_about"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.user} at {self.created_at:%Y-%m-%d %H:%M:%S}"
