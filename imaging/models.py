"""Patients, orders and the images that answer them.

Identity rules enforced by the database (not only by forms), because ingest is concurrent:
a Study Instance UID and a SOP Instance UID are globally unique (DICOM PS3.5 §9), an accession
number is unique within its facility, and an MRN is unique within its assigning authority at a
facility (PID-3.1 + PID-3.4)."""

from __future__ import annotations

from datetime import date

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower

from facilities.models import Facility, PriorityClass

dicom_uid_field = dict(max_length=64)  # UI value representation: at most 64 characters


class Sex(models.TextChoices):
    """HL7 table 0001 administrative sex."""

    FEMALE = "F", "Female"
    MALE = "M", "Male"
    OTHER = "O", "Other"
    UNKNOWN = "U", "Unknown"
    AMBIGUOUS = "A", "Ambiguous"
    NOT_APPLICABLE = "N", "Not applicable"


def age_on(birth_date: date | None, day: date) -> int | None:
    """Age in whole years on ``day`` (None without a birth date); lists that load plain rows ask here."""
    if birth_date is None:
        return None
    before_birthday = (day.month, day.day) < (birth_date.month, birth_date.day)
    return day.year - birth_date.year - before_birthday


class Patient(models.Model):
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="patients")
    mrn = models.CharField("MRN", max_length=64)
    # The identity domain (docs/orders.md): PID-3.4 / (0010,0021) mapped through the facility's
    # configuration (``Facility.patient_authority``), so images and orders land on one patient.
    assigning_authority = models.CharField(max_length=64)
    family_name = models.CharField(max_length=100, blank=True)
    given_name = models.CharField(max_length=100, blank=True)
    middle_name = models.CharField(max_length=100, blank=True)
    birth_date = models.DateField(null=True, blank=True)
    sex = models.CharField(max_length=1, choices=Sex.choices, default=Sex.UNKNOWN)
    # Set by an ADT^A40 merge: this record was merged into another and is never used again.
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="merged_from"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "assigning_authority", "mrn"],
                name="unique_mrn_per_assigning_authority",
            ),
        ]
        indexes = [
            models.Index(Lower("family_name"), "given_name", name="patient_name_idx"),
            # identity lookups: every name of the facility's MRN domain (imaging.services._holders)
            models.Index(fields=["facility", "mrn"], name="patient_mrn_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} (MRN {self.mrn})"

    @property
    def display_name(self) -> str:
        given = " ".join(p for p in (self.given_name, self.middle_name) if p)
        return f"{self.family_name.upper()}, {given}".strip(", ") or "(no name)"

    def age_on(self, day: date) -> int | None:
        return age_on(self.birth_date, day)

    def get_additional_data(self) -> dict:
        return {"patient_id": self.pk, "facility_id": self.facility_id}


class OrderStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Exam completed"
    CANCELLED = "cancelled", "Cancelled"
    DISCONTINUED = "discontinued", "Discontinued"


class Order(models.Model):
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="orders")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="orders")
    placer_order_number = models.CharField(max_length=64, blank=True)  # ORC-2 / OBR-2
    filler_order_number = models.CharField(max_length=64, blank=True)  # ORC-3 / OBR-3
    accession_number = models.CharField(max_length=16)  # DICOM SH: at most 16 characters
    procedure_code = models.CharField(max_length=64)  # OBR-4.1
    procedure_text = models.CharField(max_length=200, blank=True)  # OBR-4.2
    procedure_coding_system = models.CharField(max_length=32, blank=True)  # OBR-4.3, e.g. C4 = CPT-4
    priority = models.CharField(max_length=16, choices=PriorityClass.choices, default=PriorityClass.ROUTINE)
    reason = models.TextField(blank=True)  # OBR-31 reason for study / OBR-13
    ordering_provider_id = models.CharField(max_length=64, blank=True)  # ORC-12.1 / OBR-16.1
    ordering_provider_name = models.CharField(max_length=200, blank=True)
    # The XCN as the hospital sent it, by component (id, family, given, middle, suffix, prefix,
    # degree, authority): the report's ORU echoes the ordering provider the way the EMR knows them.
    ordering_provider_xcn = models.JSONField(default=dict, blank=True)
    # The whole order as the hospital sent it (docs/orders.md), each field kept by HL7's update rule.
    priority_code = models.CharField(max_length=16, blank=True)  # TQ1-9 / ORC-7.6 / OBR-5 as sent
    # OBR-31, every repetition: [{"code", "text", "system"}]; ``reason`` is their texts, for lists
    reasons_for_study = models.JSONField(default=list, blank=True)
    clinical_information = models.TextField(blank=True)  # OBR-13 relevant clinical information
    notes = models.JSONField(default=list, blank=True)  # NTE-3 of the order group, one string each
    copies_to = models.JSONField(default=list, blank=True)  # OBR-28, each XCN by component
    placer_order_issuer = models.CharField(max_length=64, blank=True)  # ORC-2.2 namespace
    filler_order_issuer = models.CharField(max_length=64, blank=True)  # ORC-3.2 namespace
    accession_issuer = models.CharField(max_length=64, blank=True)  # IPC-1.2
    requested_procedure_id = models.CharField(max_length=16, blank=True)  # IPC-2 / OBR-19
    scheduled_procedure_step_id = models.CharField(max_length=16, blank=True)  # IPC-4 / OBR-20
    study_instance_uid = models.CharField(blank=True, db_index=True, **dicom_uid_field)  # IPC-3 / ZDS-1
    modality = models.CharField(max_length=16, blank=True)  # IPC-5 / OBR-24
    patient_class = models.CharField(max_length=8, blank=True)  # PV1-2 (table 0004)
    patient_location = models.CharField(max_length=200, blank=True)  # PV1-3 as sent
    visit_number = models.CharField(max_length=64, blank=True)  # PV1-19.1
    visit_number_authority = models.CharField(max_length=64, blank=True)  # PV1-19.4
    status = models.CharField(max_length=16, choices=OrderStatus.choices, default=OrderStatus.SCHEDULED)
    ordered_at = models.DateTimeField(null=True, blank=True)  # ORC-9 / MSH-7
    scheduled_at = models.DateTimeField(null=True, blank=True)  # TQ1-7 / ORC-7.4
    cancelled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "accession_number"], name="unique_order_accession_per_facility"
            ),
        ]
        indexes = [models.Index(fields=["facility", "placer_order_number"], name="order_placer_idx")]

    def __str__(self) -> str:
        return f"{self.accession_number} {self.procedure_text or self.procedure_code}"

    def get_additional_data(self) -> dict:
        return {"patient_id": self.patient_id, "facility_id": self.facility_id}

    @property
    def clinical_history(self) -> str:
        """Everything the hospital said about why: every OBR-31 (with its code), OBR-13, the NTE
        notes — in full, for the reader (worklist detail, viewer header, the report's merge field)."""
        return clinical_history_text(
            self.reasons_for_study, self.reason, self.clinical_information, self.notes
        )


