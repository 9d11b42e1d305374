"""Ingest's announcements to routing. Sent after the transaction commits, with ``study_id``.

* ``study_routable``: a study may be routed now — its images are complete, or it is a stroke
  study and its first image has arrived (DESIGN.md §4).
* ``study_cancelled``: the order was cancelled; routing takes it off worklists unless it was read.
"""

from django.dispatch import Signal

study_routable = Signal()
study_cancelled = Signal()
# ``ai_result_recorded``: an AI result was linked to a study (``imaging.ai``), with ``result_id``;
# routing's triage rules act on it (worklist.ai_triage).
ai_result_recorded = Signal()

# A reader opened a study's images (imaging.views._read_begun): kwargs study, user, session_key.
# The FHIRcast hub (interfaces.fhircast) publishes ImagingStudy-open to the session's topic.
study_opened = Signal()
# The reader left a study without signing it (imaging.views.study_close: the report editor's or the
# viewer's page went away — a beacon on page hide): kwargs study, user, session_key. The FHIRcast hub
# publishes ImagingStudy-close to the session's topic (signing publishes its own close).
study_closed = Signal()

# An image's decode check ran (imaging.services.instance_display_check, in a worker after the
# commit): kwargs instance (Instance), part10 (its decrypted bytes, read once for the check),
# dataset (those bytes parsed once by the check; None when they are no readable DICOM).
# DICOMweb writes the instance's metadata side-car from them (interfaces.dicom.metadata_sidecar),
# so a viewer's first metadata request does not convert 300 headers to JSON while the reader waits.
instance_display_checked = Signal()
