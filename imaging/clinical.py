"""Clinical rules that ingest applies: HL7 priority → priority class, code stroke and trauma
detection (DESIGN.md §6). Pure functions; facility-specific rules come with the procedure catalogue."""

from __future__ import annotations

import re

from facilities.models import PriorityClass

# HL7 priority (OBR-5 / ORC-7.6 / TQ1-9, table 0485): S stat, A ASAP, R routine, P pre-op,
# C callback, T timing critical. Pre-op and callback are worked like ASAP; timing-critical like STAT.
HL7_PRIORITY_CLASS: dict[str, PriorityClass] = {
    "S": PriorityClass.STAT,
    "A": PriorityClass.ASAP,
    "R": PriorityClass.ROUTINE,
    "P": PriorityClass.ASAP,
    "C": PriorityClass.ASAP,
    "T": PriorityClass.STAT,
}

# An explicit activation, never a bare "stroke": "history of stroke, follow-up MRI" is routine.
_STROKE_ACTIVATION = re.compile(
    r"\b(CODE[\s_-]*STROKE|STROKE[\s_-]*(ALERT|PROTOCOL|ACTIVATION)|TELE[\s_-]?STROKE|BRAIN[\s_-]*ATTACK)\b",
    re.IGNORECASE,
)
_STROKE_WORD = re.compile(r"\b(STROKE|CVA|LVO|TPA|THROMBECTOMY)\b", re.IGNORECASE)
# Stroke-protocol procedures (CPT): CT perfusion, CTA head, CTA neck. STAT plus a stroke word on
# one of these is a stroke work-up even without the activation phrase.
STROKE_PROTOCOL_CODES = frozenset({"0042T", "70496", "70498"})
_TRAUMA = re.compile(r"\b(TRAUMA|LEVEL[\s_-]*(1|I)\b|MVC|GSW)", re.IGNORECASE)


def priority_class_for(priority_code: str) -> PriorityClass:
    return HL7_PRIORITY_CLASS.get((priority_code or "R").strip().upper()[:1], PriorityClass.ROUTINE)


def stroke_detected(
    *, procedure_code: str = "", texts: tuple[str, ...] = (), priority_code: str = ""
) -> bool:
    joined = " ".join(t for t in texts if t)
    if _STROKE_ACTIVATION.search(joined):
        return True
    is_stat = priority_class_for(priority_code) == PriorityClass.STAT
    return is_stat and procedure_code.upper() in STROKE_PROTOCOL_CODES and bool(_STROKE_WORD.search(joined))


def trauma_detected(*, patient_class: str = "", texts: tuple[str, ...] = ()) -> bool:
    """Trauma activations come from the emergency department (PV1-2 = E)."""
    return patient_class.upper() == "E" and bool(_TRAUMA.search(" ".join(t for t in texts if t)))


def order_priority_class(
    *, priority_code: str, procedure_code: str, texts: tuple[str, ...], patient_class: str
) -> tuple[PriorityClass, bool]:
    """(priority class, is stroke) for an order."""
    if stroke_detected(procedure_code=procedure_code, texts=texts, priority_code=priority_code):
        return PriorityClass.STROKE, True
    if trauma_detected(patient_class=patient_class, texts=texts):
        return PriorityClass.TRAUMA, False
    return priority_class_for(priority_code), False