def clinical_history_text(reasons_for_study, reason: str, clinical_information: str, notes) -> str:
    """``Order.clinical_history`` over the order's columns (lists that load plain rows ask here)."""
    parts = []
    reasons = [
        f"{r.get('text') or r.get('code')}" + (f" ({r['code']})" if r.get("code") and r.get("text") else "")
        for r in reasons_for_study or []
    ]
    if reasons:
        parts.append("; ".join(reasons))
    elif reason:
        parts.append(reason)
    if clinical_information and clinical_information != reason:
        parts.append(clinical_information)
    parts += [n for n in notes or [] if n]
    # the hospital's words verbatim (never trim their punctuation): a full stop only between parts
    joined = ""
    for part in (p.strip() for p in parts):
        if part:
            joined += ("" if not joined else " " if joined.endswith((".", "!", "?")) else ". ") + part
    return joined


class OrderMatch(models.TextChoices):
    """How a study was matched to its order (docs/orders.md)."""

    NONE = "", "Not matched"
    ACCESSION = "accession", "Accession number and issuer"
    STUDY_UID = "study_uid", "The order's Study Instance UID"
    FALLBACK = "fallback", "The facility's fallback (filler or placer number)"
    # Operations matched it by hand from the ops worklist (worklist.order_match): who, when and why
    # are the study's ``order_matched`` event and its audit row.
    MANUAL = "manual", "Matched by operations"


