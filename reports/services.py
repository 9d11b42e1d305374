"""Writes for report authoring and signing (issue 6, DESIGN.md §4 steps 5–6).

* ``report_start``: the claimant opens the editor; the report is created on the template for the
  study with field defaults and merge fields filled from the order and the DICOM header.
* ``report_draft_save``: autosave. A draft may be incomplete, but what is filled must fit its kind.
* ``report_sign``: draft → preliminary (facilities that contract for wet reads) → final. In one
  transaction with the report row locked: the claimant, the eligibility engine asked again *now*,
  required fields, a critical result communicated. Re-authentication (password or a TOTP code) is
  checked first, outside that transaction, so that a wrong attempt is counted even though the
  signing is refused. A final report is immutable in the database (``reports.setup``).
* ``addendum_sign``: a signed correction appended to a final report.
* ``critical_*``: marking a critical result, the communication record, the overdue escalation.
* A final read creates its ``Charge`` (one per study, by a unique constraint); ``charge_correct``
  posts a correction as new rows (charges are append-only).

Side effects (the ``report_signed`` signal, the ``study.finalized`` event) run after commit."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.urls import reverse
from django_otp import devices_for_user

from accounts.roles import Role, has_role
from credentialing.eligibility import assess
from imaging.models import Study, StudyStatus
from reports.ai_verdicts import ai_verdicts_record
from reports.delivery import report_delivery_enqueue
from reports.merge import merge_context
from reports.models import (
    Addendum,
    Charge,
    ChargeKind,
    CommunicationMethod,
    CriticalResultCommunication,
    Report,
    ReportStatus,
    SigningAttempt,
)
from reports.schema import (
    TemplateContent,
    merge_fill,
    report_sections,
    template_content_parse,
    values_problems,
)
from reports.selectors import report_content, study_claimant_id, template_for_study
from reports.signals import report_signed
from worklist.broadcast import operations_event_send, study_event_broadcast
from worklist.models import NoticeKind
from worklist.notices import study_line, user_notice_send
from worklist.tat import study_milestone_record

logger = logging.getLogger(__name__)


class ReportError(Exception):
    """A refusal the user can act on; ``problems`` lists every reason."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = problems or []


class NotClaimant(ReportError):
    pass


class ReportFinal(ReportError):
    pass


class SigningRefused(ReportError):
    pass


class NotEligibleToSign(SigningRefused):
    """The eligibility engine refused (licence, privileges, subspecialty, shift) — with its reasons."""


class ReauthenticationFailed(ReportError):
    pass


class SigningLocked(ReauthenticationFailed):
    pass


# --- starting and editing ------------------------------------------------------------------------


def _require_claimant(study: Study, user) -> None:
    # Only the reader who holds the study writes its report: a claim is the exclusive right to read it.
    if study_claimant_id(study.pk) != user.pk:
        raise NotClaimant("Only the radiologist who claimed this study may write its report. Claim it first.")


def report_start(*, study_id: int, user, at: datetime) -> Report:
    """The study's report for its claimant: the existing one, or a new draft on the facility's template
    with defaults and merge fields filled. Records ``opened_at`` (TAT) the first time."""
    study = Study.objects.select_related("facility", "order", "patient").get(pk=study_id)
    existing = Report.objects.filter(study=study).first()
    if existing is not None and existing.status != ReportStatus.DRAFT:
        return existing  # preliminary/final: the claimant continues (or reads); nothing to create
    _require_claimant(study, user)
    if existing is not None:
        if existing.author_id != user.pk:
            # The study was released and claimed by another reader, who takes over the draft.
            Report.objects.filter(pk=existing.pk, status=ReportStatus.DRAFT).update(author=user)
            existing.refresh_from_db()
        return existing
    version = template_for_study(study)
    if version is None:
        raise ReportError(
            f"{study.facility.name} has no report template for this procedure; "
            "ask the facility admin to add one."
        )
    content = template_content_parse(version.content)
    context = merge_context(study)
    values = {f.key: merge_fill(f.default, context) for f in content.fields() if f.default}
    try:
        with transaction.atomic():
            return Report.objects.create(
                study=study, template_version=version, author=user, values=values, opened_at=at
            )
    except IntegrityError:
        # Two tabs opened the editor at once: the other created it (one report per study).
        return Report.objects.get(study=study)


