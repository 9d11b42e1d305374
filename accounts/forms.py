from auditlog.models import LogEntry
from django import forms


class TokenForm(forms.Form):
    token = forms.CharField(
        label="Code from your authenticator app",
        min_length=6,
        max_length=8,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
        help_text="Six digits; a new code appears every 30 seconds.",
    )


class AuditSearchForm(forms.Form):
    def __init__(self, *args, **kwargs):
        from facilities.models import Facility

        super().__init__(*args, **kwargs)
        self.fields["facility"].queryset = Facility.objects.order_by("name")

    patient = forms.CharField(label="Patient (MRN or family name)", required=False, max_length=100)
    user = forms.CharField(label="User (username)", required=False, max_length=150)
    date_from = forms.DateField(
        label="From (UTC date)", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label="To (UTC date)", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    object = forms.CharField(label="Object (kind or text)", required=False, max_length=100)
    facility = forms.ModelChoiceField(
        label="Facility", required=False, queryset=None, to_field_name="code", empty_label="Any"
    )
    action = forms.TypedChoiceField(
        label="Action",
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("", "Any"), *list(LogEntry.Action.choices)],
    )

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("'From' must be on or before 'To'.")
        return data
