"""Peer review is confidential and audited: every create and change of a review, an adjudication or
a sampling rate is a django-auditlog row (who, when, before/after)."""

from accounts.audit import audit_register
from qa.models import Adjudication, PeerReview, SamplingRate

for _model in (PeerReview, Adjudication, SamplingRate):
    audit_register(_model)
