"""Forms of the operations rota page: a repeating shift template and a reader's time off. Every field
is labelled and every error says what to do; saving goes through ``worklist.coverage``."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django import forms
from django.utils import timezone as django_timezone

from accounts.models import User
from credentialing.models import Subspecialty
from facilities.models import Facility
from worklist.coverage import local_instant

WEEKDAY_CHOICES = [
    (0, "Monday"),
    (1, "Tuesday"),
    (2, "Wednesday"),
    (3, "Thursday"),
    (4, "Friday"),
    (5, "Saturday"),
    (6, "Sunday"),
]
# The zones a US teleradiology rota is written in; the facilities' own zones are added to them.
US_ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "UTC",
)
TIME_ERROR = "Enter a time as HH:MM on the 24-hour clock, e.g. 23:00."
DATE_ERROR = "Enter a date as YYYY-MM-DD, e.g. 2026-12-01."


def local_time_field(label: str, help_text: str = "") -> forms.TimeField:
    """A shift's start or end: the browser's time picker, HH:MM in the facility's local time."""
    return forms.TimeField(
        label=label,
        help_text=help_text,
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        error_messages={"required": TIME_ERROR, "invalid": TIME_ERROR},
    )


def zone_choices() -> list[tuple[str, str]]:
    zones = set(US_ZONES) | set(Facility.objects.filter(active=True).values_list("timezone", flat=True))
    return [(zone, zone.replace("_", " ")) for zone in sorted(zones)]


def readers() -> object:
    """Active users with a radiologist dossier: the people a rota line can belong to."""
    return (
        User.objects.filter(is_active=True, radiologist_profile__isnull=False)
        .order_by("display_name", "username")
        .distinct()
    )


class ReaderChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: User) -> str:
        return f"{obj} ({obj.username})"


class FacilityChoices(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Facility) -> str:
        return f"{obj.name} ({obj.state})"


