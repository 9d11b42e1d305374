"""The demo rota for ``make demo``: repeating shift templates, so some reader is on shift whatever the
day and hour — subspecialists on weekdays, a general/ER reader every day, a nighthawk every night —
and one deliberate gap: nobody covers Lakeview (WI) on Sunday nights, so the coverage grid shows red.

Idempotent: templates are keyed by reader and name, and materialisation leaves existing shifts
alone. Call it after the demo users, facilities and credentials exist."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time, timedelta
from zoneinfo import ZoneInfo

from django.utils import timezone

from accounts.models import User
from credentialing.models import Subspecialty
from facilities.models import Facility
from worklist.coverage import shift_templates_materialise
from worklist.models import ShiftTemplate

WEEKDAYS = (0, 1, 2, 3, 4)
EVERY_DAY = (0, 1, 2, 3, 4, 5, 6)


@dataclass(frozen=True)
class DemoTemplate:
    username: str
    name: str
    weekdays: tuple[int, ...]
    start: time
    end: time
    facilities: tuple[str, ...] = ()  # empty: wherever the reader is privileged
    subspecialties: tuple[str, ...] = ()


ROTA = (
    DemoTemplate("dr.neuro", "Neuro days", WEEKDAYS, time(7), time(17), ("CHI-L1", "IL-PRAIRIE"), ("neuro",)),
    DemoTemplate("dr.body", "Body days", WEEKDAYS, time(7), time(17), ("CHI-L1",), ("body",)),
    DemoTemplate("dr.chest", "Chest days", WEEKDAYS, time(7), time(17), ("CHI-L1",), ("chest",)),
    DemoTemplate("dr.peds", "Paediatric days", WEEKDAYS, time(8), time(16), ("CHI-L1",), ("pediatric",)),
    DemoTemplate("dr.msk", "MSK days", WEEKDAYS, time(7), time(17), ("CHI-L1", "WI-LAKEVIEW"), ("msk",)),
    DemoTemplate("dr.breast", "Breast days", WEEKDAYS, time(8), time(16), ("WI-LAKEVIEW",), ("breast",)),
    # weekends included: the general/ER reader by day, the nighthawk by night, at every facility …
    DemoTemplate("dr.er", "ER days", EVERY_DAY, time(7), time(19), ("CHI-L1", "IL-PRAIRIE", "WI-LAKEVIEW")),
    DemoTemplate("dr.nighthawk", "Nighthawk", EVERY_DAY, time(19), time(7), ("CHI-L1", "IL-PRAIRIE")),
    # the locum (credentialing.demo AWAITING_VERIFICATION): on the rota, covering nothing until verified
    DemoTemplate("dr.locum", "Locum days", WEEKDAYS, time(7), time(19), ("CHI-L1",)),
    # … except Lakeview on Sunday night (19:00 Sunday to 07:00 Monday): the deliberate red in the grid
    DemoTemplate(
        "dr.nighthawk", "Nighthawk Lakeview", (0, 1, 2, 3, 4, 5), time(19), time(7), ("WI-LAKEVIEW",)
    ),
)
ZONE = "America/Chicago"


def rota_demo_load(today: date | None = None) -> int:
    """Create (or keep) the demo templates and materialise them; returns how many shifts were new."""
    today = today or timezone.localdate(timezone=ZoneInfo(ZONE))  # the demo hospitals' date
    users = {u.username: u for u in User.objects.filter(username__in={t.username for t in ROTA})}
    facilities = {f.code: f for f in Facility.objects.all()}
    subspecialties = {s.code: s for s in Subspecialty.objects.all()}
    for spec in ROTA:
        if spec.username not in users:
            continue
        rota_line = {
            "weekdays": list(spec.weekdays),
            "start_time": spec.start,
            "end_time": spec.end,
            "timezone": ZONE,
            "active": True,
        }
        template, _ = ShiftTemplate.objects.update_or_create(
            radiologist=users[spec.username],
            name=spec.name,
            defaults=rota_line,
            # valid from yesterday, so last evening's nighthawk is on at 03:00 on the first load;
            # kept on later loads (the demo reloads without rewriting history)
            create_defaults={**rota_line, "valid_from": today - timedelta(days=1)},
        )
        template.facilities.set([facilities[code] for code in spec.facilities if code in facilities])
        template.subspecialties.set([subspecialties[code] for code in spec.subspecialties])
    return shift_templates_materialise(at=timezone.now())
