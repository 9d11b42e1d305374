from rest_framework import serializers

from facilities.models import Facility, PriorityClass


class FacilitySerializer(serializers.ModelSerializer):
    sla_targets_minutes = serializers.SerializerMethodField()

    class Meta:
        model = Facility
        fields = [
            "id",
            "code",
            "name",
            "state",
            "timezone",
            "kind",
            "active",
            "sla_targets_minutes",
        ]

    def get_sla_targets_minutes(self, facility: Facility) -> dict[str, int]:
        return {p.value: int(facility.sla_target(p).total_seconds() // 60) for p in PriorityClass}
