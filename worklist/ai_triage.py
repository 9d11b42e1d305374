"""AI triage: what a positive AI finding does to a study's place on the worklist (docs/ai.md).

Per facility, ``AiTriageRule`` rows say e.g. "ICH positive → STAT, first within STAT", "LVO positive
on a CTA → STROKE", "PE positive → first within its class". The evidence behind it: a flag alone did
not shorten the wait for ICH-positive studies, moving them up the list did (O'Neill et al. 2021).

* Rules only raise: a class below the study's is ignored, nothing lowers a class or a rank.
* Every change is a ``StudyEvent`` (*ai_reranked*) with its because:
  ``AI: Aidoc BriefCase ICH 2.1 positive (p=0.93) → STAT``.
* A study someone already holds is not moved (the reader is reading it); its holder is told over
  their own live channel (``study.ai_result``) and an *ai_notified* event records that.

The study's row and its routing row are locked first (``select_for_update``), so a claim racing the
result either lands before (→ the holder is told) or after (→ the reader claims the re-ranked study);
the claim's compare-and-set waits on the same routing row lock."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from facilities.models import PriorityClass
from imaging.models import OPEN_STUDY_STATUSES, AiFinding, AiResult, Study
from worklist.broadcast import Before, StudyChange, group_event_send, study_changes_broadcast
from worklist.clock import sla_deadline
from worklist.escalation import escalation_change, escalation_readers, stroke_alert_fire
from worklist.groups import user_group
from worklist.models import AiTriageRule, StudyAssignment, StudyEvent, StudyEventKind
from worklist.services import _more_urgent, study_route

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TriageOutcome:
    kind: str  # reranked · notified · unchanged
    because: str = ""


def _rule_applies(rule: AiTriageRule, finding: AiFinding, study: Study) -> bool:
    if not finding.present or finding.code_value not in rule.finding_codes:
        return False
    if rule.min_probability is not None and (finding.probability or 0) < rule.min_probability:
        return False
    if rule.modality and rule.modality.upper() not in study.modalities.split("\\"):
        return False
    if rule.procedure_pattern:
        text = " ".join([study.order.procedure_text if study.order_id else "", study.description])
        if not re.search(rule.procedure_pattern, text, re.IGNORECASE):
            return False
    return True


def _because(result: AiResult, finding: AiFinding, target: str) -> str:
    return f"AI: {result.algorithm} {finding.label} → {target}"


def triage_plan(result: AiResult, study: Study) -> list[tuple[AiTriageRule, AiFinding]]:
    """The (rule, finding) pairs that fire for this result, most urgent raise first."""
    rules = list(AiTriageRule.objects.filter(facility_id=study.facility_id, active=True))
    hits = [(rule, f) for f in result.findings.all() for rule in rules if _rule_applies(rule, f, study)]
    return sorted(hits, key=lambda hit: (0 if hit[0].raise_to else 1, hit[0].raise_to or "", hit[0].pk))


@transaction.atomic
def ai_result_triage(*, result_id: int, at: datetime | None = None) -> TriageOutcome:
    """Apply the facility's triage rules to one AI result (idempotent: a re-run raises nothing more)."""
    at = at or timezone.now()
    result = AiResult.objects.select_related("study").get(pk=result_id)
    study = (
        Study.objects.select_for_update(of=("self",))
        .select_related("facility", "order")
        .get(pk=result.study_id, facility_id=result.facility_id)  # never another facility's study
    )
    if study.status not in OPEN_STUDY_STATUSES:
        return TriageOutcome("unchanged")
    hits = triage_plan(result, study)
    if not hits:
        return TriageOutcome("unchanged")
    assignment = StudyAssignment.objects.select_for_update().filter(study=study).first()
    priority, rank = study.priority, study.triage_rank
    reasons = []
    for rule, finding in hits:
        target = rule.raise_to if rule.raise_to and _more_urgent(rule.raise_to, priority) else ""
        first = rule.rank_first and rank != 0
        if target:
            priority = target
        if first:
            rank = 0
        if target or first:
            label = (target or priority) + (", first within its class" if first and not target else "")
            label = f"{target}, first within {target}" if target and rule.rank_first else label
            reasons.append(_because(result, finding, label))
    if not reasons:
        return TriageOutcome("unchanged")
    because = "; ".join(reasons)
    if assignment is not None and assignment.claimed_by_id:
        return _holder_notify(study, result, assignment, because, at)
    before = Before(listed=bool(assignment and assignment.routed_at), priority=study.priority)
    changes = {
        "priority": {"from": study.priority, "to": priority},
        "triage_rank": {"from": study.triage_rank, "to": rank},
    }
    study.priority, study.triage_rank = priority, rank
    study.save(update_fields=["priority", "triage_rank", "updated_at"])
    if assignment is not None and assignment.routed_at:
        # a raised class has the class's (shorter) turnaround target
        assignment.sla_deadline = sla_deadline(study)
        assignment.save(update_fields=["sla_deadline"])
    StudyEvent.objects.create(
        study=study,
        kind=StudyEventKind.AI_RERANKED,
        at=at,
        detail={"because": because, "ai_result": result.pk, "changes": changes, "priority": priority},
    )
    if assignment is not None and assignment.routed_at:
        changes = [StudyChange("updated", {"because": because}, before)]
        alert = stroke_alert_fire(study=study, at=at, announce=False)  # LVO → STROKE: the alert, once
        eligible = None
        if alert is not None:
            changes.append(escalation_change(alert))
            eligible = escalation_readers(alert)  # computed after the re-rank: one pass (docs/alerts.md)
        study_changes_broadcast(study.pk, changes, eligible=eligible)
    elif priority == PriorityClass.STROKE:
        # Not routed yet (the result came before or with the images): a code stroke the AI found is
        # routed now, as one flagged by its order or DICOM is at its first image — not after the
        # quiet period. Routing keeps the raised class and rank and fires the code-stroke alert.
        study_route(study_id=study.pk, at=at)
    return TriageOutcome("reranked", because)


def _holder_notify(
    study: Study, result: AiResult, assignment: StudyAssignment, because: str, at
) -> TriageOutcome:
    """The holder is reading it already: tell them what the AI found instead of moving the study."""
    holder = assignment.claimed_by_id
    findings = [f.label for f in result.findings.all() if f.present]
    StudyEvent.objects.create(
        study=study,
        kind=StudyEventKind.AI_NOTIFIED,
        at=at,
        detail={"because": because, "ai_result": result.pk, "holder": holder, "not_moved": True},
    )
    group_event_send(
        user_group(holder),
        {
            "type": "study.ai_result",
            "study": {"id": study.pk, "accession": study.accession_number, "facility": study.facility.code},
            "algorithm": result.algorithm,
            "findings": findings,
            "because": because,
        },
    )
    return TriageOutcome("notified", because)


def on_ai_result_recorded(sender, result_id: int, **kwargs) -> None:
    """Receiver of ``imaging.signals.ai_result_recorded`` (after ingest's commit): a failure here must
    not reach the sender, whose object is already stored; log it."""
    try:
        ai_result_triage(result_id=result_id)
    except Exception:
        logger.exception("AI triage of result %s failed", result_id)
