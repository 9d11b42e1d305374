"""Sampling: 5 % by default, weighted up for stroke, trauma and CT head, within tolerance over
10,000 simulated reads with a fixed seed; never one's own case."""

import random
from decimal import Decimal

import pytest

from qa.models import PeerReview, ReviewOrigin, ReviewStatus, SamplingRate
from qa.sampling import is_ct_head, review_probability, sample_draw
from qa.services import peer_review_sample, report_review_probability


def _sampled_share(probability: float, reads: int = 10_000, seed: int = 20261129) -> float:
    rng = random.Random(seed)
    return sum(sample_draw(probability, rng) for _ in range(reads)) / reads


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, 0.05),
        ({"stroke": True}, 0.15),
        ({"trauma": True}, 0.10),
        ({"ct_head": True}, 0.10),
        ({"stroke": True, "ct_head": True}, 0.15),  # the largest weight, not the product
    ],
)
def test_sampled_share_over_ten_thousand_reads(flags, expected):
    probability = review_probability(
        Decimal("0.05"), **{"stroke": False, "trauma": False, "ct_head": False, **flags}
    )
    assert probability == pytest.approx(expected)
    # binomial sd at 10k reads is ≤ 0.36 %; 1 % is ~3 sd
    assert _sampled_share(probability) == pytest.approx(expected, abs=0.01)


def test_weight_never_exceeds_certainty():
    assert review_probability(Decimal("0.5"), stroke=True, trauma=False, ct_head=False) == 1.0


def test_ct_head_recognised_by_code_or_by_ct_of_the_head():
    assert is_ct_head(modalities="CT", body_part="", procedure_code="70450", procedure_text="")
    assert is_ct_head(modalities="CT\\SR", body_part="HEAD", procedure_code="", procedure_text="")
    assert is_ct_head(modalities="CT", body_part="", procedure_code="", procedure_text="CT BRAIN PERFUSION")
    assert not is_ct_head(modalities="MR", body_part="HEAD", procedure_code="", procedure_text="MRI BRAIN")


@pytest.mark.django_db
def test_facility_rate_per_modality_and_sampled_case_never_goes_to_its_reader(
    chicago, neuro_readers, head_ct_read
):
    # given Lakeshore samples every CT
    SamplingRate.objects.create(facility=chicago, modality="CT", rate=Decimal("1"))
    assert report_review_probability(head_ct_read) == 1.0
    # when the read is sampled
    review = peer_review_sample(report_id=head_ct_read.pk, rng=random.Random(1))
    # then another neuro reader reviews it, and sampling the same read again opens nothing
    assert review.origin == ReviewOrigin.SAMPLED and review.status == ReviewStatus.ASSIGNED
    assert review.reviewer in neuro_readers[1:] and review.reviewer != head_ct_read.signed_by
    assert peer_review_sample(report_id=head_ct_read.pk, rng=random.Random(1)) is None
    assert PeerReview.objects.filter(report=head_ct_read).count() == 1
