"""Fill imaging.Study's copy of routing's state (worklist_routed / _sla_deadline / _claimed_by) for the
studies routed before the copy existed; from now on StudyAssignment's writes keep it."""

from django.db import migrations
from django.db.models import OuterRef, Subquery


def backfill(apps, schema_editor):
    Study = apps.get_model("imaging", "Study")
    StudyAssignment = apps.get_model("worklist", "StudyAssignment")
    own = StudyAssignment.objects.filter(study_id=OuterRef("pk"))
    Study.objects.filter(pk__in=StudyAssignment.objects.values("study_id")).update(
        worklist_routed=True,
        worklist_sla_deadline=Subquery(own.values("sla_deadline")[:1]),
        worklist_claimed_by=Subquery(own.values("claimed_by")[:1]),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("imaging", "0005_study_worklist_columns"),
        ("worklist", "0006_timeoff_studyassignment_last_activity_at_and_more"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
