"""The procedure catalogue: the default rows are there after migrate, and precedence is
facility code > default code > facility pattern > default pattern."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from credentialing.models import Subspecialty
from facilities.models import PriorityClass
from worklist.catalogue import catalogue_match
from worklist.models import CatalogueRule
from worklist.setup import DEFAULT_CODES, DEFAULT_PATTERNS, catalogue_defaults_ensure

pytestmark = pytest.mark.django_db


def test_default_catalogue_is_seeded_after_migrate():
    defaults = CatalogueRule.objects.filter(facility__isnull=True)
    assert set(defaults.exclude(procedure_code="").values_list("procedure_code", flat=True)) == set(
        DEFAULT_CODES
    )
    assert defaults.filter(procedure_code="").count() == len(DEFAULT_PATTERNS)
    stroke = defaults.get(procedure_code="70496")
    assert stroke.stroke_protocol and stroke.subspecialty.code == Subspecialty.NEURO


def test_seeding_is_idempotent_and_keeps_edits():
    rule = CatalogueRule.objects.get(facility__isnull=True, procedure_code="70450")
    rule.rvu = Decimal("0.99")
    rule.save()
    before = CatalogueRule.objects.count()
    catalogue_defaults_ensure()
    catalogue_defaults_ensure()
    assert CatalogueRule.objects.count() == before
    assert CatalogueRule.objects.get(pk=rule.pk).rvu == Decimal("0.99")


@pytest.mark.parametrize(
    ("code", "description", "expected"),
    [
        ("70450", "CT HEAD W/O CONTRAST", "neuro"),
        ("70498", "", "neuro"),
        ("70553", "", "neuro"),
        ("73721", "", "msk"),
        ("73221", "", "msk"),
        ("74177", "", "body"),
        ("74176", "", "body"),
        ("71045", "", "chest"),
        ("71046", "", "chest"),
        ("71260", "", "chest"),
        ("71250", "", "chest"),
        ("77067", "", "breast"),
        ("76856", "", "body"),
        (" 70551 ", "", "neuro"),  # codes are trimmed
        ("", "MRI KNEE WITHOUT CONTRAST", "msk"),
        ("", "mri left knee", "msk"),  # case-insensitive
        ("", "CT HEAD WO", "neuro"),
        ("", "MR BRAIN W WO", "neuro"),
        ("", "XR CHEST 2 VIEWS", "chest"),
        ("", "CT CHEST ABD PELVIS W CONTRAST", "body"),  # abdomen ranks before chest
        ("99999", "CT HEAD", "neuro"),  # unknown code: the pattern decides
        ("73721", "CT HEAD", "msk"),  # a known code beats any pattern
    ],
)
def test_default_catalogue(code, description, expected):
    match = catalogue_match(None, code, description)
    assert match is not None and match.subspecialty_code == expected


def test_no_match():
    assert catalogue_match(None, "00000", "SOMETHING ELSE") is None
    assert catalogue_match(None, "", "") is None


def test_precedence_table(chicago, prairie):
    subs = {s.code: s for s in Subspecialty.objects.all()}
    # Lakeshore reads its CT heads as general/ER and calls its hand studies "UE EXTREMITY"
    CatalogueRule.objects.create(facility=chicago, procedure_code="70450", subspecialty=subs["general"])
    CatalogueRule.objects.create(facility=chicago, description_pattern="EXTREMITY", subspecialty=subs["msk"])
    CatalogueRule.objects.create(facility=chicago, description_pattern="HEAD", subspecialty=subs["general"])
    cases = [
        # facility, code, description → subspecialty, source, matched_on
        (chicago, "70450", "", "general", "facility", "code"),  # 1. facility code
        (prairie, "70450", "", "neuro", "default", "code"),  # the rule is Lakeshore's only
        (chicago, "70496", "CT HEAD", "neuro", "default", "code"),  # 2. default code beats facility pattern
        (chicago, "", "CT HEAD", "general", "facility", "pattern"),  # 3. facility pattern beats default
        (prairie, "", "CT HEAD", "neuro", "default", "pattern"),  # 4. default pattern
        (chicago, "", "XR UE EXTREMITY", "msk", "facility", "pattern"),
        (prairie, "", "XR UE EXTREMITY", None, None, None),
    ]
    for facility, code, description, sub, source, on in cases:
        match = catalogue_match(facility, code, description)
        got = (match.subspecialty_code, match.source, match.matched_on) if match else (None, None, None)
        assert got == (sub, source, on), (facility.code, code, description)


def test_because_says_which_rule(chicago):
    match = catalogue_match(chicago, "70496", "")
    assert match.because == "procedure code 70496 (default catalogue rule)"
    assert match.stroke_protocol and match.priority == PriorityClass.STAT
    match = catalogue_match(chicago, "", ["", "MRI KNEE LT"])
    assert match.because.startswith("description “MRI KNEE LT” matches /KNEE|")


def test_descriptions_are_tried_in_order():
    # the order's procedure text first, then the DICOM study description
    assert catalogue_match(None, "", ["XR CHEST", "CT HEAD"]).subspecialty_code == "chest"
    assert catalogue_match(None, "", ["UNKNOWN", "CT HEAD"]).subspecialty_code == "neuro"


def test_a_rule_has_a_code_or_a_pattern(chicago):
    neuro = Subspecialty.objects.get(code="neuro")
    rule = CatalogueRule(facility=chicago, procedure_code="1", description_pattern="X", subspecialty=neuro)
    with pytest.raises(ValidationError):
        rule.full_clean()
    with pytest.raises(ValidationError):
        CatalogueRule(facility=chicago, description_pattern="(", subspecialty=neuro).full_clean()
    with pytest.raises(IntegrityError):
        CatalogueRule.objects.create(facility=None, procedure_code="70450", subspecialty=neuro)


def test_seeding_is_not_audited_but_edits_are():
    from auditlog.models import LogEntry

    assert not LogEntry.objects.get_for_model(CatalogueRule).exists()
    rule = CatalogueRule.objects.get(facility__isnull=True, procedure_code="71046")
    rule.rvu = Decimal("0.25")
    rule.save()
    assert LogEntry.objects.get_for_object(rule).count() == 1
