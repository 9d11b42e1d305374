"""``manage.py onboard_facility FILE``: a hospital's YAML file becomes its Facility and interface settings,
idempotently; an invalid file changes nothing and says which key is wrong (issue 3, DESIGN.md §5)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from auditlog.models import LogEntry
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from facilities import onboarding
from facilities.models import DEFAULT_SLA_MINUTES, DicomSender, Facility, FacilityKind, Hl7Sender
from facilities.onboarding import InvalidFacilitySpec, facility_onboard, facility_yaml_load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "facility.example.yaml"

pytestmark = pytest.mark.django_db


def example() -> dict:
    """The shipped example as data, to edit per test."""
    return copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))


def write(tmp_path: Path, data: dict | str, name: str = "hospital.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def onboard(path: Path, *args: str) -> str:
    out = StringIO()
    call_command("onboard_facility", str(path), *args, stdout=out)
    return out.getvalue()


def onboard_refused(path: Path, *args: str) -> str:
    with pytest.raises(CommandError) as refused:
        onboard(path, *args)
    return str(refused.value)


def senders(facility: Facility) -> set[tuple[str, str]]:
    return set(facility.hl7_senders.values_list("sending_application", "sending_facility"))


def ae_titles(facility: Facility) -> dict[str, str]:
    return dict(facility.dicom_senders.values_list("ae_title", "description"))


def nothing_written() -> bool:
    return not (Facility.objects.exists() or Hl7Sender.objects.exists() or DicomSender.objects.exists())


# --- creating and updating ---------------------------------------------------------------------------


def test_the_shipped_example_creates_its_facility():
    # when the example in deploy/ is onboarded as shipped
    output = onboard(EXAMPLE)
    # then Birch Lake exists with every setting of the file
    birch = Facility.objects.get(code="WI-BIRCHLAKE")
    assert output.startswith("Created WI-BIRCHLAKE (Birch Lake Memorial Hospital):")
    assert (birch.name, birch.state, birch.timezone) == (
        "Birch Lake Memorial Hospital",
        "WI",
        "America/Chicago",
    )
    assert birch.kind == FacilityKind.CRITICAL_ACCESS and birch.active
    assert (birch.hl7_outbound_host, birch.hl7_outbound_port) == ("hl7.birchlake-memorial.example.org", 6661)
    assert (birch.hl7_accession_fallback, birch.hl7_expected_gap_minutes) == ("filler", 240)
    assert birch.hl7_report_history  # its RIS's ORU^R01 are report history (docs/priors.md)
    assert (birch.study_quiet_seconds, birch.dicom_expected_gap_minutes) == (120, 480)
    # overridden SLA targets, and the defaults for the classes the contract leaves alone
    assert (birch.sla_stat_minutes, birch.sla_routine_minutes) == (45, 2880)
    assert birch.sla_stroke_minutes == DEFAULT_SLA_MINUTES["STROKE"]
    assert birch.accepts_general_readers
    assert (birch.stroke_readers_minutes, birch.stroke_director_minutes) == (2, 5)
    assert (birch.accepts_preliminary, birch.critical_result_minutes, str(birch.read_rate)) == (
        False,
        30,
        "38.50",
    )
    assert birch.escalation_webhook_url == "https://pager.birchlake.example.org/readroom/stroke"
    assert (birch.routing_mode, birch.claim_timeout_minutes) == ("push", 20)
    assert birch.screen_lock_minutes == 10  # the contract's screen lock (docs/alerts.md)
    assert senders(birch) == {("MEDITECH", "BLMH"), ("MT_ADT", "BLMH")}
    assert ae_titles(birch) == {
        "BLMH_CT1": "GE Revolution EVO CT, emergency department",
        "BLMH_CR1": "Portable X-ray",
        "BLMH_PACS": "",
    }
    assert "hl7.senders: added MEDITECH^BLMH" in output
    assert "dicom.calling_ae_titles: added BLMH_CR1 (Portable X-ray)" in output


def test_the_example_and_the_module_document_every_key():
    text, docstring = EXAMPLE.read_text(), onboarding.__doc__
    keys = (
        *onboarding.TOP_KEYS,
        *onboarding.HL7_KEYS,
        *onboarding.HL7_SENDER_KEYS,
        *onboarding.OUTBOUND_KEYS,
        *onboarding.DICOM_KEYS,
        *onboarding.AE_TITLE_KEYS,
        *onboarding.READING_KEYS,
        *onboarding.ESCALATION_KEYS,
        *onboarding.REPORTING_KEYS,
        *onboarding.PRIORS_KEYS,
        *onboarding.PATIENT_KEYS,
        *onboarding.AI_KEYS,
        *onboarding.AI_RULE_KEYS,
    )
    for key in keys:
        assert f"{key}:" in text, key
        assert f"{key}:" in docstring, key


def test_running_the_same_file_again_changes_nothing(tmp_path):
    # given Birch Lake onboarded from its file
    onboard(EXAMPLE)
    audit_rows = LogEntry.objects.count()
    # when the same file is run again
    output = onboard(EXAMPLE)
    # then nothing changed: no duplicate rows, no audit rows, and the command says so
    assert "WI-BIRCHLAKE (Birch Lake Memorial Hospital): unchanged" in output
    assert Facility.objects.count() == 1
    assert (Hl7Sender.objects.count(), DicomSender.objects.count()) == (2, 3)
    assert LogEntry.objects.count() == audit_rows


def test_an_edited_file_updates_the_facility_and_lists_the_changes(tmp_path):
    # given Birch Lake onboarded from the example
    onboard(EXAMPLE)
    # when the hospital is renamed, gets an ultrasound, drops its ADT feed and a tighter STAT target
    edited = example()
    edited["name"] = "Birch Lake Regional Hospital"
    edited["dicom"]["calling_ae_titles"].append({"ae_title": "BLMH_US1", "description": "Ultrasound"})
    edited["hl7"]["senders"] = [{"application": "MEDITECH", "facility": "BLMH"}]
    edited["sla_minutes"]["STAT"] = 40
    output = onboard(write(tmp_path, edited))
    # then exactly those changes are made and listed
    assert output.splitlines() == [
        "Updated WI-BIRCHLAKE (Birch Lake Regional Hospital):",
        "  name: 'Birch Lake Memorial Hospital' → 'Birch Lake Regional Hospital'",
        "  sla_minutes.STAT: 45 → 40",
        "  hl7.senders: removed MT_ADT^BLMH",
        "  dicom.calling_ae_titles: added BLMH_US1 (Ultrasound)",
    ]
    birch = Facility.objects.get(code="WI-BIRCHLAKE")
    assert (birch.name, birch.sla_stat_minutes) == ("Birch Lake Regional Hospital", 40)
    assert senders(birch) == {("MEDITECH", "BLMH")}
    assert set(ae_titles(birch)) == {"BLMH_CT1", "BLMH_CR1", "BLMH_PACS", "BLMH_US1"}
    # and the sender changes are in the audit log next to the facility's
    assert LogEntry.objects.get_for_model(Hl7Sender).filter(action=LogEntry.Action.DELETE).count() == 1
    update = LogEntry.objects.get_for_object(birch).get(action=LogEntry.Action.UPDATE)
    assert update.changes_dict["name"] == ["Birch Lake Memorial Hospital", "Birch Lake Regional Hospital"]
    # and running the edited file again changes nothing more
    assert "unchanged" in onboard(tmp_path / "hospital.yaml")


def test_a_key_left_out_goes_back_to_its_default(tmp_path):
    # given Birch Lake with its STAT override and ORU endpoint
    onboard(EXAMPLE)
    # when the contract drops the override and the endpoint is removed from the file
    edited = example()
    del edited["sla_minutes"]["STAT"]
    del edited["hl7"]["outbound"]
    output = onboard(write(tmp_path, edited))
    # then the file is the truth: the default target is back and no endpoint is configured
    birch = Facility.objects.get(code="WI-BIRCHLAKE")
    assert birch.sla_stat_minutes == DEFAULT_SLA_MINUTES["STAT"]
    assert (birch.hl7_outbound_host, birch.hl7_outbound_port) == ("", None)
    assert f"sla_minutes.STAT: 45 → {DEFAULT_SLA_MINUTES['STAT']}" in output
    assert "hl7.outbound.port: 6661 → (none)" in output


def test_the_service_reports_its_result_and_records_the_actor(ops_omar):
    # when operations onboards Birch Lake through the service, then runs it again
    first = facility_onboard(spec=example(), actor=ops_omar)
    again = facility_onboard(spec=example(), actor=ops_omar)
    # then
    assert (first.status, again.status, again.changes) == ("created", "unchanged", ())
    created = LogEntry.objects.get_for_object(first.facility).get(action=LogEntry.Action.CREATE)
    assert created.actor == ops_omar


def test_the_actor_option_names_the_author_in_the_audit_log(ops_omar):
    before = LogEntry.objects.count()  # ops_omar's own creation is logged too, without an actor
    onboard(EXAMPLE, "--actor", "ops_omar")
    assert {entry.actor for entry in LogEntry.objects.order_by("pk")[before:]} == {ops_omar}
    assert "no user 'nobody'" in onboard_refused(EXAMPLE, "--actor", "nobody")


# --- invalid files -----------------------------------------------------------------------------------


# what onboarding says a web source's auth may be (facilities.models._web_auth_problems), as written
AUTH_FORMS = (
    "{type: basic, username, password_env}, {type: bearer, token_env} or "
    "{type: smart_backend, client_id, key_env, kid[, alg, scope, token_url]}"
)


def _set(path: str, value):
    """An edit of the example: set the value at a dotted path ('hl7.senders.1.application')."""

    def edit(data: dict) -> None:
        *parents, last = path.split(".")
        for part in parents:
            data = data[int(part)] if isinstance(data, list) else data.setdefault(part, {})
        data[int(last) if isinstance(data, list) else last] = value

    return edit


def _drop(path: str):
    def edit(data: dict) -> None:
        *parents, last = path.split(".")
        for part in parents:
            data = data[int(part)] if isinstance(data, list) else data[part]
        del data[int(last) if isinstance(data, list) else last]

    return edit


def _rename(old: str, new: str):
    def edit(data: dict) -> None:
        data[new] = data.pop(old)

    return edit


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (_drop("hl7.senders.1.application"), "hl7.senders[1].application: required"),
        (_drop("name"), "name: required"),
        (_set("state", "XX"), "state: 'XX' is not a US state (e.g. IL, WI)"),
        (_set("timezone", "Central"), "timezone: 'Central' is not an IANA time zone"),
        (_set("kind", "hospital"), "kind: 'hospital' is not one of level1_trauma, level2_trauma, community"),
        (_set("code", "wi-birchlake"), "code: 'wi-birchlake' is not valid: 2–32 characters: capital letters"),
        (_set("code", 42), "code: must be text, not a number: put it in quotes"),
        (_set("active", "yes"), "active: must be true or false, not 'yes'"),
        (
            _set("dicom.calling_ae_titles.0", "TOO_LONG_AE_TITLE_X"),
            "dicom.calling_ae_titles[0]: 'TOO_LONG_AE_TITLE_X' is longer than 16 characters",
        ),
        (
            _set("dicom.calling_ae_titles.2", "CT\\1"),
            "dicom.calling_ae_titles[2]: 'CT\\1' is not valid: 1–16 printable characters, no backslash",
        ),
        (
            _set("dicom.calling_ae_titles.1.ae_title", "BLMH_CT1"),
            "dicom.calling_ae_titles[1]: 'BLMH_CT1' is listed twice (also dicom.calling_ae_titles[0])",
        ),
        (
            _set("hl7.senders.1", {"application": "meditech", "facility": "blmh"}),
            "hl7.senders[1]: meditech^blmh is the same sender as hl7.senders[0] (case is ignored)",
        ),
        (
            _set("hl7.senders.0.application", "MEDITECH^RAD"),
            "hl7.senders[0].application: 'MEDITECH^RAD' contains an HL7 delimiter",
        ),
        (_set("hl7.senders", {"application": "X"}), "hl7.senders: must be a list"),
        (_rename("sla_minutes", "slamins"), "unknown key 'slamins' (did you mean 'sla_minutes'?)"),
        (_set("hl7.outbund", {}), "hl7: unknown key 'outbund' (did you mean 'outbound'?)"),
        (_set("sla_minutes.STROKE", 0), "sla_minutes.STROKE: must be a positive whole number of minutes"),
        (
            _set("reading.screen_lock_minutes", "10"),
            "reading.screen_lock_minutes: must be a positive whole number of minutes",
        ),
        (_set("sla_minutes.STROKE", 12.5), "sla_minutes.STROKE: must be a positive whole number of minutes"),
        (_set("sla_minutes.STROKE", "20"), "sla_minutes.STROKE: must be a positive whole number of minutes"),
        (_set("sla_minutes.stroke", 15), "sla_minutes: unknown key 'stroke' (did you mean 'STROKE'?)"),
        (
            _set("dicom.study_quiet_seconds", 2),
            "dicom.study_quiet_seconds: must be a whole number of seconds, at least 5",
        ),
        (
            _set("hl7.accession_fallback", "obr18"),
            "hl7.accession_fallback: 'obr18' is not one of filler, placer, none",
        ),
        (_drop("hl7.outbound.port"), "hl7.outbound.port: required when hl7.outbound.host is given"),
        (_set("hl7.outbound.port", 70000), "hl7.outbound.port: must be a whole number from 1 to 65535"),
        (
            _set("hl7.outbound.host", "tcp://engine:6661"),
            "hl7.outbound.host: 'tcp://engine:6661' is not a host name",
        ),
        (
            _set("reading.accepts_general_readers", 1),
            "reading.accepts_general_readers: must be true or false",
        ),
        (_set("reporting.read_rate", "cheap"), 'reporting.read_rate: must be an amount such as "38.50"'),
        (_set("reporting.read_rate", "-1"), "reporting.read_rate: "),
        (_set("reporting.oru_addenda_as_nte", "yes"), "reporting.oru_addenda_as_nte: must be true or false"),
        (
            _set("dicom.move_destinations.0.port", 0),
            "dicom.move_destinations: [0].port: a port number 1–65535",
        ),
        (
            _set("priors.sources.0.method", "ftp"),
            "priors.sources: [0].method: one of c-move, c-get, dicomweb, fhir",
        ),
        (  # a FHIR source's token in the file itself: it must name an environment variable
            _set("priors.sources.1.auth", {"type": "bearer", "token": "eyJhbGciOi"}),
            "priors.sources: [1].auth: " + AUTH_FORMS,
        ),
        (  # the worker would send ReadRoom's own secret to the source's server
            _set("priors.sources.1.auth", {"type": "bearer", "token_env": "SECRET_KEY"}),
            "priors.sources: [1].auth: SECRET_KEY is one of ReadRoom's own secrets; name a variable of this "
            "source's",
        ),
        (
            _set("priors.sources.1.base_url", "fhir.birchlake.example.org/r4"),
            "priors.sources: [1].base_url: an http(s) URL",
        ),
        (
            _set("priors.sources.1.patient_identifier_system", "BLMH|MRN"),
            "priors.sources: [1].patient_identifier_system: an absolute URI (e.g. urn:oid:…), fhir only",
        ),
        (  # the MRN system means something to a FHIR source only
            _set("priors.sources.0.patient_identifier_system", "urn:oid:1.2.3"),
            "priors.sources: [0].patient_identifier_system: an absolute URI (e.g. urn:oid:…), fhir only",
        ),
        (
            _set("priors.sources.0.count", 0),
            "priors.sources: [0].count: a positive whole number",
        ),
        (  # a DICOMweb source's password in the file itself: it must name an environment variable
            _set(
                "priors.sources.0",
                {
                    "name": "VNA",
                    "method": "dicomweb",
                    "base_url": "https://vna.example.org/dicom-web",
                    "auth": {"type": "basic", "username": "readroom", "password": "hunter2"},
                },
            ),
            "priors.sources: [0].auth: " + AUTH_FORMS,
        ),
        (  # a SMART private key in the file itself: it must name an environment variable
            _set(
                "priors.sources.1.auth",
                {
                    "type": "smart_backend",
                    "client_id": "rr",
                    "kid": "k1",
                    "key": "-----BEGIN PRIVATE KEY-----",
                },
            ),
            "priors.sources: [1].auth: " + AUTH_FORMS,
        ),
        (  # a type that is no name (a YAML list) is refused like any other shape, not a crash
            _set("priors.sources.1.auth", {"type": ["bearer"], "token_env": "BLMH_FHIR_TOKEN"}),
            "priors.sources: [1].auth: " + AUTH_FORMS,
        ),
        (  # SMART servers accept RS384 and ES384; anything else would be refused at the token endpoint
            _set(
                "priors.sources.1.auth",
                {
                    "type": "smart_backend",
                    "client_id": "rr",
                    "kid": "k1",
                    "key_env": "BLMH_KEY",
                    "alg": "HS256",
                },
            ),
            "priors.sources: [1].auth.alg: RS384 or ES384",
        ),
        (
            _set(
                "priors.sources.1.auth",
                {"type": "smart_backend", "client_id": "rr", "kid": "k1", "key_env": "SECRET_KEY"},
            ),
            "priors.sources: [1].auth: SECRET_KEY is one of ReadRoom's own secrets; name a variable of this "
            "source's",
        ),
        (
            _set(
                "priors.sources.1.auth",
                {
                    "type": "smart_backend",
                    "client_id": "rr",
                    "kid": "k1",
                    "key_env": "K",
                    "token_url": "ldap://x",
                },
            ),
            "priors.sources: [1].auth.token_url: an http(s) URL (or leave it out: the base's "
            "smart-configuration names it)",
        ),
    ],
)
def test_an_invalid_file_is_refused_naming_the_key_and_writes_nothing(tmp_path, edit, problem):
    # given the example with one mistake
    data = example()
    edit(data)
    # when it is onboarded, then it is refused with the key and the problem, and nothing is written
    message = onboard_refused(write(tmp_path, data))
    assert "1 problem, nothing was changed" in message
    assert f"\n  {problem}" in message
    assert nothing_written()


def test_every_problem_is_reported_at_once(tmp_path, chicago):
    # given a file with five mistakes, one of them a sender that Chicago already uses
    Hl7Sender.objects.create(facility=chicago, sending_application="EPIC_RAD", sending_facility="LAKESHORE")
    data = example()
    data["state"] = "Wisconsin"
    data["slamins"] = data.pop("sla_minutes")
    data["hl7"]["senders"].append({"facility": "BLMH"})
    data["hl7"]["senders"].append({"application": "EPIC_RAD", "facility": "LAKESHORE"})
    data["dicom"]["calling_ae_titles"][0] = "TOO_LONG_AE_TITLE_X"
    # when it is onboarded, then all five are listed, in the order of the file
    message = onboard_refused(write(tmp_path, data))
    assert message.splitlines()[1:] == [
        "  state: 'Wisconsin' is not a US state (e.g. IL, WI)",
        "  hl7.senders[2].application: required",
        "  dicom.calling_ae_titles[0]: 'TOO_LONG_AE_TITLE_X' is longer than 16 characters",
        "  unknown key 'slamins' (did you mean 'sla_minutes'?)",
        "  hl7.senders: EPIC_RAD^LAKESHORE already belongs to Lakeshore Medical Center (CHI-L1)",
    ]
    assert "5 problems" in message
    assert Facility.objects.count() == 1 and Hl7Sender.objects.count() == 1


def test_an_invalid_edit_leaves_the_facility_as_it_was(tmp_path):
    # given Birch Lake onboarded
    onboard(EXAMPLE)
    # when an edit renames it but also has a wrong time zone
    data = example()
    data["name"] = "Renamed"
    data["timezone"] = "CST"
    onboard_refused(write(tmp_path, data))
    # then nothing of the edit was applied
    assert Facility.objects.get(code="WI-BIRCHLAKE").name == "Birch Lake Memorial Hospital"


def test_a_yaml_syntax_error_reports_its_line(tmp_path):
    text = EXAMPLE.read_text().replace("state: WI", "state: WI\n  timezone: America/Chicago", 1)
    line = text.splitlines().index("  timezone: America/Chicago") + 1
    message = onboard_refused(write(tmp_path, text))
    assert f"YAML syntax error at line {line}" in message
    assert nothing_written()


def test_a_key_given_twice_is_refused_rather_than_silently_overridden(tmp_path):
    # YAML itself would keep the last `hl7:` and lose the senders of the first without a word
    text = EXAMPLE.read_text() + "\nhl7:\n  accession_fallback: placer\n"
    message = onboard_refused(write(tmp_path, text))
    assert "key 'hl7' is given twice (first at line" in message
    assert nothing_written()


def test_a_file_that_is_not_one_facility_is_refused(tmp_path):
    assert "the file is empty" in onboard_refused(write(tmp_path, ""))
    assert "not a list" in onboard_refused(write(tmp_path, "- code: WI-BIRCHLAKE\n"))
    assert "cannot read it" in onboard_refused(tmp_path / "missing.yaml")


def test_a_sender_or_ae_title_of_another_facility_is_refused_naming_it(tmp_path, chicago):
    # given Lakeshore (Chicago) already sends as EPIC_RAD^LAKESHORE and from LAKESHORE_CT1
    Hl7Sender.objects.create(facility=chicago, sending_application="EPIC_RAD", sending_facility="LAKESHORE")
    DicomSender.objects.create(facility=chicago, ae_title="LAKESHORE_CT1")
    # when Birch Lake's file claims them (the sender in other letter case: the listener ignores case)
    data = example()
    data["hl7"]["senders"].append({"application": "epic_rad", "facility": "Lakeshore"})
    data["dicom"]["calling_ae_titles"].append("LAKESHORE_CT1")
    message = onboard_refused(write(tmp_path, data))
    # then both are refused naming Lakeshore, and they stay Lakeshore's
    assert "hl7.senders: epic_rad^Lakeshore already belongs to Lakeshore Medical Center (CHI-L1)" in message
    assert (
        "dicom.calling_ae_titles: 'LAKESHORE_CT1' already belongs to Lakeshore Medical Center (CHI-L1)"
        in message
    )
    assert not Facility.objects.filter(code="WI-BIRCHLAKE").exists()
    assert Hl7Sender.objects.get().facility == chicago and DicomSender.objects.get().facility == chicago


def test_catalogue_overrides_become_the_facilitys_rules_and_route_its_studies(tmp_path):
    from worklist.catalogue import catalogue_match
    from worklist.models import CatalogueRule

    # given the example, whose overrides map a local code and an extremity pattern
    onboard(write(tmp_path, example()))
    birch = Facility.objects.get(code="WI-BIRCHLAKE")
    rules = {
        r.procedure_code or r.description_pattern: r for r in CatalogueRule.objects.filter(facility=birch)
    }
    assert set(rules) == {"IMG123", "EXTREMITY|ANKLE"}
    assert (rules["IMG123"].subspecialty.code, str(rules["IMG123"].rvu)) == ("neuro", "0.85")
    match = catalogue_match(birch.pk, "IMG123", ["whatever"])
    assert match.subspecialty_code == "neuro" and match.rule_id == rules["IMG123"].pk
    # when a rule is dropped from the file and another changed, then exactly the file's rules remain
    data = example()
    data["catalogue_overrides"] = [{"procedure_code": "IMG123", "subspecialty": "general", "rvu": "0.85"}]
    result = onboard(write(tmp_path, data))
    assert "catalogue_overrides: removed /EXTREMITY|ANKLE/" in result
    assert "catalogue_overrides: IMG123 changed" in result
    assert list(
        CatalogueRule.objects.filter(facility=birch).values_list("procedure_code", "subspecialty__code")
    ) == [("IMG123", "general")]


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"subspecialty": "neuro"}, "catalogue_overrides[0]: Give a procedure code or a description pattern"),
        (
            {"procedure_code": "1", "subspecialty": "dentistry"},
            "catalogue_overrides[0].subspecialty: 'dentistry'",
        ),
        ({"description_pattern": "KNEE(", "subspecialty": "msk"}, "Not a valid pattern"),
        ({"procedure_code": "1", "subspecialty": "msk", "colour": "red"}, "unknown key 'colour'"),
    ],
)
def test_an_invalid_catalogue_rule_is_refused_naming_it(tmp_path, rule, problem):
    data = example()
    data["catalogue_overrides"] = [rule]
    message = onboard_refused(write(tmp_path, data))
    assert problem in message
    assert nothing_written()


# --- dry run -----------------------------------------------------------------------------------------


def test_dry_run_shows_the_changes_and_writes_nothing(tmp_path):
    # a new facility: shown as it would be created, nothing written
    output = onboard(EXAMPLE, "--dry-run")
    assert output.startswith(
        "Dry run, nothing written. WI-BIRCHLAKE (Birch Lake Memorial Hospital) would be created:"
    )
    assert "  hl7.senders: added MEDITECH^BLMH" in output
    assert nothing_written() and not LogEntry.objects.exists()
    # an edit of an existing facility: shown as it would be updated, nothing written
    onboard(EXAMPLE)
    audit_rows = LogEntry.objects.count()
    data = example()
    data["sla_minutes"]["ROUTINE"] = 1440
    data["dicom"]["calling_ae_titles"].pop()
    output = onboard(write(tmp_path, data), "--dry-run")
    assert output.splitlines() == [
        "Dry run, nothing written. WI-BIRCHLAKE (Birch Lake Memorial Hospital) would be updated:",
        "  sla_minutes.ROUTINE: 2880 → 1440",
        "  dicom.calling_ae_titles: removed BLMH_PACS",
    ]
    birch = Facility.objects.get(code="WI-BIRCHLAKE")
    assert birch.sla_routine_minutes == 2880 and "BLMH_PACS" in ae_titles(birch)
    assert LogEntry.objects.count() == audit_rows


def test_dry_run_of_an_invalid_file_is_refused_too(tmp_path):
    data = example()
    data["state"] = "XX"
    assert "state: 'XX' is not a US state" in onboard_refused(write(tmp_path, data), "--dry-run")


# --- the real command line ---------------------------------------------------------------------------


def _database_url() -> str:
    """The test database, for a manage.py process of its own."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    credentials = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)  # the subprocess must see (and write) committed rows
