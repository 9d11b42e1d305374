"""What crossed the edge. Every HL7 frame is kept raw before it is acknowledged; every DICOM
association leaves a row; what could not be decoded is quarantined, never dropped."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from facilities.models import Facility


class InboundStatus(models.TextChoices):
    RECEIVED = "received", "Received, not yet applied"
    PROCESSED = "processed", "Applied"
    DUPLICATE = "duplicate", "Duplicate (already applied)"
    REJECTED = "rejected", "Rejected (NAK sent)"
    FAILED = "failed", "Failed while applying"
    # An AI node's ORU^R01 for a study not stored at its facility yet (the node was quicker than the
    # modality): applied when the study's first image is stored there, dead-lettered after
    # READROOM_AI_ORU_WAIT_HOURS (docs/ai.md).
    WAITING = "waiting", "Waiting for its study"
    # Could not be applied (at once for a deterministic error, else after N attempts): set aside so
    # the sender's later messages go on; operations reprocess or discard it, with a reason.
    DEAD = "dead", "Dead letter (set aside; operations may reprocess or discard)"
    DISCARDED = "discarded", "Discarded by operations"


class InboundMessage(models.Model):
    """One HL7 v2 frame as received over MLLP, committed before the ACK goes out."""

    received_at = models.DateTimeField()
    peer = models.CharField(max_length=64, blank=True)  # "ip:port" of the sender
    raw = models.BinaryField()  # exactly the bytes inside the MLLP frame
    size_bytes = models.PositiveIntegerField()
    # no index of its own: inbound_facility_time_idx leads with it (every index is written by the
    # listener before each ACK, docs/ingest.md "ACKs while applying")
    facility = models.ForeignKey(
        Facility,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="inbound_messages",
        db_index=False,
    )
    sending_application = models.CharField(max_length=180, blank=True)  # MSH-3
    sending_facility = models.CharField(max_length=180, blank=True)  # MSH-4
    control_id = models.CharField(max_length=199, blank=True)  # MSH-10
    message_type = models.CharField(max_length=32, blank=True)  # MSH-9, e.g. ORM^O01
    version = models.CharField(max_length=16, blank=True)  # MSH-12
    # sender + MSH-10 for accepted messages only: a resent message is stored again (we keep what
    # we receive) but cannot take this key, so it is never applied twice. Unique by a constraint
    # (Meta), not ``unique=True``: that would add a second, LIKE-pattern index nothing reads.
    dedupe_key = models.CharField(max_length=600, null=True, blank=True)  # noqa: DJ001 (NULL: no key)
    # indexed where set only (Meta): nearly every row has none
    duplicate_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, db_index=False)
    status = models.CharField(max_length=16, choices=InboundStatus.choices, default=InboundStatus.RECEIVED)
    ack_code = models.CharField(max_length=2, blank=True)  # AA/AE/AR/CA/CE/CR; blank: none sent
    error_code = models.CharField(max_length=8, blank=True)  # HL7 table 0357
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    dead_at = models.DateTimeField(null=True, blank=True)
    # An operator's decision on a dead letter (reprocess or discard), who and why
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # indexed where set only (Meta)
    )
    resolution = models.CharField(max_length=300, blank=True)
    # A waiting AI result (status WAITING): the study it names, by Study Instance UID and/or accession
    waiting_study_uid = models.CharField(max_length=64, blank=True)
    waiting_accession = models.CharField(max_length=16, blank=True)

    class Meta:
        indexes = [
            # the drain: oldest unapplied message of a sender first
            models.Index(
                fields=["status", "sending_application", "sending_facility", "id"], name="inbound_drain_idx"
            ),
            models.Index(fields=["facility", "received_at"], name="inbound_facility_time_idx"),
            # a new study's first image looks for the AI ORUs waiting for it
            models.Index(
                fields=["facility"], condition=models.Q(status="waiting"), name="inbound_waiting_study_idx"
            ),
            # the PROTECT / SET_NULL checks when a message or a user is deleted
            models.Index(
                fields=["duplicate_of"],
                condition=models.Q(duplicate_of__isnull=False),
                name="inbound_duplicate_of_idx",
            ),
            models.Index(
                fields=["resolved_by"],
                condition=models.Q(resolved_by__isnull=False),
                name="inbound_resolved_by_idx",
            ),
        ]
        constraints = [models.UniqueConstraint(fields=["dedupe_key"], name="inbound_dedupe_key_uniq")]

    def __str__(self) -> str:
        return f"{self.message_type or '?'} {self.control_id or '(no MSH-10)'} [{self.status}]"


class DicomAssociation(models.Model):
    """One DICOM association (C-STORE/C-ECHO over the SCP, or a DICOMweb STOW request)."""

    class Kind(models.TextChoices):
        DIMSE = "dimse", "DICOM association"
        STOW = "stow", "DICOMweb STOW-RS"

    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.DIMSE)
    facility = models.ForeignKey(
        Facility, null=True, blank=True, on_delete=models.PROTECT, related_name="dicom_associations"
    )
    calling_ae_title = models.CharField(max_length=16, blank=True)
    peer = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    accepted = models.BooleanField(default=True)
    rejection_reason = models.CharField(max_length=200, blank=True)
    instances_stored = models.PositiveIntegerField(default=0)
    instances_failed = models.PositiveIntegerField(default=0)
    echoes = models.PositiveIntegerField(default=0)
    # Which process served it (SCP child or web worker), so an association whose process died
    # (SIGKILL, OOM) can be closed by the supervisor or by the next start on this host; blank for
    # rows from before these were recorded.
    host = models.CharField(max_length=255, blank=True)
    process_id = models.PositiveIntegerField(null=True, blank=True)
    # Why it ended when not by a release or an abort the SCP saw: "process died" (its counts are
    # then the ones written before the death, usually none).
    end_reason = models.CharField(max_length=100, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["facility", "started_at"], name="dicom_assoc_facility_time_idx"),
            # a dead process's open associations (a few rows at most)
            models.Index(
                fields=["host", "process_id"],
                condition=models.Q(ended_at__isnull=True),
                name="dicom_assoc_open_process_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.calling_ae_title or self.kind} {self.started_at:%Y-%m-%d %H:%M:%S}"


class QuarantinedObject(models.Model):
    """A DICOM object that could not be decoded or indexed: kept (encrypted) for an analyst."""

    received_at = models.DateTimeField(db_index=True)
    association = models.ForeignKey(DicomAssociation, null=True, blank=True, on_delete=models.PROTECT)
    facility = models.ForeignKey(Facility, null=True, blank=True, on_delete=models.PROTECT)
    sop_instance_uid = models.CharField(max_length=64, blank=True)  # from the command set, if any
    sop_class_uid = models.CharField(max_length=64, blank=True)
    reason = models.TextField()
    storage_path = models.CharField(max_length=255)
    storage_key_id = models.CharField(max_length=32)
    size_bytes = models.PositiveBigIntegerField(default=0)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # what operations decided (the message browser's DICOM side): released into the archive or
    # discarded — the encrypted copy is kept either way (what was received is kept)
    resolution = models.CharField(max_length=12, blank=True)  # "released" | "discarded" | "linked"
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolution_reason = models.CharField(max_length=300, blank=True)
    # An AI result (SR/SEG/KOS) that came before its study's images: kept here, not refused, and
    # linked when the study arrives at its facility (resolution "linked"; docs/ai.md).
    study_instance_uid = models.CharField(max_length=64, blank=True)
    waiting_for_study = models.BooleanField(default=False)

    class Meta:
        indexes = [
            # a new study's first image looks for the AI results waiting for it
            models.Index(
                fields=["facility", "study_instance_uid"],
                condition=models.Q(waiting_for_study=True, resolved_at__isnull=True),
                name="quarantine_waiting_study_idx",
            )
        ]

    def __str__(self) -> str:
        return f"quarantined {self.sop_instance_uid or self.pk}: {self.reason[:60]}"


class InterfaceKind(models.TextChoices):
    HL7_IN = "hl7_in", "HL7 in"
    DICOM_IN = "dicom_in", "DICOM in"
    HL7_OUT = "hl7_out", "HL7 out"
    HL7_IN_DEAD = "hl7_in_dead", "HL7 in (dead letter)"


class InterfaceAlert(models.Model):
    """An interface in trouble: inbound silent for longer than its facility expects, or (HL7 out)
    a dead-lettered or long-unacknowledged report. One row per episode; ``cleared_at`` is set when
    traffic resumes / the outbox is healthy again."""

    facility = models.ForeignKey(Facility, on_delete=models.CASCADE, related_name="interface_alerts")
    interface = models.CharField(max_length=16, choices=InterfaceKind.choices)
    raised_at = models.DateTimeField()
    last_message_at = models.DateTimeField(null=True, blank=True)
    cleared_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)  # HL7 out: why (dead letter, overdue ACK)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "interface"],
                condition=models.Q(cleared_at__isnull=True),
                name="one_open_alert_per_interface",
            ),
        ]

    def __str__(self) -> str:
        if self.reason:
            return f"{self.facility.code} {self.get_interface_display()}: {self.reason}"
        return f"{self.facility.code} {self.get_interface_display()} silent since {self.last_message_at}"


class OutboundStatus(models.TextChoices):
    QUEUED = "queued", "Queued (waiting to be sent or retried)"
    ACKED = "acked", "Acknowledged"
    DEAD = "dead", "Dead letter (gave up; operations may requeue)"


class OutboundMessage(models.Model):
    """One HL7 message to a facility's EMR (an ORU^R01 report), written in the same transaction as
    what it reports and delivered later by the outbox: in ``sequence`` order per facility, each
    one only after the one before it was acknowledged or given up (docs/delivery.md)."""

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="outbound_messages")
    kind = models.CharField(max_length=32, default="ORU^R01")  # MSH-9
    control_id = models.CharField(max_length=20)  # MSH-10, echoed by the EMR in MSA-2
    payload = models.TextField()  # the ER7 text exactly as sent (segments end in CR), no MLLP framing
    # Per-facility position in the queue, taken under a per-facility lock at enqueue time, so the order
    # is the commit order (an id sequence is not: a later INSERT may commit first).
    sequence = models.PositiveBigIntegerField()
    # What the message reports, as text so this app needs no foreign key into reports: e.g.
    # "report:42:v2". Callers find their messages with ``source``.
    source = models.CharField(max_length=100, db_index=True)
    status = models.CharField(max_length=8, choices=OutboundStatus.choices, default=OutboundStatus.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    ack_code = models.CharField(max_length=2, blank=True)  # MSA-1 of the last ACK received
    ack_raw = models.TextField(blank=True)  # that ACK, as received
    acked_at = models.DateTimeField(null=True, blank=True)
    dead_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    # Start of the current delivery episode (created_at, or the last requeue): the maximum age and
    # the 5-minute "not acknowledged" alarm count from here.
    queued_at = models.DateTimeField()
    requeued_at = models.DateTimeField(null=True, blank=True)
    requeued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["facility", "sequence"], name="unique_outbound_sequence"),
            models.UniqueConstraint(fields=["facility", "control_id"], name="unique_outbound_control_id"),
        ]
        indexes = [
            # the head of each facility's line: oldest queued message first
            models.Index(fields=["facility", "status", "sequence"], name="outbound_head_idx"),
            models.Index(fields=["status", "next_attempt_at"], name="outbound_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.control_id} #{self.sequence} [{self.status}]"


class InterfaceActionKind(models.TextChoices):
    RESEND = "resend", "Resent (outbound, new control ID)"
    REPROCESS = "reprocess", "Reprocessed (inbound)"


class InterfaceAction(models.Model):
    """What operations did to a message from the message browser, by whom and why (the reason is
    required): the record an interface analyst is asked for when a report went twice."""

    kind = models.CharField(max_length=12, choices=InterfaceActionKind.choices)
    at = models.DateTimeField()
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=300)
    inbound = models.ForeignKey(
        InboundMessage, null=True, blank=True, on_delete=models.PROTECT, related_name="actions"
    )
    outbound = models.ForeignKey(
        OutboundMessage, null=True, blank=True, on_delete=models.PROTECT, related_name="actions"
    )
    # the copy a resend queued (its own control ID), so either message leads to the other
    resent_as = models.OneToOneField(
        OutboundMessage, null=True, blank=True, on_delete=models.PROTECT, related_name="resent_from"
    )

    def __str__(self) -> str:
        return f"{self.kind} by {self.by} at {self.at:%Y-%m-%d %H:%M}"
