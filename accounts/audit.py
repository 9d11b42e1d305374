"""The audit trail: django-auditlog rows for every change to clinical and credentialing records and
for every read of patient data, with who, when, from which address and which object.

Rows are append-only: migration accounts/0003 installs database triggers that refuse UPDATE (and,
on PostgreSQL, DELETE) of ``auditlog_logentry``; the admin shows them read-only.

Each audited model's ``get_additional_data()`` puts ``patient_id`` and ``facility`` into the row,
so the audit page can search by patient without joining every table."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from enum import StrEnum

from auditlog.cid import get_cid
from auditlog.context import auditlog_disabled, auditlog_value, set_extra_data
from auditlog.diff import model_instance_diff
from auditlog.models import LogEntry, LogEntryManager
from auditlog.registry import auditlog
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models.signals import pre_save
from django.utils.encoding import smart_str

from accounts.models import User


def reverse_relations(model) -> list[str]:
    """Other models' relations *to* this one. django-auditlog 3.x counts them as fields and writes
    e.g. "studies: imaging.Study.None" into every row; they are not the row's data."""
    return [f.name for f in model._meta.get_fields() if f.auto_created and not f.concrete]


def audit_register(model, *, exclude_fields: tuple[str, ...] = (), **options) -> None:
    """Register a model with the audit log — the one way every app does it."""
    auditlog.register(model, exclude_fields=[*exclude_fields, *reverse_relations(model)], **options)


audit_register(User, exclude_fields=("password", "last_login"), m2m_fields={"groups"})


def audit_entry_write(
    subject: models.Model | type[models.Model],
    *,
    action: int,
    text: str | None = None,
    changes: Mapping[str, Sequence[str]] | None = None,
    actor: User | None = None,
    extra: Mapping[str, object] | None = None,
) -> LogEntry:
    """Write one audit row that no model save produces — a decision, a refusal, a search — the one
    way every app does it, so such rows look like auditlog's own: the object (``subject``, or a
    model class for a row without an object), the request's correlation id, the actor (``actor``,
    else the one auditlog's context fills in from the request) and ``changes`` as ``{field: [old,
    new]}``. ``extra`` goes into ``additional_data`` after the object's ``get_additional_data()``
    (patient and facility), so the audit page finds the row by patient as it finds the others."""
    instance = None if isinstance(subject, type) else subject
    model = subject if instance is None else type(instance)
    additional = {}
    if hasattr(instance, "get_additional_data"):
        additional = dict(instance.get_additional_data() or {})
    additional.update(extra or {})
    pk = None if instance is None else instance.pk
    return LogEntry.objects.create(
        content_type=ContentType.objects.get_for_model(model),
        object_pk="" if pk is None else str(pk),
        object_id=pk if isinstance(pk, int) else None,
        object_repr=(text if text is not None else str(instance))[:200],
        action=action,
        changes={name: list(change) for name, change in (changes or {}).items()},
        actor=actor,
        cid=get_cid(),
        additional_data=additional or None,
    )


def audit_bulk_created(
    instances: Sequence[models.Model], *, m2m_added: Mapping[str, Sequence[models.Model]] | None = None
) -> list[LogEntry]:
    """The audit rows django-auditlog writes when each of ``instances`` is saved new and then given
    ``m2m_added`` (field name → the related objects, the same for every instance), in one INSERT —
    for code that ``bulk_create``s, which sends no save or m2m signals. Row for row what the signals
    write one at a time (a CREATE row with the field values, then an UPDATE row per non-empty m2m
    field, "add" with the objects' names), with the request's actor, address and correlation id: the
    trail is the same, only written faster (docs/decisions.md, "Audit log")."""
    if not instances or auditlog_disabled.get():
        return []
    model = type(instances[0])
    if not auditlog.contains(model):
        return []
    content_type = ContentType.objects.get_for_model(model)
    cid = get_cid()
    added = {
        name: [smart_str(obj) for obj in related] for name, related in (m2m_added or {}).items() if related
    }
    entries = []
    for instance in instances:
        common = {
            "content_type": content_type,
            "object_pk": instance.pk,
            "object_id": instance.pk if isinstance(instance.pk, int) else None,
            "object_repr": smart_str(instance),
            "additional_data": getattr(instance, "get_additional_data", lambda: None)(),
            "cid": cid,
        }
        changes = model_instance_diff(
            None, instance, use_json_for_changes=settings.AUDITLOG_STORE_JSON_CHANGES
        )
        serialized = LogEntry.objects._get_serialized_data_or_none(instance)
        entries.append(
            LogEntry(**common, action=LogEntry.Action.CREATE, changes=changes, serialized_data=serialized)
        )
        for name, objects in added.items():
            change = {name: {"type": "m2m", "operation": "add", "objects": objects}}
            entries.append(LogEntry(**common, action=LogEntry.Action.UPDATE, changes=change))
    for entry in entries:
        # what LogEntry.save() sends: auditlog's context receiver fills in the actor and address
        pre_save.send(
            sender=LogEntry, instance=entry, raw=False, using=LogEntry.objects.db, update_fields=None
        )
    return LogEntry.objects.bulk_create(entries)