def test_the_command_exits_zero_when_onboarded_and_non_zero_when_refused(tmp_path):
    env = {**os.environ, "DATABASE_URL": _database_url(), "READROOM_DATA_DIR": str(tmp_path)}
    env["DJANGO_SETTINGS_MODULE"] = "radiology.settings.test"

    def run(path: Path) -> subprocess.CompletedProcess:
        command = [sys.executable, "manage.py", "onboard_facility", str(path)]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    created = run(EXAMPLE)
    assert created.returncode == 0, created.stderr
    assert "Created WI-BIRCHLAKE" in created.stdout
    assert Facility.objects.filter(code="WI-BIRCHLAKE").exists()

    data = example()
    data["timezone"] = "Central"
    refused = run(write(tmp_path, data))
    assert refused.returncode == 1
    assert "timezone: 'Central' is not an IANA time zone" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_escalation_times_and_webhook_are_read_and_checked(tmp_path):
    # given a file whose director step comes at 4 minutes and whose webhook is not a URL
    text = EXAMPLE.read_text().replace("stroke_director_minutes: 5", "stroke_director_minutes: 4")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("https://pager.birchlake.example.org/readroom/stroke", "not a url"))
    # when it is onboarded, then the webhook is refused by its key path and nothing is written
    with pytest.raises(InvalidFacilitySpec) as refused:
        facility_onboard(spec=facility_yaml_load(bad.read_text()))
    assert any(p.startswith("escalation.webhook_url") for p in refused.value.problems), refused.value.problems
    assert nothing_written()
    # and with a good URL the times are set
    good = tmp_path / "good.yaml"
    good.write_text(text)
    facility_onboard(spec=facility_yaml_load(good.read_text()))
    assert Facility.objects.get(code="WI-BIRCHLAKE").stroke_director_minutes == 4