class StudyStatus(models.TextChoices):
    RECEIVING = "receiving", "Receiving images"
    COMPLETE = "complete", "Images complete"
    CANCELLED = "cancelled", "Cancelled"
    # The final report is signed (reports.services.report_sign): the study leaves the worklist.
    FINAL = "final", "Report final"


# Studies still to be read: what worklists list. Named positively so that a closed status added later
# (a final read) leaves the worklist, and the open-study index below, without another change.
OPEN_STUDY_STATUSES = (StudyStatus.RECEIVING, StudyStatus.COMPLETE)

# Reading order of the priority classes, most urgent first (as PriorityClass is declared).
PRIORITY_RANK = models.Case(
    *(models.When(priority=p.value, then=models.Value(rank)) for rank, p in enumerate(PriorityClass)),
    default=models.Value(len(PriorityClass)),
    output_field=models.IntegerField(),
)
# Study's copy of routing's state (see Study.worklist_*).
ROUTING_COPY = ("worklist_routed", "worklist_sla_deadline", "worklist_claimed_by")
# What a worklist lists: routed, and not read yet. The worklist indexes below are partial on it.
ON_WORKLIST = models.Q(status__in=OPEN_STUDY_STATUSES, worklist_routed=True)


class PriorState(models.TextChoices):
    NOT_PRIOR = "", "Not a fetched prior"
    RETRIEVING = "retrieving", "Prior being retrieved"
    RETRIEVED = "retrieved", "Prior retrieved"


