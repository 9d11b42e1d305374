"""Forms of the MSO workspace. Every field has a label; dates use the browser's date picker."""

from __future__ import annotations

from django import forms
from django.utils import timezone

from accounts.models import User
from accounts.roles import Role
from credentialing.models import (
    BoardCertification,
    DeaRegistration,
    Document,
    DocumentKind,
    FacilityCredentialing,
    Fellowship,
    MalpracticeCoverage,
    Modality,
    RadiologistProfile,
    StateLicence,
    Subspecialty,
    VerificationMethod,
)
from facilities.models import Facility


class DateInput(forms.DateInput):
    input_type = "date"

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m-%d", **kwargs)


def _dated(model_form_fields: dict) -> dict:
    return {name: DateInput() for name in model_form_fields}


class ProfileForm(forms.ModelForm):
    subspecialties = forms.ModelMultipleChoiceField(
        queryset=Subspecialty.objects.all(), widget=forms.CheckboxSelectMultiple, required=False
    )

    class Meta:
        model = RadiologistProfile
        fields = ["npi", "subspecialties"]


class ProfileOpenForm(ProfileForm):
    user = forms.ModelChoiceField(
        label="Radiologist",
        queryset=User.objects.filter(groups__name=Role.RADIOLOGIST.value, radiologist_profile__isnull=True),
        help_text="Radiologists who have no dossier yet.",
    )

    class Meta(ProfileForm.Meta):
        fields = ["user", "npi", "subspecialties"]


class LicenceForm(forms.ModelForm):
    class Meta:
        model = StateLicence
        fields = ["state", "number", "kind", "status", "issued_on", "expires_on", "notes"]
        widgets = _dated(["issued_on", "expires_on"])


class BoardForm(forms.ModelForm):
    class Meta:
        model = BoardCertification
        fields = ["board", "specialty", "certificate_number", "issued_on", "expires_on"]
        widgets = _dated(["issued_on", "expires_on"])


class FellowshipForm(forms.ModelForm):
    class Meta:
        model = Fellowship
        fields = ["institution", "subspecialty", "started_on", "completed_on"]
        widgets = _dated(["started_on", "completed_on"])


class DeaForm(forms.ModelForm):
    class Meta:
        model = DeaRegistration
        fields = ["number", "state", "schedules", "issued_on", "expires_on"]
        widgets = _dated(["issued_on", "expires_on"])


class MalpracticeForm(forms.ModelForm):
    class Meta:
        model = MalpracticeCoverage
        fields = [
            "carrier",
            "policy_number",
            "kind",
            "per_claim_limit",
            "aggregate_limit",
            "effective_on",
            "expires_on",
        ]
        widgets = _dated(["effective_on", "expires_on"])


class VerificationForm(forms.Form):
    method = forms.ChoiceField(label="How it was verified", choices=VerificationMethod.choices)
    verified_on = forms.DateField(label="Verified on", widget=DateInput(), initial=timezone.localdate)
    document = forms.ModelChoiceField(
        label="Evidence document",
        queryset=Document.objects.none(),
        required=False,
        help_text="Upload the board's letter or the screenshot to the dossier first.",
    )
    note = forms.CharField(label="Note", max_length=300, required=False)

    def __init__(self, *args, profile: RadiologistProfile, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["document"].queryset = profile.documents.all()


class DocumentUploadForm(forms.Form):
    title = forms.CharField(label="Title", max_length=200, help_text="e.g. IL licence renewal 2027")
    kind = forms.ChoiceField(label="Kind of document", choices=DocumentKind.choices)
    file = forms.FileField(label="File (PDF, PNG or JPEG)")


class PrivilegeApplyForm(forms.Form):
    facility = forms.ModelChoiceField(label="Facility", queryset=Facility.objects.filter(active=True))
    applied_on = forms.DateField(label="Applied on", widget=DateInput(), initial=timezone.localdate)
    scope_subspecialties = forms.ModelMultipleChoiceField(
        label="Limited to subspecialties",
        queryset=Subspecialty.objects.all(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: all subspecialties.",
    )
    scope_modalities = forms.MultipleChoiceField(
        label="Limited to modalities",
        choices=Modality.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: all modalities.",
    )


class ScopeForm(forms.Form):
    subspecialties = forms.ModelMultipleChoiceField(
        label="Limited to subspecialties",
        queryset=Subspecialty.objects.all(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: all subspecialties.",
    )
    modalities = forms.MultipleChoiceField(
        label="Limited to modalities",
        choices=Modality.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: all modalities.",
    )


class GrantForm(forms.Form):
    granted_on = forms.DateField(label="Granted on", widget=DateInput(), initial=timezone.localdate)
    expires_on = forms.DateField(
        label="Expires on",
        widget=DateInput(),
        required=False,
        help_text="Empty: the facility's appointment length (usually two years).",
    )


class ProxyGrantForm(GrantForm):
    distant_site_name = forms.CharField(label="Distant-site hospital", max_length=200)
    distant_site_approved_on = forms.DateField(label="Distant site's approval date", widget=DateInput())


class NoteForm(forms.Form):
    note = forms.CharField(label="Reason", max_length=500, widget=forms.Textarea(attrs={"rows": 2}))


class ChecklistAddForm(forms.Form):
    label = forms.CharField(label="New checklist item", max_length=200)


class FacilityCredentialingForm(forms.ModelForm):
    reads_before_verification = forms.BooleanField(
        label="Readers eligible before verification",
        required=False,
        help_text="Off (the default): a reader may read here only once their licence in this state and "
        "a malpractice cover in force are verified with the primary source; until then the worklist, "
        "routing and signing refuse them with that reason.",
    )
    requirements = forms.CharField(
        label="Required checklist items",
        widget=forms.Textarea(attrs={"rows": 8}),
        required=False,
        help_text="One per line, in order. Empty: ReadRoom's default list. Open applications keep theirs.",
    )

    class Meta:
        model = FacilityCredentialing
        fields = [
            "mso_contact_name",
            "mso_contact_email",
            "mso_contact_phone",
            "reappointment_months",
            "accepts_proxy",
        ]