def on_study_order_unmatched(sender, *, study_id: int, order_id: int, **kwargs) -> dict | None:
    """Receiver of ``worklist.signals.study_order_unmatched``, in the unmatch's transaction.

    The report is locked first: a signature under way finishes (and the unmatch is refused), or
    waits and then signs the study as it is now. A signed report (preliminary or final) went to the
    EMR under the order: refused (``UnmatchSigned``, 409), everything rolls back. A draft keeps the
    reader's words; only the merge fields they left as filled — the history, the ordering provider,
    the patient's age and sex, all from the wrong order and its patient — are filled again from the
    study as it is now. Returns what was refreshed and kept, for the study's event."""
    from imaging.models import Order
    from worklist.order_match import UnmatchSigned  # the refusal the REST API answers 409 with

    report = (
        Report.objects.select_for_update(of=("self",))
        .select_related("template_version")
        .filter(study_id=study_id)
        .first()
    )
    if report is None:
        return None
    if report.status != ReportStatus.DRAFT:
        raise UnmatchSigned(
            f"The report is signed ({report.get_status_display().lower()}): it went to the EMR under "
            "this order, so the match stands (correct it with an addendum)."
        )
    now = Study.objects.select_related("facility").get(pk=study_id)
    was = Study.objects.select_related("facility").get(pk=study_id)
    was.order = Order.objects.select_related("patient").get(pk=order_id)
    was.patient = was.order.patient
    context_was, context_now = merge_context(was), merge_context(now)
    values, refreshed, kept = dict(report.values), [], []
    for f in report_content(report).fields():
        if not f.default or merge_fill(f.default, context_was) == merge_fill(f.default, context_now):
            continue
        if values.get(f.key) == merge_fill(f.default, context_was):
            values[f.key] = merge_fill(f.default, context_now)
            refreshed.append(f.key)
        else:
            kept.append(f.key)  # the reader wrote over it: their words stay
    if refreshed:
        report.values = values
        report.save(update_fields=["values", "updated_at"])
    return {"report": report.pk, "refreshed": refreshed, "kept": kept}


def _locked_report(report_id: int) -> Report:
    return (
        Report.objects.select_for_update(of=("self",))
        .select_related("study", "study__facility", "template_version")
        .get(pk=report_id)
    )


@transaction.atomic
def report_draft_save(*, report_id: int, user, values: dict[str, object], at: datetime) -> Report:
    """Autosave: merge ``values`` (only the template's fields) into the report. Refused for a final
    report and for anyone but the claimant; a value that does not fit its kind is refused with the
    reason (nothing is saved), an empty or missing one is fine."""
    report = _locked_report(report_id)
    if report.status == ReportStatus.FINAL:
        raise ReportFinal("This report is final and cannot be changed. Write an addendum instead.")
    _require_claimant(report.study, user)
    content = report_content(report)
    keys = {f.key for f in content.fields()}
    unknown = sorted(set(values) - keys)
    if unknown:
        raise ReportError(
            "Unknown fields for this template.", [f"{k}: not a field of this template" for k in unknown]
        )
    merged = {**report.values, **{k: "" if v is None else str(v) for k, v in values.items()}}
    problems = values_problems(content, merged, signing=False)
    if problems:
        raise ReportError("Some values do not fit their fields.", problems)
    report.values = merged
    report.author = user
    report.save(update_fields=["values", "author", "updated_at"])
    return report


@transaction.atomic
def report_critical_mark(*, report_id: int, user, critical: bool, at: datetime) -> Report:
    """Mark (or unmark) the report as containing a critical result. The facility's deadline for
    communicating it runs from the first marking."""
    report = _locked_report(report_id)
    if report.status == ReportStatus.FINAL:
        raise ReportFinal("This report is final and cannot be changed. Write an addendum instead.")
    _require_claimant(report.study, user)
    report.is_critical = critical
    if critical and report.critical_marked_at is None:
        report.critical_marked_at = at
    report.save(update_fields=["is_critical", "critical_marked_at", "updated_at"])
    return report