def test_move_destinations_and_prior_sources_are_kept_as_listed(tmp_path):
    onboard(write(tmp_path, example()))
    facility = Facility.objects.get(code="WI-BIRCHLAKE")
    assert facility.dicom_move_destinations == [
        {"ae_title": "BLMH_PACS", "host": "pacs.birchlake.example.org", "port": 104}
    ]
    pacs, ehr = facility.prior_sources
    assert (pacs["method"], pacs["called_ae_title"], pacs["count"]) == ("c-move", "BLMH_PACS", 3)
    # the FHIR report source: its URL, the *name* of the variable holding its token, its MRN system
    assert (ehr["method"], ehr["base_url"], ehr["count"]) == (
        "fhir",
        "https://fhir.birchlake.example.org/r4",
        5,
    )
    assert ehr["auth"] == {"type": "bearer", "token_env": "BLMH_FHIR_TOKEN"}
    assert ehr["patient_identifier_system"] == "urn:oid:2.16.840.1.113883.3.5150"


def test_the_patient_identity_domain_and_orderless_wait_are_kept(tmp_path):
    onboard(write(tmp_path, example()))
    facility = Facility.objects.get(code="WI-BIRCHLAKE")
    assert (facility.patient_id_authority, facility.patient_id_issuers) == (
        "BLMH",
        ["BLMH_PACS", "BIRCHLAKE_MRN"],
    )
    assert facility.orderless_wait_minutes == 20
    # the PACS's issuer, an empty issuer and the code name the domain; another hospital's does not
    assert {facility.patient_authority(i) for i in ("blmh_pacs", "", "WI-BIRCHLAKE", "BLMH")} == {"BLMH"}
    assert facility.patient_authority("ST_ELSEWHERE") == "ST_ELSEWHERE"


