"""Coverage shifts: who is reading, when, and optionally for which facilities and subspecialties.

Kept minimal for credentialing's eligibility rule "on shift now" (DESIGN.md §6); routing adds
repeating templates and time off later."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class Shift(models.Model):
    """A radiologist on duty from ``starts_at`` (inclusive) to ``ends_at`` (exclusive).

    Empty ``facilities`` / ``subspecialties`` mean the shift covers every facility / subspecialty;
    otherwise it covers only the ones listed (e.g. a neuro call shift for the stroke centres)."""

    # No reverse accessor on User (query ``Shift.objects.filter(radiologist=…)``): django-auditlog
    # would list a reverse relation as a field of every user change.
    radiologist = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    facilities = models.ManyToManyField("facilities.Facility", blank=True, related_name="shifts")
    subspecialties = models.ManyToManyField("credentialing.Subspecialty", blank=True, related_name="shifts")
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["starts_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="shift_ends_after_start"),
        ]
        indexes = [models.Index(fields=["starts_at", "ends_at"], name="shift_window_idx")]

    def __str__(self) -> str:
        return f"{self.radiologist} {self.starts_at:%Y-%m-%d %H:%M}–{self.ends_at:%H:%M} UTC"