@transaction.atomic
def critical_communication_record(
    *,
    report_id: int,
    user,
    person_notified: str,
    role: str,
    method: str,
    communicated_at: datetime,
    read_back_confirmed: bool,
    at: datetime,
) -> CriticalResultCommunication:
    """Record that a critical result was communicated (ACR practice parameter: who, their role, how,
    when, and that they read it back). Marks the report critical if it was not yet."""
    report = _locked_report(report_id)
    if report.status == ReportStatus.FINAL:
        raise ReportFinal("This report is final; record the communication with an addendum.")
    _require_claimant(report.study, user)
    problems = []
    if not person_notified.strip():
        problems.append("Person notified: required")
    if not role.strip():
        problems.append("Role: required (e.g. ED attending)")
    if method not in CommunicationMethod.values:
        problems.append(f"Method: one of {', '.join(CommunicationMethod.labels)}")
    if not read_back_confirmed:
        problems.append("Read-back: the recipient must read the result back before it counts as communicated")
    if communicated_at > at + timedelta(minutes=1):
        problems.append("Communicated at: cannot be in the future")
    if problems:
        raise ReportError("The communication record is incomplete.", problems)
    if not report.is_critical:
        report.is_critical = True
        report.critical_marked_at = report.critical_marked_at or communicated_at
        report.save(update_fields=["is_critical", "critical_marked_at", "updated_at"])
    return CriticalResultCommunication.objects.create(
        report=report,
        person_notified=person_notified.strip(),
        role=role.strip(),
        method=method,
        communicated_at=communicated_at,
        read_back_confirmed=True,
        recorded_by=user,
    )


# --- re-authentication ---------------------------------------------------------------------------


def _failure_window() -> timedelta:
    return timedelta(hours=float(getattr(settings, "AXES_COOLOFF_TIME", 0.25)))


def _failure_limit() -> int:
    return int(getattr(settings, "AXES_FAILURE_LIMIT", 5))


def signing_reauthenticate(*, user, secret: str, at: datetime, report_id: int | None, address=None) -> str:
    """Check the signer's password or a current TOTP code; returns which ("password"/"totp").
    A wrong one is counted (``SigningAttempt``, in the audit log); after ``AXES_FAILURE_LIMIT`` wrong
    ones within ``AXES_COOLOFF_TIME`` signing is locked for that user until the window passes, like
    the sign-in lockout. Runs in its own transaction so the count survives the refusal."""
    since = at - _failure_window()
    failures = SigningAttempt.objects.filter(user=user, at__gt=since).count()
    if failures >= _failure_limit():
        raise SigningLocked(
            "Too many wrong passwords or codes: signing is locked for a while. "
            "Try again later or call operations."
        )
    secret = (secret or "").strip()
    if secret:
        if secret.isdigit() and len(secret) in (6, 8):
            # TOTP: verify_token refuses a code already used (django-otp keeps last_t), so a code
            # seen on the screen once cannot be replayed to sign.
            for device in devices_for_user(user, confirmed=True):
                if device.verify_token(secret):
                    return "totp"
        if user.check_password(secret):
            return "password"
    SigningAttempt.objects.create(user=user, report_id=report_id, at=at, address=address)
    left = _failure_limit() - failures - 1
    raise ReauthenticationFailed(
        "Password or authenticator code not accepted." + (f" {left} attempt(s) left." if left > 0 else "")
    )


# --- signing -------------------------------------------------------------------------------------


def report_text(content: TemplateContent, values: dict[str, str]) -> str:
    """The exact text that is signed (and sent, printed): one block per section, its title in
    capitals, a blank line between sections."""
    return "\n\n".join(f"{title.upper()}:\n{text}" for title, text in report_sections(content, values))


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _eligibility_check(user, study: Study, at: datetime) -> None:
    # Asked again at the instant of signing, not remembered from the claim: a privilege that lapsed
    # an hour ago, or a shift that ended, refuses the signature with the reason (DESIGN.md §6).
    assessment = assess(user, study, at)
    if not assessment.eligible:
        raise NotEligibleToSign("You may not sign for this study now.", assessment.messages)


