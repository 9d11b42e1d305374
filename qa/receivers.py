"""QA's side of signing: a final read may become a peer-review case; an addendum may meet the
medical director's request for one."""

from __future__ import annotations

import logging

from django.utils import timezone

from qa.services import adjudication_addendum_signed, peer_review_sample

logger = logging.getLogger(__name__)


def on_report_signed(sender, report_id: int, kind: str, **kwargs) -> None:
    # Sent after the signature committed: a failure here must not undo or fail the signing.
    try:
        if kind == "final":
            peer_review_sample(report_id=report_id)
        elif kind == "addendum":
            adjudication_addendum_signed(report_id=report_id, at=timezone.now())
    except Exception:
        logger.exception("peer-review handling of report %s (%s) failed", report_id, kind)
