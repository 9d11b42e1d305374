"""API representations of credentialing records. Writes go through ``credentialing.services`` (the
viewsets call them); these classes only shape and validate input."""

from __future__ import annotations

from rest_framework import serializers

from credentialing.models import (
    BoardCertification,
    DeaRegistration,
    Document,
    DocumentKind,
    FacilityPrivilege,
    Fellowship,
    MalpracticeCoverage,
    Modality,
    PrivilegeChecklistItem,
    RadiologistProfile,
    StateLicence,
    Subspecialty,
    VerificationMethod,
)
from facilities.models import Facility

VERIFICATION_FIELDS = [
    "verified_by",
    "verified_at",
    "verification_method",
    "verification_document",
    "verification_note",
]


class ProfileSerializer(serializers.ModelSerializer):
    name = serializers.CharField(source="user.__str__", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    subspecialties = serializers.SlugRelatedField(
        slug_field="code", many=True, queryset=Subspecialty.objects.all(), required=False
    )

    class Meta:
        model = RadiologistProfile
        fields = ["id", "user", "username", "name", "npi", "subspecialties", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


class _VerifiedSerializer(serializers.ModelSerializer):
    verified_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    def validate_profile(self, profile: RadiologistProfile) -> RadiologistProfile:
        if self.instance is not None and profile != self.instance.profile:
            raise serializers.ValidationError("A record cannot move to another radiologist's dossier.")
        return profile


class LicenceSerializer(_VerifiedSerializer):
    class Meta:
        model = StateLicence
        fields = [
            "id",
            "profile",
            "state",
            "number",
            "kind",
            "status",
            "issued_on",
            "expires_on",
            "notes",
            *VERIFICATION_FIELDS,
        ]
        read_only_fields = VERIFICATION_FIELDS


class BoardSerializer(_VerifiedSerializer):
    class Meta:
        model = BoardCertification
        fields = [
            "id",
            "profile",
            "board",
            "specialty",
            "certificate_number",
            "issued_on",
            "expires_on",
            *VERIFICATION_FIELDS,
        ]
        read_only_fields = VERIFICATION_FIELDS


class FellowshipSerializer(_VerifiedSerializer):
    subspecialty = serializers.SlugRelatedField(
        slug_field="code", queryset=Subspecialty.objects.all(), required=False, allow_null=True
    )

    class Meta:
        model = Fellowship
        fields = [
            "id",
            "profile",
            "institution",
            "subspecialty",
            "started_on",
            "completed_on",
            *VERIFICATION_FIELDS,
        ]
        read_only_fields = VERIFICATION_FIELDS


class DeaSerializer(_VerifiedSerializer):
    class Meta:
        model = DeaRegistration
        fields = [
            "id",
            "profile",
            "number",
            "state",
            "schedules",
            "issued_on",
            "expires_on",
            *VERIFICATION_FIELDS,
        ]
        read_only_fields = VERIFICATION_FIELDS


class MalpracticeSerializer(_VerifiedSerializer):
    class Meta:
        model = MalpracticeCoverage
        fields = [
            "id",
            "profile",
            "carrier",
            "policy_number",
            "kind",
            "per_claim_limit",
            "aggregate_limit",
            "effective_on",
            "expires_on",
            *VERIFICATION_FIELDS,
        ]
        read_only_fields = VERIFICATION_FIELDS


class VerificationSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=VerificationMethod.choices)
    document = serializers.PrimaryKeyRelatedField(
        queryset=Document.objects.all(), required=False, allow_null=True
    )
    note = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    verified_at = serializers.DateTimeField(required=False)


class ChecklistItemSerializer(serializers.ModelSerializer):
    completed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = PrivilegeChecklistItem
        fields = ["id", "label", "required", "completed_by", "completed_at", "note"]
        read_only_fields = fields


class PrivilegeSerializer(serializers.ModelSerializer):
    facility = serializers.SlugRelatedField(slug_field="code", queryset=Facility.objects.all())
    radiologist = serializers.IntegerField(source="profile.user_id", read_only=True)
    radiologist_name = serializers.CharField(source="profile.__str__", read_only=True)
    scope_subspecialties = serializers.SlugRelatedField(
        slug_field="code", many=True, queryset=Subspecialty.objects.all(), required=False
    )
    scope_modalities = serializers.ListField(
        child=serializers.ChoiceField(choices=Modality.choices), required=False
    )
    checklist = ChecklistItemSerializer(many=True, read_only=True)
    decided_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = FacilityPrivilege
        fields = [
            "id",
            "profile",
            "radiologist",
            "radiologist_name",
            "facility",
            "status",
            "applied_on",
            "granted_on",
            "expires_on",
            "scope_subspecialties",
            "scope_modalities",
            "distant_site_name",
            "distant_site_approved_on",
            "decided_by",
            "decided_at",
            "status_note",
            "checklist",
        ]
        read_only_fields = [
            "status",
            "granted_on",
            "expires_on",
            "distant_site_name",
            "distant_site_approved_on",
            "decided_by",
            "decided_at",
            "status_note",
        ]
        extra_kwargs = {"applied_on": {"required": False}}


class FacilityReaderSerializer(serializers.ModelSerializer):
    """What a facility admin sees of a privilege at their facility: who, status, dates, scope."""

    facility = serializers.SlugRelatedField(slug_field="code", read_only=True)
    radiologist_name = serializers.CharField(source="profile.__str__", read_only=True)
    scope_subspecialties = serializers.SlugRelatedField(slug_field="code", many=True, read_only=True)

    class Meta:
        model = FacilityPrivilege
        fields = [
            "id",
            "radiologist_name",
            "facility",
            "status",
            "granted_on",
            "expires_on",
            "scope_subspecialties",
            "scope_modalities",
            "distant_site_name",
        ]
        read_only_fields = fields


class GrantSerializer(serializers.Serializer):
    granted_on = serializers.DateField()
    expires_on = serializers.DateField(required=False, allow_null=True, default=None)


class ProxyGrantSerializer(GrantSerializer):
    distant_site_name = serializers.CharField(max_length=200)
    distant_site_approved_on = serializers.DateField()


class NoteSerializer(serializers.Serializer):
    note = serializers.CharField(max_length=500)


class DocumentSerializer(serializers.ModelSerializer):
    uploaded_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Document
        fields = [
            "id",
            "uuid",
            "profile",
            "kind",
            "title",
            "original_filename",
            "content_type",
            "size_bytes",
            "sha256",
            "uploaded_by",
            "uploaded_at",
        ]
        read_only_fields = fields


class DocumentUploadSerializer(serializers.Serializer):
    profile = serializers.PrimaryKeyRelatedField(queryset=RadiologistProfile.objects.all())
    kind = serializers.ChoiceField(choices=DocumentKind.choices, default=DocumentKind.OTHER)
    title = serializers.CharField(max_length=200)
    file = serializers.FileField()


class ReasonSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class AssessmentSerializer(serializers.Serializer):
    """Eligibility only: never the study's patient, order or description."""

    radiologist = serializers.IntegerField()
    study = serializers.IntegerField()
    at = serializers.DateTimeField()
    eligible = serializers.BooleanField()
    reasons = ReasonSerializer(many=True)