# --- audit rows written per batch (bench/hl7 --apply) ----------------------------------------------

_deferred_rows: ContextVar[list[LogEntry] | None] = ContextVar("audit_rows_deferred", default=None)
_log_entry_create = LogEntryManager.create


def _log_entry_create_or_defer(self, **kwargs) -> LogEntry:
    """``LogEntry.objects.create`` — what auditlog's receivers (``LogEntryManager.log_create``) and
    ``audit_entry_write`` call for every row — as before, except inside ``AuditRowsDeferred.collecting``:
    there the row is built and given its actor, address and time now (the ``pre_save`` its save would
    send: auditlog's context receiver), and INSERTed later with the others, in the same transaction.
    tests/test_audit.py fails if auditlog stops writing through here."""
    rows = _deferred_rows.get()
    if rows is None or self.model is not LogEntry:
        return _log_entry_create(self, **kwargs)
    entry = self.model(**kwargs)
    pre_save.send(sender=LogEntry, instance=entry, raw=False, using=self.db, update_fields=None)
    rows.append(entry)
    return entry


LogEntryManager.create = _log_entry_create_or_defer


class AuditRowsDeferred:
    """The audit rows of many changes in one INSERT (``write``) instead of one each — for a batch
    that applies many messages in one transaction (interfaces.hl7.inbound). Row for row what
    auditlog writes at each save (its own diff and serialisation, the actor, address and correlation
    id, the time of the change), in the order of the changes; only the INSERT waits.

    ``collecting()`` must enclose a savepoint (``transaction.atomic()``) exactly: its rows are kept
    when the block ends cleanly and dropped when it raises — the changes they record were rolled
    back with the savepoint, so their rows go too. (An error caught *inside* the block after an
    inner savepoint rolled back would leave that savepoint's rows: not for such code.) Until
    ``write`` the rows are not in the database: code inside that reads the audit trail back (none
    on the order path) would not see them."""

    def __init__(self) -> None:
        self.rows: list[LogEntry] = []

    @contextmanager
    def collecting(self) -> Iterator[None]:
        block: list[LogEntry] = []
        token = _deferred_rows.set(block)
        try:
            yield
        finally:
            _deferred_rows.reset(token)
        self.rows.extend(block)  # reached only when the block did not raise

    def write(self) -> None:
        rows, self.rows = self.rows, []
        if rows:
            LogEntry.objects.bulk_create(rows)


def _context_live(context: dict) -> bool:
    """Whether an auditlog context still has its receiver (it is inside its ``with``): auditlog
    connects one ``pre_save`` receiver per context under its ``signal_duid``."""
    uid = context.get("signal_duid")
    return uid is not None and any(key[0] == uid for key, *_ in pre_save.receivers)


@contextmanager
def audit_as(actor=None, *, reason: str = "") -> Iterator[None]:
    """Audit rows written inside name ``actor`` and carry ``reason`` as their ``changes_text``.
    django-auditlog's own context managers replace the request's context and never put it back, so
    later rows of the same request would lose their actor: it is restored here. (A context left
    from an earlier call is inert — its receiver is gone — so its actor is never inherited.)"""
    try:
        outer = auditlog_value.get()
    except LookupError:
        outer = None
    data: dict = {"actor": actor}
    # the request's address stays on the rows (the write still comes from where the request did),
    # taken only from a live context: a stale one's address belongs to an earlier request
    if outer is not None and _context_live(outer):
        data.update({key: outer[key] for key in ("remote_addr", "remote_port") if outer.get(key)})
    if reason:
        data["changes_text"] = reason
    try:
        with set_extra_data(data):
            yield
    finally:
        if outer is not None:
            auditlog_value.set(outer)