def test_addenda_go_as_obx_unless_the_file_asks_for_nte(tmp_path):
    # given the example as shipped (the key says false) and the same file without the key
    onboard(EXAMPLE)
    assert Facility.objects.get(code="WI-BIRCHLAKE").oru_addenda_as_nte is False
    # when the hospital's EMR wants addenda as result comments
    data = example()
    data["reporting"]["oru_addenda_as_nte"] = True
    output = onboard(write(tmp_path, data))
    # then the facility sends them as NTE, and the change is listed under its key path
    assert Facility.objects.get(code="WI-BIRCHLAKE").oru_addenda_as_nte is True
    assert "reporting.oru_addenda_as_nte: false → true" in output
    # and a file without the key goes back to the default
    del data["reporting"]["oru_addenda_as_nte"]
    onboard(write(tmp_path, data))
    assert Facility.objects.get(code="WI-BIRCHLAKE").oru_addenda_as_nte is False


def test_a_bad_issuer_list_is_refused_with_its_path(tmp_path):
    data = example()
    data["patients"]["issuers"] = "BLMH_PACS"
    assert "patients.issuers" in onboard_refused(write(tmp_path, data))


def test_an_old_us_cart_may_send_the_retired_us_class_and_only_those_uids_are_valid(tmp_path):
    data = example()
    cart = {"ae_title": "BLMH_US1", "retired_sop_classes": ["1.2.840.10008.5.1.4.1.1.6"]}
    data["dicom"]["calling_ae_titles"].append(cart)
    onboard(write(tmp_path, data))
    retired = dict(DicomSender.objects.values_list("ae_title", "retired_sop_classes"))
    assert retired["BLMH_US1"] == ["1.2.840.10008.5.1.4.1.1.6"] and retired["BLMH_CT1"] == []
    # a change to the list is applied and listed
    cart["retired_sop_classes"] = ["1.2.840.10008.5.1.4.1.1.6", "1.2.840.10008.5.1.4.1.1.3"]
    assert "BLMH_US1 retired_sop_classes" in onboard(write(tmp_path, data))
    assert len(DicomSender.objects.get(ae_title="BLMH_US1").retired_sop_classes) == 2
    # CT Image Storage is not retired: refused with its path
    cart["retired_sop_classes"] = ["1.2.840.10008.5.1.4.1.1.2"]
    assert "dicom.calling_ae_titles[3].retired_sop_classes" in onboard_refused(write(tmp_path, data))