class Study(models.Model):
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="studies")
    # Images may arrive before their order: patient and order are matched when the order comes.
    patient = models.ForeignKey(
        Patient, null=True, blank=True, on_delete=models.PROTECT, related_name="studies"
    )
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.PROTECT, related_name="studies")
    order_match = models.CharField(max_length=16, choices=OrderMatch.choices, default="", blank=True)
    study_instance_uid = models.CharField(unique=True, **dicom_uid_field)
    accession_number = models.CharField(max_length=16, blank=True)
    # The images' Issuer of Accession Number (0008,0051), or the order's IPC-1.2 when the study took
    # the order's accession: an order arriving later matches by accession only when the issuers agree.
    accession_issuer = models.CharField(max_length=64, blank=True, default="", db_default="")
    modalities = models.CharField(max_length=64, blank=True)  # ModalitiesInStudy, backslash-joined
    description = models.CharField(max_length=64, blank=True)  # StudyDescription (LO)
    body_part = models.CharField(max_length=16, blank=True)  # BodyPartExamined (CS)
    study_datetime = models.DateTimeField(null=True, blank=True)
    # QIDO-RS required matching keys (PS3.18 Table 10.6.1-5) the header carries: StudyID (SH) and
    # ReferringPhysicianName (PN, FAMILY^GIVEN^MIDDLE as the modality wrote it). db_default: bulk
    # SQL inserts (bench/worklist) name their columns.
    dicom_study_id = models.CharField("Study ID", max_length=16, blank=True, db_default="")
    referring_physician_name = models.CharField(max_length=200, blank=True, db_default="")
    number_of_series = models.PositiveIntegerField(default=0)
    number_of_instances = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=StudyStatus.choices, default=StudyStatus.RECEIVING)
    # Routing facts: priority from the order (or DICOM/facility rules), stroke detected at ingest,
    # subspecialty from the procedure catalogue. Eligibility and the worklist read them here.
    priority = models.CharField(max_length=16, choices=PriorityClass.choices, default=PriorityClass.ROUTINE)
    is_stroke = models.BooleanField(default=False)
    subspecialty = models.ForeignKey(
        "credentialing.Subspecialty", null=True, blank=True, on_delete=models.PROTECT, related_name="studies"
    )
    first_received_at = models.DateTimeField(null=True, blank=True)
    last_received_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The worklist's filter and sort key in one row (bench/worklist): a copy of routing's state
    # (worklist.StudyAssignment: exists, sla_deadline, claimed_by) written by StudyAssignment's own
    # save/update in the same statement's transaction (``worklist.models.study_worklist_mirror``), never
    # by hand. With them here a reader's first page is a top-N scan of one index instead of joining
    # and sorting every eligible open study.
    worklist_routed = models.BooleanField(default=False, editable=False)
    worklist_sla_deadline = models.DateTimeField(null=True, blank=True, editable=False)
    worklist_claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        editable=False,
        db_index=False,  # study_worklist_held_idx below: open studies only
    )
    priority_rank = models.GeneratedField(
        expression=PRIORITY_RANK, output_field=models.IntegerField(), db_persist=True
    )
    # A prior fetched from the hospital's PACS for comparison (docs/priors.md): never routed, never on a
    # worklist. "retrieving" while its instances arrive — hidden from every reader until "retrieved", so
    # nothing half-stored is shown; a retrieval that finally fails discards what it had indexed.
    prior_state = models.CharField(max_length=10, choices=PriorState.choices, blank=True, default="")
    # Within its class: 0 = moved first by an AI triage rule (worklist.ai_triage), 1 = everything else.
    # Part of the reading order, after the class and before the deadline (docs/ai.md).
    triage_rank = models.PositiveSmallIntegerField(default=1, editable=False)
    # The worklist's and reading screen's AI badge, written with each AI result (imaging.ai): the
    # positive findings and the algorithm, e.g. "Cerebral hemorrhage p=0.93 · Aidoc BriefCase ICH 2.1".
    # Kept on the row so a page of 100 studies shows badges without a query per row.
    ai_badge = models.CharField(max_length=200, blank=True, editable=False)

    class Meta:
        verbose_name_plural = "studies"
        constraints = [
            # An accession identifies one requested procedure at a facility; a study that came
            # without one (blank) is matched later and must not collide with other blanks.
            models.UniqueConstraint(
                fields=["facility", "accession_number"],
                condition=~models.Q(accession_number=""),
                name="unique_study_accession_per_facility",
            ),
        ]
        indexes = [
            # The completion sweep looks only at studies still receiving images. Not on
            # last_received_at: every instance moves it, and an indexed column would make each of a
            # series' 300 counter updates a non-HOT update writing all of the study's indexes
            # (bench/ingest).
            models.Index(
                fields=["facility"],
                condition=models.Q(status=StudyStatus.RECEIVING),
                name="study_receiving_idx",
            ),
            # Worklists ask per facility (and subspecialty) among the open studies only: a few
            # thousand index entries however large the archive of read studies grows. With the id
            # included, "which of my claims are still open" is read from the index alone.
            models.Index(
                fields=["facility", "subspecialty"],
                include=["id"],
                condition=models.Q(status__in=OPEN_STUDY_STATUSES),
                name="study_open_facility_idx",
            ),
            # The worklist's reading order (priority class, deadline, id) over what is on worklists:
            # page 1 walks it and stops after 50 rows that pass the reader's eligibility filter.
            models.Index(
                fields=["priority_rank", "triage_rank", "worklist_sla_deadline", "id"],
                condition=ON_WORKLIST,
                name="study_worklist_order_idx",
            ),
            # A reader's list (its count, and the sort key of every row) is read from this index
            # alone: the facility, every column the eligibility filter and the holder test look at,
            # and the reading order's columns.
            models.Index(
                fields=["facility", "subspecialty", "worklist_claimed_by"],
                include=["modalities", "priority_rank", "triage_rank", "worklist_sla_deadline", "id"],
                condition=ON_WORKLIST,
                name="study_worklist_facility_idx",
            ),
            # "the studies I hold": a handful of entries per reader. Held rows only: over every open
            # study the planner took it for "unclaimed" (worklist_claimed_by IS NULL) too, misjudging
            # that as rare, and walked every unclaimed open study of every facility for a reader's
            # page (docs/worklist-fanout.md, third and fourth passes).
            models.Index(
                fields=["worklist_claimed_by"],
                condition=ON_WORKLIST & models.Q(worklist_claimed_by__isnull=False),
                name="study_worklist_held_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.accession_number or self.study_instance_uid} {self.description}".strip()

    def save(self, *args, **kwargs) -> None:
        # The worklist columns belong to routing (copied by worklist.StudyAssignment's writes): a study
        # loaded before a claim and saved after it must not write the old holder back.
        if kwargs.get("update_fields") is None and not self._state.adding and not kwargs.get("force_insert"):
            deferred = self.get_deferred_fields()
            kwargs["update_fields"] = [
                f.attname
                for f in self._meta.concrete_fields
                if not (f.primary_key or f.generated or f.name in ROUTING_COPY or f.attname in deferred)
            ]
        super().save(*args, **kwargs)

    def get_additional_data(self) -> dict:
        return {"patient_id": self.patient_id, "facility_id": self.facility_id}


class Series(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    series_instance_uid = models.CharField(unique=True, **dicom_uid_field)
    series_number = models.IntegerField(null=True, blank=True)
    modality = models.CharField(max_length=16, blank=True)
    description = models.CharField(max_length=64, blank=True)
    body_part = models.CharField(max_length=16, blank=True)
    number_of_instances = models.PositiveIntegerField(default=0)
    # The reader who made this series in the viewer (measurement SRs, key objects: docs/viewer.md);
    # empty for the modality's images. Such a series is kept with the study but is not its images.
    made_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    first_received_at = models.DateTimeField(null=True, blank=True)
    last_received_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "series"
        ordering = ["series_number", "id"]

    def __str__(self) -> str:
        return f"{self.modality} #{self.series_number} {self.description}".strip()


class Instance(models.Model):
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    sop_instance_uid = models.CharField(unique=True, **dicom_uid_field)
    sop_class_uid = models.CharField(**dicom_uid_field)
    transfer_syntax_uid = models.CharField(blank=True, **dicom_uid_field)
    instance_number = models.IntegerField(null=True, blank=True)
    # Where the encrypted Part 10 bytes live, and which key encrypted them (keys rotate).
    storage_path = models.CharField(max_length=255)
    storage_key_id = models.CharField(max_length=32)
    size_bytes = models.PositiveBigIntegerField(default=0)
    received_at = models.DateTimeField()
    # Why this accepted image cannot be displayed, found when it was first rendered or decoded
    # (a later frame broken, an image description that does not hold): shown on the study and to
    # operations, never silently unreadable (docs/viewer.md). Empty: no problem seen. A database
    # default too: the ingest path inserts rows with raw SQL (_INSTANCE_INSERT_COUNTED).
    display_problem = models.CharField(max_length=300, blank=True, default="", db_default="")
    display_problem_at = models.DateTimeField(null=True, blank=True)
    # When the background decode check (first and last frame, after indexing) ran on the file now
    # stored; None: not yet, so a redelivered task does not decode again (docs/viewer.md).
    display_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["instance_number", "id"]
        indexes = [
            # the lost-check sweep reads only the few images not yet checked, never the archive
            models.Index(
                fields=["received_at"],
                name="instance_unchecked_idx",
                condition=models.Q(display_checked_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return self.sop_instance_uid


class RetrievalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    RETRIEVED = "retrieved", "Retrieved"
    FAILED = "failed", "Failed"  # retried until the attempts run out
    SKIPPED = "skipped", "Not relevant"
    DEFERRED = "deferred", "Waiting for the pull hours"  # asked when the source's hours open


class PriorRetrieval(models.Model):
    """One question to one prior source about one patient, asked when an order (or a first image
    without one) arrived: what was found, what was fetched, and why not (the reading screen shows it)."""

    facility = models.ForeignKey(Facility, on_delete=models.CASCADE, related_name="prior_retrievals")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="prior_retrievals")
    # the study being read (when its images came first) or the order it will answer
    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    source_name = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=RetrievalStatus.choices, default=RetrievalStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # the sweep's "questions never asked" (imaging.priors.priors_unasked_due): a handful of rows
            models.Index(
                fields=["updated_at"],
                condition=models.Q(status=RetrievalStatus.PENDING),
                name="prior_retrieval_pending_idx",
            )
        ]

    def __str__(self) -> str:
        return f"priors from {self.source_name}: {self.status}"

    def get_additional_data(self) -> dict:
        return {"patient_id": self.patient_id, "facility_id": self.facility_id}


class PriorFetch(models.Model):
    """One prior study chosen from a source's C-FIND answer, and how its retrieval went."""

    retrieval = models.ForeignKey(PriorRetrieval, on_delete=models.CASCADE, related_name="fetches")
    study_instance_uid = models.CharField(**dicom_uid_field)
    study_date = models.CharField(max_length=8, blank=True)
    modalities = models.CharField(max_length=64, blank=True)
    description = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=10, choices=RetrievalStatus.choices, default=RetrievalStatus.PENDING)
    instances_expected = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=200, blank=True)
    # when the retrieval running it claimed it (RUNNING), and its holder's last heartbeat while it
    # retrieves: a claim silent longer than READROOM_PRIOR_CLAIM_MAX_SECONDS is a dead worker's,
    # taken over by the next plan (docs/priors.md)
    claimed_at = models.DateTimeField(null=True, blank=True)
    alive_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["retrieval", "study_instance_uid"], name="unique_fetch_per_retrieval"
            )
        ]

    def __str__(self) -> str:
        return f"prior {self.study_instance_uid}: {self.status}"


