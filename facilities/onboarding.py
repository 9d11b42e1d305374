"""Onboarding a facility from a YAML file (``manage.py onboard_facility FILE``, DESIGN.md §5).

One file describes one hospital; ``deploy/facility.example.yaml`` is the commented example. The keys::

    code: WI-BIRCHLAKE              # required. Our id for the facility: 2–32 of A–Z 0–9 - _. The file is
                                    #   matched to the database by code, so a new code is a new facility.
    name: Birch Lake Memorial Hospital                  # required
    state: WI                       # required. US state; readers need an active licence there.
    timezone: America/Chicago       # required. IANA zone: shifts and "expires at midnight" use it.
    kind: critical_access           # required. level1_trauma | level2_trauma | community |
                                    #   critical_access | outpatient_imaging | urgent_care
    active: true                    # default true
    hl7:
      senders:                      # MSH-3 / MSH-4 pairs that speak for this facility (matched ignoring
        - application: MEDITECH     #   case). A pair not listed anywhere gets AR (unknown sender).
          facility: BLMH
      accession_fallback: filler    # filler | placer | none: accession when IPC-1 and OBR-18 are empty
      expected_gap_minutes: 60      # HL7 silence longer than this turns the interface red
      allowed_networks: [10.20.0.0/16]  # optional: the addresses these senders may connect from; a
                                    #   frame from elsewhere gets AR and the connection is closed
      max_messages_per_minute: 600  # optional: per sender; the listener reads the next frame later
      report_history: false         # its senders' ORU^R01 are the hospital's historical reports, kept
                                    #   read-only as priors (docs/priors.md); default false: AR 200
      outbound:                     # where signed reports (ORU^R01) go over MLLP; both keys or neither
        host: hl7.birchlake.example.org
        port: 6661
        tls:                        # optional: MLLP over TLS (paths on the worker's machine)
          ca_file: /etc/readroom/tls/birchlake-ca.pem   # verifies the engine (default: system CAs)
          cert_file: /etc/readroom/tls/client.pem       # client certificate, if the engine asks
          key_file: /etc/readroom/tls/client.key
    dicom:
      calling_ae_titles:            # calling AE titles that send images for this facility (exact match)
        - BLMH_CT1                  #   a title alone, or
        - {ae_title: BLMH_CR1, description: Portable X-ray}
        - {ae_title: BLMH_US1, retired_sop_classes: [1.2.840.10008.5.1.4.1.1.6]}  # an old US cart:
                                    #   retired US classes it may send (…1.1.6, multi-frame …1.1.3)
      study_quiet_seconds: 90       # a study is complete after this long without a new instance (>= 5)
      expected_gap_minutes: 120     # DICOM silence longer than this turns the interface red
      move_destinations:            # where this facility's C-MOVEs to ReadRoom may send (else 0xA801)
        - {ae_title: BLMH_PACS, host: pacs.birchlake.example.org, port: 104}
      orderless_wait_minutes: 30    # a study without its order this long shows on the operations worklist
      allowed_networks: [10.20.0.0/16]  # optional: where these AE titles may connect from (else
                                    #   A-ASSOCIATE-RJ calling AE not recognised)
    patients:                       # the MRN domain (docs/orders.md): images and orders land on one patient
      assigning_authority: BLMH     #   its name in PID-3.4 (default: first sender's MSH-4, else the code)
      issuers: [BLMH_PACS]          #   other (0010,0021) / PID-3.4 names of the same MRNs (ignoring case)
    sla_minutes:                    # contract turnaround overrides by priority class (DESIGN.md §6):
      ROUTINE: 2880                 #   STROKE 20, TRAUMA 30, STAT 30, ASAP 240, ROUTINE 1440 otherwise
    reading:
      accepts_general_readers: true # a general reader may read what no subspecialist covers (default true)
      reads_before_verification: false # read before licence + malpractice cover are verified (default false)
      routing_mode: pull            # pull (readers claim from the worklist) | push (assigned to the best
                                    #   eligible reader on shift); default pull
      claim_timeout_minutes: 30     # a claim idle this long goes back to the worklist (default 30)
      screen_lock_minutes: 10       # the contract's idle screen lock, for all who see this facility
                                    #   (default none: ReadRoom's own; never past the session idle limit)
    escalation:                     # code stroke (DESIGN.md §4), minutes after the alert while unclaimed:
      stroke_readers_minutes: 2     #   every eligible reader + operations (default 2)
      stroke_director_minutes: 5    #   medical director + operations notifier (default 5)
      webhook_url: https://pager.birchlake.example.org/readroom   # optional: POSTed JSON at the director step
    reporting:                      # the reporting contract (issue 6)
      accepts_preliminary: false    # wet reads sent as P before the final (default false)
      critical_result_minutes: 60   # an uncommunicated critical result escalates after this (default 60)
      read_rate: "38.50"            # per final read, for the monthly charges (default 0.00)
      oru_addenda_as_nte: false     # an addendum's ORU carries the addenda as NTE after the OBX rows
                                    #   (default false: as OBX rows, LOINC 55107-7)
    catalogue_overrides:            # this facility's procedure catalogue rules (worklist.CatalogueRule);
      - procedure_code: "70450"     #   a code, or a description_pattern (case-insensitive regex) with a rank
        subspecialty: general       #   ER reads non-contrast heads here (default: neuro)
        rvu: "0.85"
        note: ER reads heads
      - description_pattern: "SHOULDER|KNEE"
        rank: 50
        subspecialty: msk
    priors:                         # prior sources queried when an order (or first image) arrives
      sources:                      #   docs/priors.md: method c-move | c-get | dicomweb | fhir, limits
        - {name: PACS, method: c-move, host: pacs.birchlake.example.org, port: 104,
           called_ae_title: BLMH_PACS, count: 3, lookback_days: 1825, hours: "00:00-23:59"}
        # or DICOMweb (QIDO-RS + WADO-RS); the secret comes from the named environment variable
        # - {name: VNA, method: dicomweb, base_url: "https://vna.birchlake.example.org/dicom-web",
        #    auth: {type: basic, username: readroom, password_env: BLMH_VNA_PASSWORD}}
        # or FHIR R4 for the hospital's reports (DiagnosticReport by MRN in the EHR's system)
        # - {name: EHR, method: fhir, base_url: "https://fhir.birchlake.example.org/r4",
        #    auth: {type: bearer, token_env: BLMH_FHIR_TOKEN},
        #    patient_identifier_system: "urn:oid:2.16.840.1.113883.3.5150", count: 5}
    ai:                             # AI results (docs/ai.md)
      verdict_required: true        # the reader's verdict on each AI finding is needed to sign final
      verdict_in_oru: false         # the verdicts also go in the ORU (one OBX per finding)
      ppv_alert_threshold: 0.5      # an algorithm whose confirmed share falls below alerts operations
      triage_rules:                 #   raise only; a rule is known by its name
        - name: ICH positive → STAT
          finding_codes: ["274100004", "RID4700"]   # any scheme
          modality: CT              # optional; procedure_pattern: optional case-insensitive regex
          procedure_pattern: ""
          min_probability: 0.5      # optional, 0–1
          raise_to: STAT            # a priority class, or leave out for no class change
          rank_first: true          # first within its class (default true)
          active: true              # default true

The file is the whole truth about the facility: a key left out means its default, and the HL7 senders
and AE titles become exactly the ones listed (those no longer listed are removed from this facility).
``catalogue_overrides``, when present (even empty), likewise becomes exactly the facility's catalogue
rules; when the key is absent the rules kept in the admin are left as they are. ``ai.triage_rules`` the
same for the facility's AI triage rules.
An HL7 sender pair or AE title that belongs to another facility is refused, never moved.

``facility_yaml_load(text)`` parses the file; ``facility_onboard(spec=...)`` validates it (every problem
at once, each named by its key path) and creates or updates the facility in one transaction.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import yaml
from auditlog.context import set_actor
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models, transaction

from credentialing.models import Subspecialty
from facilities.models import DicomSender, Facility, Hl7Sender, PriorityClass
from facilities.signals import identity_domain_changed
from worklist.models import AiTriageRule, CatalogueRule

TOP_KEYS = (
    "code", "name", "state", "timezone", "kind", "active",
    "hl7", "dicom", "sla_minutes", "reading", "escalation", "reporting", "catalogue_overrides", "priors",
    "patients",
    "ai",
)  # fmt: skip
HL7_KEYS = (
    "senders", "accession_fallback", "expected_gap_minutes", "outbound", "allowed_networks",
    "report_history", "max_messages_per_minute",
)  # fmt: skip
HL7_SENDER_KEYS = ("application", "facility")
OUTBOUND_KEYS = ("host", "port", "tls")
DICOM_KEYS = (
    "calling_ae_titles", "study_quiet_seconds", "expected_gap_minutes", "move_destinations",
    "orderless_wait_minutes", "allowed_networks",
)  # fmt: skip
PATIENT_KEYS = ("assigning_authority", "issuers")
PRIORS_KEYS = ("sources",)
AI_KEYS = ("verdict_required", "verdict_in_oru", "ppv_alert_threshold", "triage_rules")
AI_RULE_KEYS = (
    "name", "finding_codes", "modality", "procedure_pattern", "min_probability", "raise_to", "rank_first",
    "active",
)  # fmt: skip
AE_TITLE_KEYS = ("ae_title", "description", "retired_sop_classes")
ESCALATION_KEYS = ("stroke_readers_minutes", "stroke_director_minutes", "webhook_url")
READING_KEYS = (
    "accepts_general_readers",
    "reads_before_verification",
    "routing_mode",
    "claim_timeout_minutes",
    "screen_lock_minutes",
)
REPORTING_KEYS = ("accepts_preliminary", "critical_result_minutes", "read_rate", "oru_addenda_as_nte")
CATALOGUE_RULE_KEYS = (
    "procedure_code", "description_pattern", "rank", "subspecialty", "rvu", "priority",
    "modality", "body_part", "stroke_protocol", "trauma_protocol", "note",
)  # fmt: skip
SLA_KEYS = tuple(PriorityClass.values)

# Facility field → its key path in the file, in the order the file is read and changes are listed.
FIELD_PATHS: dict[str, str] = {
    "code": "code",
    "name": "name",
    "state": "state",
    "timezone": "timezone",
    "kind": "kind",
    "active": "active",
    "hl7_accession_fallback": "hl7.accession_fallback",
    "hl7_expected_gap_minutes": "hl7.expected_gap_minutes",
    "hl7_outbound_host": "hl7.outbound.host",
    "hl7_outbound_port": "hl7.outbound.port",
    "hl7_outbound_tls": "hl7.outbound.tls",
    "hl7_allowed_networks": "hl7.allowed_networks",
    "hl7_max_messages_per_minute": "hl7.max_messages_per_minute",
    "dicom_allowed_networks": "dicom.allowed_networks",
    "hl7_report_history": "hl7.report_history",
    "study_quiet_seconds": "dicom.study_quiet_seconds",
    "dicom_expected_gap_minutes": "dicom.expected_gap_minutes",
    **{f"sla_{p.lower()}_minutes": f"sla_minutes.{p}" for p in SLA_KEYS},
    "accepts_general_readers": "reading.accepts_general_readers",
    "reads_before_verification": "reading.reads_before_verification",
    "stroke_readers_minutes": "escalation.stroke_readers_minutes",
    "stroke_director_minutes": "escalation.stroke_director_minutes",
    "escalation_webhook_url": "escalation.webhook_url",
    "routing_mode": "reading.routing_mode",
    "claim_timeout_minutes": "reading.claim_timeout_minutes",
    "screen_lock_minutes": "reading.screen_lock_minutes",
    "accepts_preliminary": "reporting.accepts_preliminary",
    "critical_result_minutes": "reporting.critical_result_minutes",
    "read_rate": "reporting.read_rate",
    "oru_addenda_as_nte": "reporting.oru_addenda_as_nte",
    "dicom_move_destinations": "dicom.move_destinations",
    "prior_sources": "priors.sources",
    "orderless_wait_minutes": "dicom.orderless_wait_minutes",
    "patient_id_authority": "patients.assigning_authority",
    "patient_id_issuers": "patients.issuers",
    "ai_verdict_required": "ai.verdict_required",
    "ai_verdict_in_oru": "ai.verdict_in_oru",
    "ai_ppv_alert_threshold": "ai.ppv_alert_threshold",
}
REQUIRED_FIELDS = ("code", "name", "state", "timezone", "kind")
_UNITS = {"study_quiet_seconds": "seconds"}  # every other whole-number field counts minutes

# The inbound parser keeps only the first component of MSH-3/MSH-4, so a delimiter here never matches.
_HL7_DELIMITERS = set("|^~\\&")
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"  # underscores: some hospital DNS has them
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")


class InvalidFacilitySpec(Exception):
    """The file cannot be onboarded; ``problems`` lists every reason, each led by its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class OnboardResult:
    facility: Facility  # unsaved when a dry run would have created it
    status: Literal["created", "updated", "unchanged"]
    changes: tuple[str, ...]  # human-readable, one line per change, led by the key path
    dry_run: bool = False