def test_the_ai_section_sets_the_verdict_settings_and_the_triage_rules(tmp_path):
    from worklist.models import AiTriageRule

    # given the example, with its AI settings and three triage rules
    onboard(write(tmp_path, example()))
    birch = Facility.objects.get(code="WI-BIRCHLAKE")
    assert (birch.ai_verdict_required, birch.ai_verdict_in_oru, birch.ai_ppv_alert_threshold) == (
        True,
        False,
        0.5,
    )
    rules = {r.name: r for r in AiTriageRule.objects.filter(facility=birch)}
    assert set(rules) == {
        "ICH positive → STAT, first",
        "LVO positive on a CTA → STROKE",
        "PE positive → first within its class",
    }
    lvo = rules["LVO positive on a CTA → STROKE"]
    assert (lvo.finding_codes, lvo.modality, lvo.procedure_pattern, lvo.raise_to, lvo.rank_first) == (
        ["20059004"],
        "CT",
        r"\bCTA\b|ANGIO",
        "STROKE",
        True,
    )
    assert rules["PE positive → first within its class"].min_probability == 0.5
    # the same file again changes nothing
    assert "unchanged" in onboard(write(tmp_path, example()))
    # when a rule is dropped and another changed, exactly the file's rules remain
    data = example()
    data["ai"]["triage_rules"] = [
        {"name": "ICH positive → STAT, first", "finding_codes": ["274100004"], "raise_to": "STROKE"}
    ]
    result = onboard(write(tmp_path, data))
    assert "ai.triage_rules: removed 'PE positive → first within its class'" in result
    assert "ai.triage_rules: 'ICH positive → STAT, first' changed (finding_codes, raise_to)" in result
    assert list(AiTriageRule.objects.filter(facility=birch).values_list("name", "raise_to")) == [
        ("ICH positive → STAT, first", "STROKE")
    ]
    # and without triage_rules the admin's rules are left as they are
    data = example()
    del data["ai"]["triage_rules"]
    onboard(write(tmp_path, data))
    assert AiTriageRule.objects.filter(facility=birch).count() == 1