def _signing_problems(report: Report, at: datetime, *, final: bool) -> list[str]:
    problems = values_problems(report_content(report), report.values, signing=True)
    if final and report.is_critical and not report.communications.exists():
        problems.append(
            "Critical result: record who was told, how and when (with read-back) "
            "before signing the final report"
        )
    return problems


def _on_commit_signal(report_id: int, kind: str, addendum_id: int | None = None) -> None:
    def send() -> None:
        for receiver, result in report_signed.send_robust(
            sender=Report, report_id=report_id, kind=kind, addendum_id=addendum_id
        ):
            if isinstance(result, Exception):
                logger.error(
                    "report_signed receiver %r failed for report %s: %r", receiver, report_id, result
                )

    transaction.on_commit(send)


def report_sign(
    *,
    report_id: int,
    user,
    secret: str,
    at: datetime,
    final: bool,
    address: str | None = None,
    ai_verdicts: dict[int, str] | None = None,
    values: dict[str, object] | None = None,
) -> Report:
    """Sign the report as preliminary (``final=False``) or final. Refusals raise ``ReportError``
    subclasses with every reason the signer must fix. ``values``: the fields on the signer's screen,
    saved under the signature's lock and signed as they are."""
    signing_reauthenticate(user=user, secret=secret, at=at, report_id=report_id, address=address)
    with transaction.atomic():
        # Locked: two tabs pressing Sign at once must not both sign (or bill) the report.
        report = _locked_report(report_id)
        study = report.study
        if report.status == ReportStatus.FINAL:
            raise ReportFinal("This report is already final. Write an addendum to correct it.")
        _require_claimant(study, user)
        if values is not None:
            # Saved in this transaction, not before it: an autosave still on its way with older text
            # (sent before the last edit, slow under load) would otherwise land between the save and
            # the signature, and the older text would be signed. Now it waits on the lock and then
            # finds the report final.
            report = report_draft_save(report_id=report_id, user=user, values=values, at=at)
        if not final:
            if not study.facility.accepts_preliminary:
                raise SigningRefused(f"{study.facility.name} does not take preliminary reads; sign it final.")
            if report.status == ReportStatus.PRELIMINARY:
                raise SigningRefused("The preliminary read is already signed; the final read follows.")
        _eligibility_check(user, study, at)
        problems = _signing_problems(report, at, final=final)
        # the reader's verdict on each AI finding (reports.ai_verdicts): required for a final read
        # where the facility says so; recorded with the signature, or not at all
        verdict_problems = ai_verdicts_record(report=report, user=user, verdicts=ai_verdicts or {}, at=at)
        problems += verdict_problems if final else [p for p in verdict_problems if "not one of" in p]
        if problems:
            raise SigningRefused("The report cannot be signed yet.", problems)
        text = report_text(report_content(report), report.values)
        report.signed_by, report.signed_at = user, at
        report.signed_text, report.signed_sha256 = text, sha256_hex(text)
        report.author = user
        if final:
            report.status = ReportStatus.FINAL
        else:
            report.status, report.preliminary_at = ReportStatus.PRELIMINARY, at
        report.save()
        kind = "final" if final else "preliminary"
        study_milestone_record(study_id=study.pk, milestone="final" if final else "prelim", at=at)  # TAT
        if final:
            _study_finalize(study)
            charge_for_final_read(report=report)
        # In this transaction: a signature and its ORU to the EMR commit together or not at all.
        report_delivery_enqueue(report=report, kind=kind)
        _on_commit_signal(report.pk, kind)
    return report


def _study_finalize(study: Study) -> None:
    """The read is final: the study leaves every worklist and the screens are told."""
    study.status = StudyStatus.FINAL
    study.save(update_fields=["status", "updated_at"])  # a save, not an update: the audit log sees it
    study_event_broadcast("finalized", study.pk)


