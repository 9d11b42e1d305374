"""Which of a source's answers are fetched (docs/priors.md "Relevance"): the source's limits — how many,
how far back, which modalities and body parts — else the current procedure's modality and the body
parts its text names; newest first; never a study already here. Pure: the C-FIND / QIDO-RS answers
as the clients read them."""

from __future__ import annotations

from datetime import date

from imaging.priors import Candidate, relevance, relevant_pick

TODAY = date(2026, 12, 2)


def chest_ct(uid: str, study_date: str) -> Candidate:
    return Candidate(uid, study_date, ("CT",), "CT CHEST WO CONTRAST")


ANSWER = [
    chest_ct("1", "20261101"),
    chest_ct("2", "20250601"),
    chest_ct("3", "20240101"),
    chest_ct("4", "20230101"),
    chest_ct("5", "20190101"),  # older than five years
    Candidate("6", "20261001", ("CT",), "CT HEAD WO CONTRAST"),
    Candidate("7", "20261002", ("CR",), "XR CHEST 2 VIEWS"),
]


def picked(source: dict, *, modality: str = "CT", text: str = "CT CHEST W CONTRAST", exclude=()) -> list[str]:
    modalities, parts = relevance(source, modality=modality, procedure_text=text)
    chosen = relevant_pick(
        source, ANSWER, modalities=modalities, body_parts=parts, today=TODAY, exclude=set(exclude)
    )
    return [c.study_instance_uid for c in chosen]


def test_the_default_is_the_three_newest_of_the_same_modality_and_body_part_within_five_years():
    assert picked({}) == ["1", "2", "3"]


def test_count_and_lookback_limit_what_is_fetched():
    assert picked({"count": 1}) == ["1"]
    assert picked({"count": 10}) == ["1", "2", "3", "4"]  # the 2019 one is past the default 1825 days
    assert picked({"count": 10, "lookback_days": 365}) == ["1"]
    assert picked({"count": 10, "lookback_days": 3650}) == ["1", "2", "3", "4", "5"]


def test_the_sources_modalities_and_body_parts_replace_the_procedures():
    # a chest X-ray counts for a chest CT where the source says CR is relevant too
    assert picked({"count": 10, "modalities": ["CT", "CR"]}) == ["1", "7", "2", "3", "4"]
    assert picked({"body_parts": ["HEAD"]}) == ["6"]
    # without a source list: the current procedure's modality and the body parts its text names
    assert picked({}, modality="CR", text="XR CHEST 2 VIEWS") == ["7"]
    assert picked({}, text="CT HEAD WO CONTRAST") == ["6"]


def test_a_study_already_here_is_never_fetched_again():
    assert picked({}, exclude={"1"}) == ["2", "3", "4"]