class AiResult(models.Model):
    """One result of a triage algorithm about one study (docs/ai.md): where it came from and which
    algorithm said it — manufacturer, model, version, from the SR's device observer / the ORU's OBX."""

    class Source(models.TextChoices):
        SR = "sr", "DICOM SR"
        SEG = "seg", "DICOM SEG"
        KOS = "kos", "DICOM key object selection"
        HL7 = "hl7", "HL7 ORU"

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="ai_results")
    source = models.CharField(max_length=8, choices=Source.choices)
    sop_instance_uid = models.CharField(max_length=200, blank=True)
    manufacturer = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=64, blank=True)
    version = models.CharField(max_length=64, blank=True)
    referenced_sop_instance_uids = models.JSONField(default=list, blank=True)
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["received_at", "id"]
        indexes = [models.Index(fields=["study", "received_at"], name="ai_result_study_idx")]

    def __str__(self) -> str:
        return f"{self.algorithm} on study {self.study_id}"

    @property
    def algorithm(self) -> str:
        return " ".join(p for p in (self.manufacturer, self.model, self.version) if p) or "AI"

    def get_additional_data(self) -> dict:
        return {"facility_id": self.facility_id}


class AiFinding(models.Model):
    result = models.ForeignKey(AiResult, on_delete=models.CASCADE, related_name="findings")
    code_value = models.CharField(max_length=64)
    coding_scheme = models.CharField(max_length=32, blank=True)  # SCT, RADLEX, …
    meaning = models.CharField(max_length=200, blank=True)
    present = models.BooleanField()
    probability = models.FloatField(null=True, blank=True)
    referenced_sop_instance_uids = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.meaning or self.code_value} {'positive' if self.present else 'negative'}"

    @property
    def label(self) -> str:
        """ "ICH positive (p=0.93)": what a badge and a "because" say about the finding."""
        p = f" (p={self.probability:.2f})" if self.probability is not None else ""
        return f"{self.meaning or self.code_value} {'positive' if self.present else 'negative'}{p}"