@dataclass(frozen=True)
class _Hl7SenderSpec:
    application: str  # MSH-3
    facility: str  # MSH-4

    def __str__(self) -> str:
        return f"{self.application}^{self.facility}"


@dataclass(frozen=True)
class _AeTitleSpec:
    ae_title: str
    description: str = ""
    retired_sop_classes: tuple[str, ...] = ()  # docs/orders.md: retired US classes this sender may send


@dataclass
class _FacilitySpec:
    fields: dict[str, Any]  # every Facility field of FIELD_PATHS that was read without a problem
    hl7_senders: list[_Hl7SenderSpec] = field(default_factory=list)
    ae_titles: list[_AeTitleSpec] = field(default_factory=list)
    catalogue_rules: list[CatalogueRule] | None = None  # None: the key was absent, leave the rules
    ai_rules: list[AiTriageRule] | None = None  # None: ai.triage_rules absent, leave the admin's rules

    @property
    def code(self) -> str | None:
        return self.fields.get("code")


# --- parsing ---------------------------------------------------------------------------------------


def facility_yaml_load(text: str) -> Any:
    """The YAML document in ``text``. A syntax error or a key given twice (which YAML would silently
    resolve to the last one) raises InvalidFacilitySpec naming the line."""
    try:
        data = yaml.safe_load(text)
        duplicates = list(_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader)))
    except yaml.MarkedYAMLError as error:
        raise InvalidFacilitySpec([_yaml_error_text(error)]) from None
    except yaml.YAMLError as error:
        raise InvalidFacilitySpec([f"not valid YAML: {error}"]) from None
    if duplicates:
        raise InvalidFacilitySpec(duplicates)
    return data