@pytest.mark.parametrize(
    ("ai", "problem"),
    [
        ({"ppv_alert_threshold": 80}, "ai.ppv_alert_threshold: must be a share from 0 to 1"),
        ({"verdict_required": "yes"}, "ai.verdict_required: must be true or false"),
        ({"triage_rules": [{"name": "x", "raise_to": "STAT"}]}, "ai.triage_rules[0].finding_codes: required"),
        (
            {"triage_rules": [{"name": "x", "finding_codes": ["1"], "raise_to": "SOON"}]},
            "ai.triage_rules[0].raise_to",
        ),
        (
            {"triage_rules": [{"name": "x", "finding_codes": ["1"], "rank_first": False}]},
            "must raise the class, rank first",
        ),
        (
            {"triage_rules": [{"name": "x", "finding_codes": ["1"], "procedure_pattern": "CTA("}]},
            "Not a valid pattern",
        ),
        ({"triage_rules": [{"name": "x", "finding_codes": ["1"], "colour": "red"}]}, "unknown key 'colour'"),
        (
            {"triage_rules": [{"name": "x", "finding_codes": ["1"]}, {"name": "x", "finding_codes": ["2"]}]},
            "listed twice",
        ),
        (
            {"triage_rules": [{"name": "x", "finding_codes": ["1"], "min_probability": 1.5}]},
            "min_probability: must be a share",
        ),
    ],
)
def test_an_invalid_ai_section_is_refused_naming_the_key(tmp_path, ai, problem):
    data = example()
    data["ai"] = ai
    message = onboard_refused(write(tmp_path, data))
    assert problem in message, message
    assert not Facility.objects.filter(code="WI-BIRCHLAKE").exists()