class HistoricalReport(models.Model):
    """One version of a report the hospital itself made, sent by its RIS/EMR as an ORU^R01 of its
    history (docs/priors.md, "Historical reports from the RIS"). Read-only: shown beside the editor
    as a prior report of the patient. The text lives in the encrypted store like a PACS report
    object (``storage_path``), read on demand. A corrected result (C) is a new row; the one it
    replaces keeps its text and gets ``superseded_at`` — nothing is changed in place."""

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="historical_reports")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="historical_reports")
    # the study here with that accession, if ReadRoom holds it (a retrieved prior, or none at all)
    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    accession_number = models.CharField(max_length=16)  # OBR-18, else OBR-3
    # the prior's Study Instance UID when the RIS sent it (ZDS-1.1 / OBX 110180): the late link's key
    study_instance_uid = models.CharField(max_length=64, blank=True)
    procedure_code = models.CharField(max_length=64, blank=True)  # OBR-4.1
    procedure_text = models.CharField(max_length=200, blank=True)  # OBR-4.2
    observed_at = models.DateTimeField(null=True, blank=True)  # OBR-7: when the exam was done
    reported_at = models.DateTimeField(null=True, blank=True)  # OBR-22: the result's status change
    # OBR-25: F final, C corrected, P preliminary; from FHIR also A amended (DiagnosticReport.status)
    result_status = models.CharField(max_length=1)
    radiologist_name = models.CharField(max_length=200, blank=True)  # OBR-32 / OBX-16
    source = models.CharField(max_length=200)  # MSH-3^MSH-4 of the sender, or the FHIR source's name
    control_id = models.CharField(max_length=199)  # MSH-10, or DiagnosticReport/<id>/_history/<version>
    # a report asked of a FHIR source (docs/priors.md "FHIR DiagnosticReport sources"): its id there
    # and its version (meta.versionId, else meta.lastUpdated); blank for the RIS's ORUs. A re-fetch
    # of the same id and version stores nothing.
    fhir_id = models.CharField(max_length=64, blank=True)
    fhir_version = models.CharField(max_length=64, blank=True)
    # a FHIR report whose presentedForm url could not be fetched: the stored text says so; the
    # row is replaced in place (not versioned) once a later question fetches the text
    text_pending = models.BooleanField(default=False)
    storage_path = models.CharField(max_length=255)
    storage_key_id = models.CharField(max_length=32)
    text_sha256 = models.CharField(max_length=64)
    received_at = models.DateTimeField()
    supersedes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by"
    )
    superseded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # one shown version per accession at a facility (of the RIS's history); the earlier
            # ones are kept beside it
            models.UniqueConstraint(
                fields=["facility", "accession_number"],
                condition=models.Q(superseded_at__isnull=True, fhir_id=""),
                name="one_current_historical_report",
            ),
            # a FHIR source's report: one shown version per DiagnosticReport id (an accession is
            # optional there, and one exam may have several reports)
            models.UniqueConstraint(
                fields=["facility", "source", "fhir_id"],
                condition=models.Q(superseded_at__isnull=True) & ~models.Q(fhir_id=""),
                name="one_current_fhir_report",
            ),
        ]
        indexes = [
            models.Index(fields=["patient", "superseded_at"], name="historical_report_patient_idx"),
            # the late link: a facility's reports still waiting for their study
            models.Index(
                fields=["facility", "study_instance_uid"],
                condition=models.Q(study__isnull=True),
                name="historical_report_unlinked_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"historical report {self.accession_number} ({self.result_status}) from {self.source}"

    def get_additional_data(self) -> dict:
        return {"patient_id": self.patient_id, "facility_id": self.facility_id}
