"""The built-in default procedure catalogue (rows with no facility), ensured after every ``migrate``
(and after the test runner's flush, which empties tables but re-sends post_migrate).

Missing rows are created; existing ones are left as they are, so an edit operations made to a default
rule survives the next deploy. RVUs are approximate professional-component work RVUs."""

from __future__ import annotations

from decimal import Decimal

from auditlog.context import disable_auditlog
from django.db import DEFAULT_DB_ALIAS

from credentialing.models import Subspecialty
from credentialing.setup import subspecialties_ensure
from facilities.models import PriorityClass
from worklist.models import CatalogueRule

N, M, B, C, BR = (
    Subspecialty.NEURO,
    Subspecialty.MSK,
    Subspecialty.BODY,
    Subspecialty.CHEST,
    Subspecialty.BREAST,
)

# code: (description, modality, body part, subspecialty, RVU, default priority, stroke protocol)
DEFAULT_CODES: dict[str, tuple[str, str, str, str, str, str, bool]] = {
    "70450": ("CT head/brain without contrast", "CT", "HEAD", N, "0.85", "", False),
    "70496": ("CTA head", "CT", "HEAD", N, "1.75", PriorityClass.STAT, True),
    "70498": ("CTA neck", "CT", "NECK", N, "1.75", PriorityClass.STAT, True),
    "70551": ("MRI brain without contrast", "MR", "BRAIN", N, "1.48", "", False),
    "70553": ("MRI brain without and with contrast", "MR", "BRAIN", N, "2.29", "", False),
    "73721": ("MRI knee without contrast", "MR", "KNEE", M, "1.35", "", False),
    "73221": ("MRI shoulder without contrast", "MR", "SHOULDER", M, "1.35", "", False),
    "74177": ("CT abdomen and pelvis with contrast", "CT", "ABDOMEN", B, "1.82", "", False),
    "74176": ("CT abdomen and pelvis without contrast", "CT", "ABDOMEN", B, "1.74", "", False),
    "71045": ("XR chest, 1 view", "DX", "CHEST", C, "0.18", "", False),
    "71046": ("XR chest, 2 views", "DX", "CHEST", C, "0.22", "", False),
    "71260": ("CT chest with contrast", "CT", "CHEST", C, "1.16", "", False),
    "71250": ("CT chest without contrast", "CT", "CHEST", C, "1.02", "", False),
    "77067": ("Screening mammography, bilateral", "MG", "BREAST", BR, "0.76", "", False),
    "76856": ("US pelvis, complete", "US", "PELVIS", B, "0.69", "", False),
}

# pattern: (rank, body part, subspecialty, RVU) — for procedures without a known code
DEFAULT_PATTERNS: dict[str, tuple[int, str, str, str]] = {
    r"\bMAMMO|\bBREAST": (10, "BREAST", BR, "0.76"),
    r"KNEE|SHOULDER|\bHIP\b|ANKLE|WRIST|ELBOW": (20, "", M, "1.00"),
    r"HEAD|BRAIN|\bNECK|ORBIT|SINUS|SPINE": (30, "", N, "1.00"),
    # chest/abdomen/pelvis together is a body study: abdomen before chest
    r"\bABD|PELVI|LIVER|RENAL|KIDNEY": (40, "", B, "1.00"),
    r"CHEST|THORAX|\bLUNG": (50, "CHEST", C, "0.50"),
}


def catalogue_defaults_ensure(using: str = DEFAULT_DB_ALIAS) -> None:
    # Reference data shipped with the code, not someone's edit: no audit rows for the seeding (later
    # edits to these rows by operations are audited as usual).
    with disable_auditlog():
        _ensure(using)


def _ensure(using: str) -> None:
    subspecialties_ensure(using)  # worklist migrates before credentialing: make sure they exist
    subs = {s.code: s for s in Subspecialty.objects.using(using).all()}
    defaults = CatalogueRule.objects.using(using).filter(facility__isnull=True)
    for code, (note, modality, body_part, sub, rvu, priority, stroke) in DEFAULT_CODES.items():
        defaults.get_or_create(
            procedure_code=code,
            defaults={
                "note": note,
                "modality": modality,
                "body_part": body_part,
                "subspecialty": subs[sub],
                "rvu": Decimal(rvu),
                "priority": priority,
                "stroke_protocol": stroke,
            },
        )
    for pattern, (rank, body_part, sub, rvu) in DEFAULT_PATTERNS.items():
        defaults.get_or_create(
            procedure_code="",
            description_pattern=pattern,
            defaults={"rank": rank, "body_part": body_part, "subspecialty": subs[sub], "rvu": Decimal(rvu)},
        )


def on_post_migrate(sender, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    catalogue_defaults_ensure(using)