def test_allow_lists_and_the_oru_tls_are_read_and_checked(tmp_path):
    data = example()
    data["hl7"]["allowed_networks"] = ["10.20.0.0/16"]
    data["hl7"]["outbound"]["tls"] = {"ca_file": "/etc/readroom/tls/ca.pem"}
    data["dicom"]["allowed_networks"] = ["10.20.0.0/16", "192.0.2.15"]
    onboard(write(tmp_path, data))
    facility = Facility.objects.get(code="WI-BIRCHLAKE")
    assert facility.hl7_allowed_networks == ["10.20.0.0/16"]
    assert facility.dicom_allowed_networks == ["10.20.0.0/16", "192.0.2.15"]
    assert facility.hl7_outbound_tls == {"ca_file": "/etc/readroom/tls/ca.pem"}
    # a typo in a network, a client certificate without its key: refused, each under its key path
    data["dicom"]["allowed_networks"] = ["10.20.1.5/16"]
    data["hl7"]["allowed_networks"] = "10.20.0.0/16"
    data["hl7"]["outbound"]["tls"] = {"cert_file": "/etc/readroom/tls/client.pem"}
    refused = onboard_refused(write(tmp_path, data))
    assert "dicom.allowed_networks" in refused and "'10.20.1.5/16' is not an address or network" in refused
    assert "hl7.allowed_networks: must be a list" in refused
    assert "hl7.outbound.tls: cert_file and key_file go together" in refused
    # and the facility is as it was
    assert Facility.objects.get(code="WI-BIRCHLAKE").dicom_allowed_networks == ["10.20.0.0/16", "192.0.2.15"]


def test_an_address_is_allowed_only_inside_a_listed_network():
    from facilities.models import address_allowed

    assert address_allowed([], "198.51.100.7")  # no list: any address
    assert address_allowed(["10.20.0.0/16"], "10.20.3.4")
    assert address_allowed(["10.20.0.0/16"], "::ffff:10.20.3.4")  # a dual-stack socket's IPv4 peer
    assert not address_allowed(["10.20.0.0/16"], "10.21.0.1")
    assert not address_allowed(["10.20.0.0/16"], "not-an-address")
    assert address_allowed(["2001:db8::/32"], "2001:db8::5")