def _yaml_error_text(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
    text = f"YAML syntax error at {where}: {error.problem or error.context}"
    if error.context and error.problem and error.context_mark:
        text += f" ({error.context} at line {error.context_mark.line + 1})"
    return text


def _duplicate_keys(node: yaml.Node | None) -> Iterator[str]:
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                ident = (key.tag, key.value)
                if ident in seen:
                    yield (
                        f"line {key.start_mark.line + 1}: key {key.value!r} is given twice "
                        f"(first at line {seen[ident] + 1})"
                    )
                seen.setdefault(ident, key.start_mark.line)
            yield from _duplicate_keys(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item)


# --- the service -----------------------------------------------------------------------------------


def facility_onboard(
    *, spec: Mapping[str, Any], dry_run: bool = False, actor: AbstractBaseUser | None = None
) -> OnboardResult:
    """Create or update the facility that ``spec`` (the loaded YAML file) describes, in one transaction.

    Idempotent: the same spec twice changes nothing the second time ("unchanged"). Raises
    InvalidFacilitySpec with every problem when the spec is invalid, in which case nothing is written.
    ``dry_run`` validates and reports what would change without writing. Writes are audit-logged
    (django-auditlog), with ``actor`` as their author when given."""
    author = set_actor(actor) if actor is not None else contextlib.nullcontext()
    with transaction.atomic(), author:
        parsed, problems = _spec_read(spec)
        problems += _ownership_problems(parsed)
        if problems:
            raise InvalidFacilitySpec(problems)
        # Lock the row so that two runs for one facility apply one after the other.
        facility = Facility.objects.select_for_update().filter(code=parsed.code).first()
        plan = _Plan(facility=facility or Facility(), created=facility is None)
        plan.fields_changed, plan.changes = _field_changes(plan.facility, parsed.fields, created=plan.created)
        plan.senders_add, plan.senders_remove, lines = _hl7_sender_changes(plan.facility, parsed.hl7_senders)
        plan.changes += lines
        plan.ae_add, plan.ae_remove, plan.ae_describe, lines = _ae_title_changes(
            plan.facility, parsed.ae_titles
        )
        plan.changes += lines
        if parsed.catalogue_rules is not None:
            plan.rules_save, plan.rules_remove, lines = _catalogue_changes(
                plan.facility, parsed.catalogue_rules
            )
            plan.changes += lines
        if parsed.ai_rules is not None:
            plan.ai_rules_save, plan.ai_rules_remove, lines = _ai_rule_changes(plan.facility, parsed.ai_rules)
            plan.changes += lines
        if not dry_run:
            plan.write()
            if plan.domain_changed():  # records of one person may now be two names of the domain
                for _, lines in identity_domain_changed.send(Facility, facility=plan.facility, actor=actor):
                    plan.changes += lines or []
    status = "created" if plan.created else "updated" if plan.changes else "unchanged"
    return OnboardResult(facility=plan.facility, status=status, changes=tuple(plan.changes), dry_run=dry_run)


@dataclass
class _Plan:
    """What one run changes: worked out in full first, so that a dry run can show it."""

    facility: Facility  # with the file's values already set, not yet saved
    created: bool
    fields_changed: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    senders_add: list[_Hl7SenderSpec] = field(default_factory=list)
    senders_remove: list[Hl7Sender] = field(default_factory=list)
    ae_add: list[_AeTitleSpec] = field(default_factory=list)
    ae_remove: list[DicomSender] = field(default_factory=list)
    ae_describe: list[DicomSender] = field(default_factory=list)  # description changed, not yet saved
    rules_save: list[CatalogueRule] = field(default_factory=list)  # new, or changed and not yet saved
    rules_remove: list[CatalogueRule] = field(default_factory=list)
    ai_rules_save: list[AiTriageRule] = field(default_factory=list)
    ai_rules_remove: list[AiTriageRule] = field(default_factory=list)

    def domain_changed(self) -> bool:
        """The MRN domain's names changed: its own keys, or an HL7 sender (its MSH-4 is a name)."""
        fields = {"patient_id_authority", "patient_id_issuers"}
        return not self.created and bool(fields & set(self.fields_changed) or self.senders_add)

    def write(self) -> None:
        facility = self.facility
        if self.created:
            facility.save()
        elif self.fields_changed:  # nothing saved (and no audit row) when nothing changed
            facility.save(update_fields=[*self.fields_changed, "updated_at"])
        # One row at a time, not in bulk, so that each addition and removal gets its audit row.
        for sender in self.senders_remove:
            sender.delete()
        for new in self.senders_add:
            facility.hl7_senders.create(sending_application=new.application, sending_facility=new.facility)
        for dicom_sender in self.ae_remove:
            dicom_sender.delete()
        for rule in self.rules_remove:
            rule.delete()
        for rule in self.rules_save:
            rule.facility = facility
            rule.save()
        for ai_rule in self.ai_rules_remove:
            ai_rule.delete()
        for ai_rule in self.ai_rules_save:
            ai_rule.facility = facility
            ai_rule.save()
        for dicom_sender in self.ae_describe:
            dicom_sender.save(update_fields=["description", "retired_sop_classes"])
        for title in self.ae_add:
            facility.dicom_senders.create(
                ae_title=title.ae_title,
                description=title.description,
                retired_sop_classes=list(title.retired_sop_classes),
            )


def _field_changes(
    facility: Facility, fields: dict[str, Any], *, created: bool
) -> tuple[list[str], list[str]]:
    """Apply ``fields`` to ``facility`` (unsaved) and describe what that changes."""
    changed, lines = [], []
    for name, path in FIELD_PATHS.items():
        old, new = getattr(facility, name), fields[name]
        if created:
            lines.append(f"{path}: {_show(new)}")
        elif old != new:
            changed.append(name)
            lines.append(f"{path}: {_show(old)} → {_show(new)}")
        setattr(facility, name, new)
    return changed, lines


def _hl7_sender_changes(
    facility: Facility, wanted: list[_Hl7SenderSpec]
) -> tuple[list[_Hl7SenderSpec], list[Hl7Sender], list[str]]:
    existing = {
        _Hl7SenderSpec(s.sending_application, s.sending_facility): s
        for s in (facility.hl7_senders.order_by("pk") if facility.pk else [])
    }
    add = [s for s in wanted if s not in existing]
    remove = [row for s, row in existing.items() if s not in wanted]
    lines = [f"hl7.senders: removed {s}" for s in existing if s not in wanted]
    lines += [f"hl7.senders: added {s}" for s in add]
    return add, remove, lines


# What identifies a rule in the file: its code, or its pattern (a rule has exactly one of them).
_RULE_FIELDS = (
    "rank", "subspecialty_id", "rvu", "priority", "modality", "body_part",
    "stroke_protocol", "trauma_protocol", "note",
)  # fmt: skip


def _rule_key(rule: CatalogueRule) -> str:
    return rule.procedure_code or f"/{rule.description_pattern}/"


def _catalogue_changes(
    facility: Facility, wanted: list[CatalogueRule]
) -> tuple[list[CatalogueRule], list[CatalogueRule], list[str]]:
    existing = {_rule_key(r): r for r in (facility.catalogue_rules.order_by("pk") if facility.pk else [])}
    save, lines = [], []
    remove = [row for key, row in existing.items() if key not in {_rule_key(w) for w in wanted}]
    lines += [f"catalogue_overrides: removed {_rule_key(row)}" for row in remove]
    for rule in wanted:
        row = existing.get(_rule_key(rule))
        if row is None:
            save.append(rule)
            lines.append(f"catalogue_overrides: added {_rule_key(rule)} → {rule.subspecialty.code}")
            continue
        changed = [name for name in _RULE_FIELDS if getattr(row, name) != getattr(rule, name)]
        if changed:
            for name in changed:
                setattr(row, name, getattr(rule, name))
            save.append(row)
            lines.append(f"catalogue_overrides: {_rule_key(rule)} changed ({', '.join(changed)})")
    return save, remove, lines


# An AI triage rule is identified in the file by its name.
_AI_RULE_FIELDS = tuple(k for k in AI_RULE_KEYS if k != "name")


def _ai_rule_changes(
    facility: Facility, wanted: list[AiTriageRule]
) -> tuple[list[AiTriageRule], list[AiTriageRule], list[str]]:
    existing = {r.name: r for r in (facility.ai_rules.order_by("pk") if facility.pk else [])}
    names = {w.name for w in wanted}
    remove = [row for name, row in existing.items() if name not in names]
    lines = [f"ai.triage_rules: removed {row.name!r}" for row in remove]
    save = []
    for rule in wanted:
        row = existing.get(rule.name)
        if row is None:
            save.append(rule)
            lines.append(f"ai.triage_rules: added {rule.name!r}")
            continue
        changed = [name for name in _AI_RULE_FIELDS if getattr(row, name) != getattr(rule, name)]
        if changed:
            for name in changed:
                setattr(row, name, getattr(rule, name))
            save.append(row)
            lines.append(f"ai.triage_rules: {rule.name!r} changed ({', '.join(changed)})")
    return save, remove, lines


def _ae_title_changes(
    facility: Facility, wanted: list[_AeTitleSpec]
) -> tuple[list[_AeTitleSpec], list[DicomSender], list[DicomSender], list[str]]:
    existing = {s.ae_title: s for s in (facility.dicom_senders.order_by("pk") if facility.pk else [])}
    wanted_by_title = {t.ae_title: t for t in wanted}
    add = [t for t in wanted if t.ae_title not in existing]
    remove = [row for title, row in existing.items() if title not in wanted_by_title]
    describe, lines = [], [f"dicom.calling_ae_titles: removed {row.ae_title}" for row in remove]
    for title in add:
        lines.append(
            f"dicom.calling_ae_titles: added {title.ae_title}"
            + (f" ({title.description})" if title.description else "")
        )
    for title, row in existing.items():
        new = wanted_by_title.get(title)
        if new is not None and new.description != row.description:
            lines.append(
                f"dicom.calling_ae_titles: {title} description {_show(row.description)} "
                f"→ {_show(new.description)}"
            )
            row.description = new.description
            describe.append(row)
        if new is not None and list(new.retired_sop_classes) != row.retired_sop_classes:
            lines.append(
                f"dicom.calling_ae_titles: {title} retired_sop_classes {_show(row.retired_sop_classes)} "
                f"→ {_show(list(new.retired_sop_classes))}"
            )
            row.retired_sop_classes = list(new.retired_sop_classes)
            if row not in describe:
                describe.append(row)
    return add, remove, describe, lines


def _ownership_problems(spec: _FacilitySpec) -> list[str]:
    """Senders that already speak for another facility. HL7 senders are matched ignoring case, as the
    listener matches them; AE titles exactly, as the DICOM SCP does."""
    problems = []
    for sender in spec.hl7_senders:
        owner = (
            Hl7Sender.objects.filter(
                sending_application__iexact=sender.application, sending_facility__iexact=sender.facility
            )
            .exclude(facility__code=spec.code)
            .select_related("facility")
            .first()
        )
        if owner is not None:
            problems.append(f"hl7.senders: {sender} already belongs to {owner.facility}")
    titles = [t.ae_title for t in spec.ae_titles]
    for owner in (
        DicomSender.objects.filter(ae_title__in=titles)
        .exclude(facility__code=spec.code)
        .select_related("facility")
        .order_by("ae_title")
    ):
        problems.append(
            f"dicom.calling_ae_titles: {_quote(owner.ae_title)} already belongs to {owner.facility}"
        )
    return problems


def _show(value: Any) -> str:
    if value is None or value == "":
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _quote(value)


def _quote(value: Any) -> str:
    # Not repr(): an AE title 'A\B' must read as the operator typed it, not as 'A\\B'.
    return f"'{value}'" if isinstance(value, str) else str(value)


# --- validation ------------------------------------------------------------------------------------

_INVALID = object()  # a value that had a problem: left out of the model's validation and of the spec


def _spec_read(data: Any) -> tuple[_FacilitySpec, list[str]]:
    """Read the whole file, collecting every problem rather than stopping at the first."""
    if data is None:
        return _FacilitySpec(fields={}), ["the file is empty: it must describe one facility (code: …)"]
    if not isinstance(data, dict):
        return _FacilitySpec(fields={}), [
            f"the file must describe one facility as keys and values (code: …, name: …), not {_kind(data)}"
        ]
    r = _Reader()
    top = r.section(data, "", TOP_KEYS)
    raw: dict[str, Any] = {}
    for key in REQUIRED_FIELDS:
        raw[key] = r.text(top, key, key, required=True)
    raw["active"] = r.flag(top, "active", "active")

    hl7 = r.section(top.get("hl7"), "hl7", HL7_KEYS)
    senders = r.hl7_senders(hl7.get("senders"), "hl7.senders")
    raw["hl7_accession_fallback"] = r.text(hl7, "accession_fallback", "hl7.accession_fallback")
    raw["hl7_expected_gap_minutes"] = r.whole(hl7, "expected_gap_minutes", "hl7_expected_gap_minutes")
    raw["hl7_report_history"] = r.flag(hl7, "report_history", "hl7.report_history")
    outbound = r.section(hl7.get("outbound"), "hl7.outbound", OUTBOUND_KEYS)
    raw["hl7_outbound_host"] = r.host(outbound)
    raw["hl7_outbound_port"] = r.port(outbound)
    if (raw["hl7_outbound_host"] is None) != (raw["hl7_outbound_port"] is None):
        missing = "port" if raw["hl7_outbound_port"] is None else "host"
        other = "host" if missing == "port" else "port"
        r.problem(f"hl7.outbound.{missing}", f"required when hl7.outbound.{other} is given")
    # checked whole by the model fields' validators (facilities.models)
    raw["hl7_outbound_tls"] = outbound.get("tls")
    raw["hl7_allowed_networks"] = hl7.get("allowed_networks")
    raw["hl7_max_messages_per_minute"] = r.whole(
        hl7, "max_messages_per_minute", "hl7_max_messages_per_minute"
    )

    dicom = r.section(top.get("dicom"), "dicom", DICOM_KEYS)
    ae_titles = r.ae_titles(dicom.get("calling_ae_titles"), "dicom.calling_ae_titles")
    raw["study_quiet_seconds"] = r.whole(dicom, "study_quiet_seconds", "study_quiet_seconds")
    raw["dicom_expected_gap_minutes"] = r.whole(dicom, "expected_gap_minutes", "dicom_expected_gap_minutes")
    # Lists of mappings, checked whole by the model field's validator (facilities.models)
    raw["dicom_move_destinations"] = dicom.get("move_destinations")
    raw["orderless_wait_minutes"] = r.whole(dicom, "orderless_wait_minutes", "orderless_wait_minutes")
    raw["dicom_allowed_networks"] = dicom.get("allowed_networks")
    # The MRN domain (docs/orders.md): its name in PID-3.4 and the other issuers that mean it,
    # checked whole by the model field's validator
    patients = r.section(top.get("patients"), "patients", PATIENT_KEYS)
    raw["patient_id_authority"] = r.text(patients, "assigning_authority", "patients.assigning_authority")
    raw["patient_id_issuers"] = patients.get("issuers")
    priors = r.section(top.get("priors"), "priors", PRIORS_KEYS)
    raw["prior_sources"] = priors.get("sources")

    sla = r.section(top.get("sla_minutes"), "sla_minutes", SLA_KEYS)
    for priority in SLA_KEYS:
        raw[f"sla_{priority.lower()}_minutes"] = r.whole(sla, priority, f"sla_{priority.lower()}_minutes")

    reading = r.section(top.get("reading"), "reading", READING_KEYS)
    raw["accepts_general_readers"] = r.flag(
        reading, "accepts_general_readers", "reading.accepts_general_readers"
    )
    raw["reads_before_verification"] = r.flag(
        reading, "reads_before_verification", "reading.reads_before_verification"
    )
    raw["routing_mode"] = r.text(reading, "routing_mode", "reading.routing_mode")
    raw["claim_timeout_minutes"] = r.whole(reading, "claim_timeout_minutes", "claim_timeout_minutes")
    raw["screen_lock_minutes"] = r.whole(reading, "screen_lock_minutes", "screen_lock_minutes")

    escalation = r.section(top.get("escalation"), "escalation", ESCALATION_KEYS)
    for key in ("stroke_readers_minutes", "stroke_director_minutes"):
        raw[key] = r.whole(escalation, key, key)
    raw["escalation_webhook_url"] = r.text(escalation, "webhook_url", "escalation.webhook_url")

    reporting = r.section(top.get("reporting"), "reporting", REPORTING_KEYS)
    raw["accepts_preliminary"] = r.flag(reporting, "accepts_preliminary", "reporting.accepts_preliminary")
    raw["critical_result_minutes"] = r.whole(reporting, "critical_result_minutes", "critical_result_minutes")
    raw["read_rate"] = r.money(reporting, "read_rate", "reporting.read_rate")
    raw["oru_addenda_as_nte"] = r.flag(reporting, "oru_addenda_as_nte", "reporting.oru_addenda_as_nte")

    rules = r.catalogue_rules(top["catalogue_overrides"]) if "catalogue_overrides" in top else None

    ai = r.section(top.get("ai"), "ai", AI_KEYS)
    raw["ai_verdict_required"] = r.flag(ai, "verdict_required", "ai.verdict_required")
    raw["ai_verdict_in_oru"] = r.flag(ai, "verdict_in_oru", "ai.verdict_in_oru")
    raw["ai_ppv_alert_threshold"] = r.share(ai, "ppv_alert_threshold", "ai.ppv_alert_threshold")
    ai_rules = r.ai_rules(ai["triage_rules"]) if "triage_rules" in ai else None

    fields = _model_checked(raw, r)
    spec = _FacilitySpec(
        fields=fields, hl7_senders=senders, ae_titles=ae_titles, catalogue_rules=rules, ai_rules=ai_rules
    )
    return spec, r.in_file_order(data)


def _model_checked(raw: dict[str, Any], r: _Reader) -> dict[str, Any]:
    """Run the Facility model's own validators on what was read (a key left out takes the model's
    default) and report their errors under the file's key paths."""
    values = {
        name: Facility._meta.get_field(name).get_default() if value is None else value
        for name, value in raw.items()
        if value is not _INVALID
    }
    bad = [name for name, value in raw.items() if value is _INVALID]
    try:
        # Uniqueness is the service's business (the code identifies the row to update); the SLA check
        # constraint repeats the fields' MinValueValidator(1) and would cost a query.
        Facility(**values).full_clean(exclude=bad, validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        for name, e in _field_errors(error):
            r.problem(FIELD_PATHS.get(name, name), _model_error_text(Facility, name, e, values.get(name)))
            values.pop(name, None)
    return values


def _field_errors(error: ValidationError) -> Iterator[tuple[str, ValidationError]]:
    """Each field's errors, leaving out a pattern error when the value is simply too long (an AE title's
    pattern also limits the length; one message is enough)."""
    for name, errors in error.error_dict.items():
        too_long = any(e.code == "max_length" for e in errors)
        for e in errors:
            if not (too_long and e.code == "invalid"):
                yield name, e


def _model_error_text(model: type[models.Model], name: str, error: ValidationError, value: Any) -> str:
    """A model validator's error, said in the file's terms."""
    params = error.params or {}
    if error.code in ("blank", "null", "required"):
        return "required"
    if error.code == "invalid_choice":
        if name == "state":
            return f"{_quote(value)} is not a US state (e.g. IL, WI)"
        choices = ", ".join(str(c) for c, _ in model._meta.get_field(name).flatchoices)
        return f"{_quote(value)} is not one of {choices}"
    if error.code == "max_length":
        return f"{_quote(value)} is longer than {params['limit_value']} characters"
    if error.code in ("min_value", "max_value") and name in FIELD_PATHS:
        if error.code == "max_value":
            return f"must be at most {params['limit_value']}"
        return _whole_rule(name)
    message = error.message % params if params else error.message
    if error.code == "invalid":  # a RegexValidator: its message says what is allowed
        return f"{_quote(value)} is not valid: {message}"
    return str(message)


def _whole_rule(name: str) -> str:
    """What a whole-number field accepts, from the model field's own MinValueValidator."""
    minimum = max(
        (
            v.limit_value
            for v in Facility._meta.get_field(name).validators
            if isinstance(v, MinValueValidator)
        ),
        default=1,
    )
    unit = _UNITS.get(name, "minutes")
    if minimum <= 1:
        return f"must be a positive whole number of {unit}"
    return f"must be a whole number of {unit}, at least {minimum}"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (a yes/no value)"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _unknown_key(key: Any, allowed: tuple[str, ...]) -> str:
    by_folded = {a.casefold(): a for a in allowed}
    close = difflib.get_close_matches(str(key).casefold(), list(by_folded), n=1)
    hint = f"did you mean {by_folded[close[0]]!r}?" if close else f"known keys: {', '.join(allowed)}"
    return f"unknown key {_quote(key)} ({hint})"


class _Reader:
    """Reads typed values out of the loaded YAML, recording a problem (and returning _INVALID) for
    each one that is wrong. ``None`` means the key was left out."""

    def __init__(self) -> None:
        self.problems: list[tuple[Any, str]] = []  # (top-level key it concerns, text)

    def problem(self, path: str, message: str, *, top: Any = None) -> None:
        top = top if top is not None else re.split(r"[.\[]", path, maxsplit=1)[0]
        self.problems.append((top, f"{path}: {message}" if path else message))

    def in_file_order(self, data: dict) -> list[str]:
        """The problems in the order of the file's top-level keys (missing required keys first)."""
        position = {key: i for i, key in enumerate(data)}
        return [text for top, text in sorted(self.problems, key=lambda p: position.get(p[0], -1))]

    def section(self, value: Any, path: str, keys: tuple[str, ...]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"must be keys and values ({', '.join(keys)}), not {_kind(value)}")
            return {}
        for key in value:
            if key not in keys:
                self.problem(path, _unknown_key(key, keys), top=key if not path else None)
        return value

    def items(self, value: Any, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(path, f"must be a list (one '- ' line per entry), not {_kind(value)}")
            return []
        return value

    def text(self, m: dict, key: str, path: str, *, required: bool = False) -> Any:
        value = m.get(key)
        if value is None:
            if required:
                self.problem(path, "required")
                return _INVALID
            return None
        if not isinstance(value, str):
            self.problem(path, f"must be text, not {_kind(value)}: put it in quotes")
            return _INVALID
        return value.strip()

    def flag(self, m: dict, key: str, path: str) -> Any:
        value = m.get(key)
        if value is None or isinstance(value, bool):
            return value
        self.problem(path, f"must be true or false, not {_quote(value)}")
        return _INVALID

    def money(self, m: dict, key: str, path: str) -> Any:
        """An amount as "38.50" or 38.5 — quoted is safer (YAML floats are binary)."""
        value = m.get(key)
        if value is None:
            return None
        try:
            if isinstance(value, bool):
                raise InvalidOperation
            return Decimal(str(value))
        except InvalidOperation:
            self.problem(path, f'must be an amount such as "38.50", not {_quote(value)}')
            return _INVALID

    def whole(self, m: dict, key: str, field_name: str) -> Any:
        value = m.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(FIELD_PATHS[field_name], _whole_rule(field_name))
            return _INVALID
        return value  # the range is the model validators' business (_model_checked)

    def host(self, outbound: dict) -> Any:
        host = self.text(outbound, "host", "hl7.outbound.host")
        if host == "":
            return None
        if host is None or host is _INVALID:
            return host
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            return host
        if _HOST_NAME.match(host):
            return host
        self.problem(
            "hl7.outbound.host",
            f"{_quote(host)} is not a host name or IP address "
            "(no scheme; the port goes in hl7.outbound.port)",
        )
        return _INVALID

    def port(self, outbound: dict) -> Any:
        value = outbound.get("port")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            self.problem("hl7.outbound.port", "must be a whole number from 1 to 65535")
            return _INVALID
        return value

    def hl7_senders(self, value: Any, path: str) -> list[_Hl7SenderSpec]:
        senders: list[_Hl7SenderSpec] = []
        first_at: dict[tuple[str, str], int] = {}
        for i, item in enumerate(self.items(value, path)):
            at = f"{path}[{i}]"
            if not isinstance(item, dict):
                self.problem(at, f"must be keys application (MSH-3) and facility (MSH-4), not {_kind(item)}")
                continue
            self.section(item, at, HL7_SENDER_KEYS)
            before = len(self.problems)
            app = self.text(item, "application", f"{at}.application", required=True)
            fac = self.text(item, "facility", f"{at}.facility", required=True)
            for key, part in (("application", app), ("facility", fac)):
                if isinstance(part, str) and _HL7_DELIMITERS & set(part):
                    self.problem(
                        f"{at}.{key}",
                        f"{_quote(part)} contains an HL7 delimiter (| ^ ~ \\ &): "
                        "give the first component only",
                    )
            if len(self.problems) == before:
                self._model_check(
                    Hl7Sender(sending_application=app, sending_facility=fac),
                    {"sending_application": f"{at}.application", "sending_facility": f"{at}.facility"},
                )
            if len(self.problems) > before:
                continue
            ident = (app.casefold(), fac.casefold())  # the listener matches senders ignoring case
            if ident in first_at:
                self.problem(
                    at, f"{app}^{fac} is the same sender as {path}[{first_at[ident]}] (case is ignored)"
                )
                continue
            first_at[ident] = i
            senders.append(_Hl7SenderSpec(app, fac))
        return senders

    def ae_titles(self, value: Any, path: str) -> list[_AeTitleSpec]:
        titles: list[_AeTitleSpec] = []
        first_at: dict[str, int] = {}
        for i, item in enumerate(self.items(value, path)):
            at = f"{path}[{i}]"
            if isinstance(item, dict):
                self.section(item, at, AE_TITLE_KEYS)
                title_path = f"{at}.ae_title"
                title = self.text(item, "ae_title", title_path, required=True)
                description = self.text(item, "description", f"{at}.description")
                retired = item.get("retired_sop_classes") or []
            else:
                retired = []
                title_path = at
                title = self.text({"ae_title": item}, "ae_title", title_path, required=True)
                description = None
            if title is _INVALID or description is _INVALID:
                continue
            before = len(self.problems)
            # DICOM: leading and trailing spaces of an AE title are not significant (PS3.5 §6.2).
            self._model_check(
                DicomSender(ae_title=title, description=description or "", retired_sop_classes=retired),
                {
                    "ae_title": title_path,
                    "description": f"{at}.description",
                    "retired_sop_classes": f"{at}.retired_sop_classes",
                },
            )
            if len(self.problems) > before:
                continue
            if title in first_at:
                self.problem(at, f"{_quote(title)} is listed twice (also {path}[{first_at[title]}])")
                continue
            first_at[title] = i
            titles.append(_AeTitleSpec(title, description or "", tuple(retired)))
        return titles

    def catalogue_rules(self, value: Any) -> list[CatalogueRule]:
        """The facility's catalogue rules (unsaved), each checked by the model's own rules."""
        rules, seen = [], {}
        subspecialties = {s.code: s for s in Subspecialty.objects.all()}
        for i, item in enumerate(self.items(value, "catalogue_overrides")):
            at = f"catalogue_overrides[{i}]"
            if not isinstance(item, dict):
                self.problem(at, f"must be keys ({', '.join(CATALOGUE_RULE_KEYS)}), not {_kind(item)}")
                continue
            before = len(self.problems)
            self.section(item, at, CATALOGUE_RULE_KEYS)
            code = self.text(item, "procedure_code", f"{at}.procedure_code") or ""
            pattern = self.text(item, "description_pattern", f"{at}.description_pattern") or ""
            sub_code = self.text(item, "subspecialty", f"{at}.subspecialty", required=True)
            subspecialty = subspecialties.get(sub_code) if isinstance(sub_code, str) else None
            if isinstance(sub_code, str) and subspecialty is None:
                self.problem(
                    f"{at}.subspecialty", f"{_quote(sub_code)} is not one of {', '.join(subspecialties)}"
                )
            rvu = self.money(item, "rvu", f"{at}.rvu")
            rank = item.get("rank", 100)
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
                self.problem(f"{at}.rank", "must be a whole number, 0 or more (lower is tried first)")
            flags = {k: self.flag(item, k, f"{at}.{k}") for k in ("stroke_protocol", "trauma_protocol")}
            if len(self.problems) > before:
                continue
            rule = CatalogueRule(
                procedure_code=code,
                description_pattern=pattern,
                rank=rank,
                subspecialty=subspecialty,
                rvu=rvu if rvu is not None else Decimal("0"),
                priority=(self.text(item, "priority", f"{at}.priority") or "").upper(),
                modality=self.text(item, "modality", f"{at}.modality") or "",
                body_part=self.text(item, "body_part", f"{at}.body_part") or "",
                stroke_protocol=bool(flags["stroke_protocol"]),
                trauma_protocol=bool(flags["trauma_protocol"]),
                note=self.text(item, "note", f"{at}.note") or "",
            )
            self._rule_check(rule, at)
            key = _rule_key(rule)
            if key in seen:
                self.problem(at, f"{key} is listed twice (also catalogue_overrides[{seen[key]}])")
            seen.setdefault(key, i)
            rules.append(rule)
        return rules

    def share(self, m: dict, key: str, path: str) -> Any:
        """A share from 0 to 1 (0.8 = 80 %), or None when absent."""
        value = m.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            self.problem(path, f"must be a share from 0 to 1 (e.g. 0.8 for 80 %), not {_show(value)}")
            return _INVALID
        return float(value)

    def ai_rules(self, value: Any) -> list[AiTriageRule]:
        """The facility's AI triage rules (unsaved; docs/ai.md), each checked by the model's own rules."""
        rules, seen = [], {}
        for i, item in enumerate(self.items(value, "ai.triage_rules")):
            at = f"ai.triage_rules[{i}]"
            if not isinstance(item, dict):
                self.problem(at, f"must be keys ({', '.join(AI_RULE_KEYS)}), not {_kind(item)}")
                continue
            before = len(self.problems)
            self.section(item, at, AI_RULE_KEYS)
            name = self.text(item, "name", f"{at}.name", required=True)
            codes = item.get("finding_codes")
            if not isinstance(codes, list) or not codes or not all(isinstance(c, str | int) for c in codes):
                self.problem(f"{at}.finding_codes", 'required: a list of finding codes, e.g. ["274100004"]')
            probability = self.share(item, "min_probability", f"{at}.min_probability")
            flags = {k: self.flag(item, k, f"{at}.{k}") for k in ("rank_first", "active")}
            if len(self.problems) > before:
                continue
            rule = AiTriageRule(
                name=name,
                finding_codes=[str(c) for c in codes],
                modality=(self.text(item, "modality", f"{at}.modality") or "").upper(),
                procedure_pattern=self.text(item, "procedure_pattern", f"{at}.procedure_pattern") or "",
                min_probability=probability,
                raise_to=(self.text(item, "raise_to", f"{at}.raise_to") or "").upper(),
                rank_first=True if flags["rank_first"] is None else bool(flags["rank_first"]),
                active=True if flags["active"] is None else bool(flags["active"]),
            )
            try:
                rule.clean()  # raise or rank first; the pattern compiles
            except ValidationError as error:
                for message in error.messages:
                    self.problem(at, message)
            self._model_check(rule, {n: f"{at}.{n}" for n in AI_RULE_KEYS})
            if name in seen:
                self.problem(at, f"{name!r} is listed twice (also ai.triage_rules[{seen[name]}])")
            seen.setdefault(name, i)
            rules.append(rule)
        return rules

    def _rule_check(self, rule: CatalogueRule, at: str) -> None:
        try:
            rule.clean()  # exactly one of code / pattern; the pattern compiles
        except ValidationError as error:
            for message in error.messages:
                self.problem(at, message)
        self._model_check(
            rule,
            {name: f"{at}.{name}" for name in CATALOGUE_RULE_KEYS} | {"subspecialty": f"{at}.subspecialty"},
        )

    def _model_check(self, instance: models.Model, paths: dict[str, str]) -> None:
        try:
            instance.clean_fields(exclude=["facility"])
        except ValidationError as error:
            for name, e in _field_errors(error):
                self.problem(paths[name], _model_error_text(type(instance), name, e, getattr(instance, name)))