class ReadKind(StrEnum):
    """What kind of read an ACCESS row records (``additional_data["read"]["kind"]``), so the trail
    says what was seen — the images, a report's text, its PDF — and not only that a record was."""

    VIEWER = "viewer"  # the images in a viewer (OHIF, the built-in one)
    REPORT = "report"  # a report's text: the report page, the report API
    PDF = "pdf"  # the report's PDF
    PRIORS = "priors"  # prior studies' reports shown beside the current one
    API = "api"  # a record's detail in the REST API
    DICOMWEB_METADATA = "dicomweb-metadata"  # DICOM attributes: WADO metadata, QIDO of one study
    DICOMWEB_INSTANCES = "dicomweb-instances"  # whole DICOM instances (WADO-RS retrieve)
    DICOMWEB_FRAMES = "dicomweb-frames"  # pixels: frames, renderings, bulk data
    FHIR = "fhir"  # a FHIR read
    SEARCH = "search"  # a record a search returned (REST, QIDO, FHIR, C-FIND; the search row says which)
    PEER_REVIEW = "peer-review"  # a peer-review, adjudication or feedback case
    ADMIN = "admin"  # the Django admin's change page
    DOCUMENT = "document"  # a credentialing document downloaded


def record_phi_access(instance: models.Model, *, kind: ReadKind | str) -> None:
    """Record that the current user (from the request context) read this patient record, and how:
    the row names the object (type and id, as every row does) and ``kind`` (``ReadKind``), kept in
    ``additional_data["read"]`` beside the patient and facility.

    Call it from every place that shows patient data: study, images, report. Like auditlog's own
    ``accessed`` receiver it writes nothing for an unregistered model or with auditing disabled."""
    if instance.pk is None or auditlog_disabled.get() or not auditlog.contains(type(instance)):
        return
    meta = instance._meta
    audit_entry_write(
        instance,
        action=LogEntry.Action.ACCESS,
        extra={"read": {"kind": str(ReadKind(kind)), "type": meta.label_lower, "id": instance.pk}},
    )


def record_phi_search(
    model: type[models.Model],
    *,
    via: str,
    query: Mapping[str, Sequence[str]],
    returned: Sequence[models.Model],
    total: int | None,
) -> None:
    """Record a search over patient data by the current user: one row for the search itself and a
    read row (``record_phi_access``) for every record it returned.

    The search row is an ACCESS row of the searched model without an object (``object_pk`` empty):
    who (the request's actor and address, as on every row), ``via`` which interface ("FHIR", "REST",
    "QIDO"), how many matched and were returned. The query *values* (names, birth dates, MRNs) are
    kept only in ``additional_data["query"]`` — the audit log is the one place that must say what was
    looked for (an investigation of snooping needs "who searched for name=SMITH") — while the row's
    text, which the audit page lists to everyone who reads the log, names the parameters only."""
    returned = list(returned)
    names = ", ".join(sorted(query)) or "no parameters"
    audit_entry_write(
        model,
        action=LogEntry.Action.ACCESS,
        text=f"{via} search ({names}): {len(returned)} returned of {'?' if total is None else total}",
        extra={
            "search": {
                "via": via,
                "query": {name: list(values) for name, values in query.items()},
                "returned": len(returned),
                "total": total,
            }
        },
    )
    for instance in returned:
        record_phi_access(instance, kind=ReadKind.SEARCH)


def change_summary(entry) -> list[str]:
    """One readable line per changed field: ``name: old → new``; on creation only the values set;
    for many-to-many changes what was added or removed. (auditlog's display dict mangles m2m
    changes, so those are read from the raw changes.)"""
    lines = []
    for name, change in entry.changes_dict.items():
        if isinstance(change, dict) and change.get("type") == "m2m":
            lines.append(
                f"{name}: {change.get('operation')} {', '.join(map(str, change.get('objects', [])))}"
            )
    for label, change in entry.changes_display_dict.items():
        if not isinstance(change, list | tuple) or len(change) != 2:  # m2m: handled above
            continue
        old, new = change
        if entry.action == entry.Action.CREATE:
            if new not in (None, "", "None"):
                lines.append(f"{label}: {new}")
        else:
            lines.append(f"{label}: {old} → {new}")
    return lines