def charge_for_final_read(*, report: Report) -> Charge:
    """The one charge for a final read: the facility's per-read rate, with the procedure code and the
    RVU routing assigned (for reader compensation and reconciliation). ``get_or_create`` on the
    study's ``charge`` row (a unique key) — a second call, a retry or an addendum never bills again."""
    study = report.study
    assignment = getattr(study, "assignment", None)
    rate = study.facility.read_rate
    charge, _ = Charge.objects.get_or_create(
        study=study,
        kind=ChargeKind.CHARGE,
        defaults={
            "facility_id": study.facility_id,
            "report": report,
            "procedure_code": study.order.procedure_code if study.order_id else "",
            "rvu": (
                assignment.rvu if assignment is not None and assignment.rvu is not None else Decimal("0")
            ),
            "rate": rate,
            "amount": rate,
            "radiologist": report.signed_by,
            "signed_at": report.signed_at,
            "posted_at": report.signed_at,
        },
    )
    return charge


class ChargeCorrectionRefused(ReportError):
    pass


class ChargeCorrectionForbidden(ChargeCorrectionRefused):
    pass


class ChargeMissing(ChargeCorrectionRefused):
    pass


class ChargeAlreadyCorrected(ChargeCorrectionRefused):
    pass


# what a correction may change; anything else is the read itself (study, report, signature)
CHARGE_CORRECTABLE = ("procedure_code", "rvu", "rate", "amount", "radiologist")


def charge_correct(
    *, charge_id: int, by, reason: str, at: datetime, void: bool = False, **changes
) -> tuple[Charge, Charge | None]:
    """Correct a billed charge with new rows, never by changing it (charges are append-only in the
    database, reports.setup): a ``reversal`` of ``charge_id`` (its amounts negated) and, unless
    ``void`` (the read is not billable at all), a ``correction`` carrying the charge's values with
    ``changes`` applied. Both reference the corrected row and carry ``reason`` and ``by``; they are
    posted ``at`` (so they appear on the invoice of that month). Only operations (the billing desk)
    may; a row already reversed, or a reversal, cannot be corrected again — correct the latest
    correction. Returns (reversal, correction or None)."""
    reason = reason.strip()
    if not has_role(by, Role.OPERATIONS):
        raise ChargeCorrectionForbidden("Only operations may correct a charge.")
    if not reason:
        raise ChargeCorrectionRefused("A correction needs a reason.", ["reason: required"])
    unknown = sorted(set(changes) - set(CHARGE_CORRECTABLE))
    if unknown:
        raise ChargeCorrectionRefused(
            "These cannot be corrected.", [f"{name}: not correctable" for name in unknown]
        )
    if void and changes:
        raise ChargeCorrectionRefused("A void reverses the charge; it changes nothing else.")
    # no row lock: SELECT … FOR UPDATE needs UPDATE, which the app role has not on charges; two
    # corrections at once are kept apart by the one-reversal-per-row constraint instead
    try:
        return _charge_correction_post(charge_id, by, reason, at, void=void, changes=changes)
    except IntegrityError as error:
        if "charge_reversed_once" not in str(error):
            raise
        raise ChargeAlreadyCorrected("This charge was already corrected: correct the latest row.") from None


def _charge_correction_post(
    charge_id: int, by, reason: str, at: datetime, *, void: bool, changes: dict
) -> tuple[Charge, Charge | None]:
    with transaction.atomic():
        original = Charge.objects.filter(pk=charge_id).first()
        if original is None:
            raise ChargeMissing("No such charge.")
        if original.kind == ChargeKind.REVERSAL:
            raise ChargeAlreadyCorrected("A reversal cannot be corrected.")
        if original.corrections.filter(kind=ChargeKind.REVERSAL).exists():
            raise ChargeAlreadyCorrected("This charge was already corrected: correct the latest row.")
        shared = {
            "facility_id": original.facility_id,
            "study_id": original.study_id,
            "report_id": original.report_id,
            "corrects": original,
            "reason": reason,
            "posted_by": by,
            "signed_at": original.signed_at,
            "posted_at": at,
        }
        reversal = Charge.objects.create(
            **shared,
            kind=ChargeKind.REVERSAL,
            procedure_code=original.procedure_code,
            rvu=-original.rvu,
            rate=-original.rate,
            amount=-original.amount,
            radiologist_id=original.radiologist_id,
        )
        correction = None
        if not void:
            values = {name: getattr(original, name) for name in CHARGE_CORRECTABLE}
            values.update(changes)
            if "rate" in changes and "amount" not in changes:
                values["amount"] = values["rate"]  # one read at the per-read rate
            correction = Charge.objects.create(**shared, kind=ChargeKind.CORRECTION, **values)
    return reversal, correction


