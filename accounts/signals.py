"""What accounts announces to the apps above it.

* ``screen_locked`` / ``screen_unlocked`` (``accounts.screen_lock``): a session's screen was locked
  (docs/alerts.md "Screen lock") or unlocked; kwargs ``user``, ``session_key``. The FHIRcast hub
  (``interfaces.fhircast``) closes the session's context for its subscribers on the lock and opens
  it again on the unlock."""

from django.dispatch import Signal

screen_locked = Signal()
screen_unlocked = Signal()
