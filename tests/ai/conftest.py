"""The cast of the AI-results tests: Lakeshore's triage rules (as its onboarding YAML sets them)."""

from __future__ import annotations

import pytest

from tests.interfaces.conftest import (  # noqa: F401  (the real SCP and MLLP listener fixtures)
    _inbox_connection_reset,
    chicago_interfaces,
    dicom_scp,
    dicom_scp_server,
    hl7_listener,
    image_store,
)
from tests.reports.conftest import claimed_head_ct, ct_head_template  # noqa: F401  (the signing cast)
from tests.worklist.conftest import neuro_reader  # noqa: F401
from worklist.models import AiTriageRule

ICH_CODES = ["274100004", "RID4700"]  # SNOMED CT cerebral hemorrhage / RadLex ICH
PE_CODES = ["59282003"]
LVO_CODES = ["20059004"]


@pytest.fixture
def lakeshore_ai_rules(chicago):
    return [
        AiTriageRule.objects.create(
            facility=chicago, name="ICH positive → STAT, first", finding_codes=ICH_CODES, raise_to="STAT"
        ),
        AiTriageRule.objects.create(
            facility=chicago,
            name="LVO positive on a CTA → STROKE",
            finding_codes=LVO_CODES,
            procedure_pattern=r"\bCTA\b|ANGIO",
            raise_to="STROKE",
        ),
        AiTriageRule.objects.create(
            facility=chicago, name="PE positive → first within its class", finding_codes=PE_CODES
        ),
    ]
