"""Which final reads become peer-review cases (issue 7), as pure functions.

The base rate is the facility's (per modality where set, default 5 %). Cases where a miss costs most
are weighted up — a code stroke ×3, a trauma ×2, any CT of the head ×2 (the largest weight applies,
capped at 100 %) — so the sample over-represents the reads a medical director most needs to see.
The draw takes the random generator as an argument: production uses the operating system's, the
tests a seeded one."""

from __future__ import annotations

import random
import re
from decimal import Decimal

DEFAULT_RATE = Decimal("0.05")
WEIGHT_STROKE = 3
WEIGHT_TRAUMA = 2
WEIGHT_CT_HEAD = 2

_HEAD = re.compile(r"\b(HEAD|BRAIN|CRANI)", re.IGNORECASE)
CT_HEAD_CODES = frozenset({"70450", "70460", "70470", "70496"})


def is_ct_head(*, modalities: str, body_part: str, procedure_code: str, procedure_text: str) -> bool:
    if procedure_code in CT_HEAD_CODES:
        return True
    if "CT" not in modalities.upper().split("\\"):
        return False
    return body_part.upper() == "HEAD" or bool(_HEAD.search(procedure_text))


def review_probability(rate: Decimal, *, stroke: bool, trauma: bool, ct_head: bool) -> float:
    weight = max(
        [1]
        + [
            w
            for w, applies in ((WEIGHT_STROKE, stroke), (WEIGHT_TRAUMA, trauma), (WEIGHT_CT_HEAD, ct_head))
            if applies
        ]
    )
    return min(1.0, float(rate) * weight)


def sample_draw(probability: float, rng: random.Random) -> bool:
    return rng.random() < probability