# --- addenda ---------------------------------------------------------------------------------------


def addendum_content(*, report: Report, sequence: int, text: str, author, signed_at: datetime) -> str:
    """What an addendum's signature vouches for: the report it corrects, its number, the signer, the
    time and the text."""
    head = f"Addendum {sequence} to report {report.pk} ({report.signed_sha256})"
    return f"{head}\n{author.pk} {signed_at.isoformat()}\n{text}"


def addendum_sign(
    *, report_id: int, user, text: str, secret: str, at: datetime, address: str | None = None
) -> Addendum:
    """Append a signed addendum to a final report. The signer must be eligible for the study now (the
    same engine as signing); the original reader may be off shift, so any eligible radiologist may
    addend — the addendum names its own author."""
    text = (text or "").strip()
    if not text:
        raise ReportError("Write the addendum text first.")
    signing_reauthenticate(user=user, secret=secret, at=at, report_id=report_id, address=address)
    with transaction.atomic():
        report = _locked_report(report_id)  # serialises the sequence numbers
        if report.status != ReportStatus.FINAL:
            raise ReportError("Only a final report takes addenda; edit the report itself until it is final.")
        _eligibility_check(user, report.study, at)
        sequence = (report.addenda.aggregate(n=Max("sequence"))["n"] or 0) + 1
        content = addendum_content(report=report, sequence=sequence, text=text, author=user, signed_at=at)
        addendum = Addendum.objects.create(
            report=report,
            sequence=sequence,
            text=text,
            author=user,
            signed_at=at,
            signature=sha256_hex(content),
        )
        report_delivery_enqueue(report=report, kind="addendum", addendum=addendum)  # re-sent as C
        _on_commit_signal(report.pk, "addendum", addendum.pk)
    return addendum


# --- critical results past their deadline ----------------------------------------------------------


@dataclass(frozen=True)
class CriticalOverdue:
    report_id: int
    study_id: int
    deadline: datetime


def critical_results_escalate(*, now: datetime) -> list[CriticalOverdue]:
    """Tell operations about every critical result not communicated by its facility's deadline
    (``critical_result_minutes`` after it was marked). Each is escalated once: the flag is set by
    compare-and-set, so two overlapping sweeps (beat and a manual run) escalate it once."""
    candidates = (
        Report.objects.filter(
            is_critical=True, critical_marked_at__isnull=False, critical_escalated_at__isnull=True
        )
        .exclude(status=ReportStatus.FINAL)
        .filter(communications__isnull=True)
        .select_related("study", "study__facility")
    )
    escalated = []
    for report in candidates:
        facility = report.study.facility
        deadline = report.critical_marked_at + timedelta(minutes=facility.critical_result_minutes)
        if deadline > now:
            continue
        with transaction.atomic():
            won = Report.objects.filter(
                pk=report.pk,
                critical_escalated_at__isnull=True,
                status__in=[ReportStatus.DRAFT, ReportStatus.PRELIMINARY],
            ).update(critical_escalated_at=now)
            if not won:
                continue
            # Workflow metadata only: operations phones the reader; the page shows the study.
            operations_event_send(
                {
                    "type": "report.critical_overdue",
                    "report": report.pk,
                    "study": report.study_id,
                    "facility": facility.code,
                    "accession": report.study.accession_number,
                    "radiologist": report.author_id,
                    "marked_at": report.critical_marked_at.isoformat(),
                    "deadline": deadline.isoformat(),
                }
            )
            # and the reader who marked it, on whatever page they are (their own group only)
            user_notice_send(
                user_id=report.author_id,
                kind=NoticeKind.CRITICAL_OVERDUE,
                at=now,
                study=report.study,
                text=f"{study_line(report.study)} — communicate it (due {deadline:%H:%M} UTC)",
                url=reverse("reports:report", args=[report.study_id]),
            )
        escalated.append(CriticalOverdue(report.pk, report.study_id, deadline))
    return escalated
