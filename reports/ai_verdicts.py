"""The reader's verdict on each AI finding at signing (docs/ai.md): agree / disagree / not assessable,
required before a final signature where the facility says so (``Facility.ai_verdict_required``).
Kept with the report; it goes out in the ORU only where the facility asks (``ai_verdict_in_oru``)."""

from __future__ import annotations

from datetime import datetime

from imaging.models import AiFinding, Study
from reports.models import AiVerdict, AiVerdictChoice, Report

VERDICT_FIELD = "ai_verdict_"  # + the finding's id: the sign form's radio groups


def study_ai_findings(study: Study) -> list[AiFinding]:
    """Every finding the study's AI results reported (positive and negative), oldest first."""
    return list(
        AiFinding.objects.filter(result__study=study, result__facility_id=study.facility_id)
        .select_related("result")
        .order_by("result__received_at", "id")
    )


def verdicts_posted(post) -> dict[int, str]:
    """{finding id: verdict} from the sign form; anything else in the form is ignored."""
    verdicts = {}
    for key, value in post.items():
        if key.startswith(VERDICT_FIELD) and key[len(VERDICT_FIELD) :].isdigit() and value:
            verdicts[int(key[len(VERDICT_FIELD) :])] = value
    return verdicts


def ai_verdicts_record(*, report: Report, user, verdicts: dict[int, str], at: datetime) -> list[str]:
    """Record the verdicts given (a later one replaces an earlier one); the problems that stop a
    signature: an unknown verdict, and — where required — a finding without one."""
    findings = {f.pk: f for f in study_ai_findings(report.study)}
    problems = []
    for finding_id, verdict in verdicts.items():
        if finding_id not in findings:
            problems.append(f"AI finding {finding_id} is not one of this study's")
        elif verdict not in AiVerdictChoice.values:
            problems.append(f"AI verdict {verdict!r}: agree, disagree or not assessable")
        else:
            AiVerdict.objects.update_or_create(
                report=report,
                finding_id=finding_id,
                defaults={"verdict": verdict, "given_by": user, "given_at": at},
            )
    if report.study.facility.ai_verdict_required:
        given = set(AiVerdict.objects.filter(report=report).values_list("finding_id", flat=True))
        problems += [
            f"AI finding {f.label} ({f.result.algorithm}): agree, disagree or not assessable"
            for pk, f in findings.items()
            if pk not in given
        ]
    return problems