class ShiftTemplateForm(forms.Form):
    radiologist = ReaderChoice(
        label="Reader",
        queryset=User.objects.none(),
        empty_label="Choose a reader…",
        error_messages={"required": "Choose the reader this shift belongs to."},
    )
    name = forms.CharField(
        label="Name",
        max_length=100,
        help_text='What the rota calls it, e.g. "Nighthawk" or "Weekend days"',
        error_messages={"required": 'Give the shift a name, e.g. "Nighthawk".'},
    )
    weekdays = forms.TypedMultipleChoiceField(
        label="Starts on",
        choices=WEEKDAY_CHOICES,
        coerce=int,
        widget=forms.CheckboxSelectMultiple,
        help_text="The days the shift starts on: a Friday 23:00 night shift ends on Saturday morning.",
        error_messages={"required": "Tick at least one day the shift starts on."},
    )
    start_time = local_time_field("Starts at (local time)")
    end_time = local_time_field(
        "Ends at (local time)", "At or before the start time: the next morning (23:00–07:00 is a night)."
    )
    timezone = forms.ChoiceField(
        label="Time zone",
        help_text="The zone the times are written in; shifts follow its clock changes.",
        error_messages={"required": "Choose the time zone the times are written in."},
    )
    valid_from = forms.DateField(
        label="First day",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        error_messages={"required": DATE_ERROR, "invalid": DATE_ERROR},
    )
    valid_until = forms.DateField(
        label="Last day (optional)",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        help_text="The last day a shift may start; leave empty for no end.",
        error_messages={"invalid": DATE_ERROR},
    )
    facilities = FacilityChoices(
        label="Facilities",
        queryset=Facility.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every facility where the reader holds privileges.",
    )
    subspecialties = forms.ModelMultipleChoiceField(
        label="Subspecialties",
        queryset=Subspecialty.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: everything the reader reads.",
    )

    def __init__(self, *args, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["radiologist"].queryset = readers()
        self.fields["timezone"].choices = zone_choices()
        self.fields["facilities"].queryset = Facility.objects.filter(active=True).order_by("name")
        self.fields["subspecialties"].queryset = Subspecialty.objects.order_by("name")
        if editing:
            # a rota line belongs to one person: to move it, deactivate it and create one for the other
            self.fields["radiologist"].disabled = True
            self.fields["active"] = forms.BooleanField(
                label="Active (materialised into shifts)", required=False, initial=True
            )

    def clean(self) -> dict:
        data = super().clean()
        first, last = data.get("valid_from"), data.get("valid_until")
        if first and last and last < first:
            self.add_error(
                "valid_until", f"The last day must be on or after the first day ({first:%Y-%m-%d})."
            )
        return data


class TimeOffForm(forms.Form):
    radiologist = ReaderChoice(
        label="Reader",
        queryset=User.objects.none(),
        empty_label="Choose a reader…",
        error_messages={"required": "Choose the reader who is away."},
    )
    starts_at = forms.DateTimeField(
        label="Away from (local time)",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        error_messages={
            "required": "Enter when the time off starts, e.g. 2026-12-01 07:00.",
            "invalid": "Enter when the time off starts as a date and time, e.g. 2026-12-01 07:00.",
        },
    )
    ends_at = forms.DateTimeField(
        label="Back at (local time)",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        error_messages={
            "required": "Enter when the reader is back, e.g. 2026-12-08 07:00.",
            "invalid": "Enter when the reader is back as a date and time, e.g. 2026-12-08 07:00.",
        },
    )
    timezone = forms.ChoiceField(
        label="Time zone", initial="America/Chicago", help_text="The zone the two times are written in."
    )
    reason = forms.CharField(
        label="Reason",
        max_length=200,
        help_text="Kept with the time off and noted on the shifts it shortens, e.g. annual leave, sick.",
        error_messages={"required": "Give the reason for the time off, e.g. annual leave or sick."},
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["radiologist"].queryset = readers()
        self.fields["timezone"].choices = zone_choices()

    def clean(self) -> dict:
        data = super().clean()
        zone_name, starts, ends = data.get("timezone"), data.get("starts_at"), data.get("ends_at")
        if not (zone_name and starts and ends):
            return data
        # The browser sends wall-clock times; read them in the chosen zone, not the server's.
        zone = ZoneInfo(zone_name)
        data["starts_at"], data["ends_at"] = _in_zone(starts, zone), _in_zone(ends, zone)
        if data["ends_at"] <= data["starts_at"]:
            self.add_error("ends_at", "The reader must be back after the time off starts.")
        return data


def _in_zone(value: datetime, zone: ZoneInfo) -> datetime:
    wall = django_timezone.make_naive(value) if django_timezone.is_aware(value) else value
    return local_instant(wall.date(), wall.time(), zone)


class OneOffShiftForm(forms.Form):
    """A single shift from the rota calendar: a day and two wall-clock times in a zone (an end at or
    before the start is the next morning, as on the template form)."""

    radiologist = ReaderChoice(
        label="Reader",
        queryset=User.objects.none(),
        empty_label="Choose a reader…",
        error_messages={"required": "Choose the reader this shift belongs to."},
    )
    day = forms.DateField(
        label="Day it starts",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        error_messages={"required": DATE_ERROR, "invalid": DATE_ERROR},
    )
    start_time = local_time_field("Starts at (local time)")
    end_time = local_time_field("Ends at (local time)", "At or before the start time: the next morning.")
    timezone = forms.ChoiceField(label="Time zone")
    facilities = FacilityChoices(
        label="Facilities",
        queryset=Facility.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every facility where the reader holds privileges.",
    )
    subspecialties = forms.ModelMultipleChoiceField(
        label="Subspecialties",
        queryset=Subspecialty.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: everything the reader reads.",
    )
    note = forms.CharField(label="Note (optional)", max_length=200, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["radiologist"].queryset = readers()
        self.fields["timezone"].choices = zone_choices()
        self.fields["facilities"].queryset = Facility.objects.filter(active=True).order_by("name")
        self.fields["subspecialties"].queryset = Subspecialty.objects.order_by("name")

    def clean(self) -> dict:
        data = super().clean()
        day, start, end, zone_name = (data.get(k) for k in ("day", "start_time", "end_time", "timezone"))
        if day and start and end and zone_name:
            zone = ZoneInfo(zone_name)
            data["starts_at"] = local_instant(day, start, zone)
            data["ends_at"] = local_instant(day + timedelta(days=1 if end <= start else 0), end, zone)
        return data
