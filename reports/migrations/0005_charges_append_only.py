"""Charges become append-only (issue 15): a correction is a reversal and a replacement row that
reference the original, so a study may have several rows (study/report lose their one-to-one) and
only one of kind ``charge``. Existing charges were posted when they were signed. The trigger that
refuses UPDATE/DELETE is installed after migrate (reports.setup), so the backfill below still runs."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def posted_when_signed(apps, schema_editor):
    Charge = apps.get_model("reports", "Charge")
    Charge.objects.using(schema_editor.connection.alias).update(posted_at=models.F("signed_at"))


class Migration(migrations.Migration):

    dependencies = [
        ('facilities', '0009_facility_reads_before_verification'),
        ('imaging', '0017_instance_display_checked'),
        ('reports', '0004_ai_verdict'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='charge',
            options={'ordering': ['facility_id', 'posted_at', 'id']},
        ),
        migrations.RemoveIndex(
            model_name='charge',
            name='charge_facility_signed_idx',
        ),
        migrations.AddField(
            model_name='charge',
            name='corrects',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='corrections', to='reports.charge'),
        ),
        migrations.AddField(
            model_name='charge',
            name='kind',
            field=models.CharField(choices=[('charge', 'Charge'), ('reversal', 'Reversal'), ('correction', 'Correction')], default='charge', max_length=16),
        ),
        migrations.AddField(
            model_name='charge',
            name='posted_at',
            field=models.DateTimeField(null=True),
        ),
        migrations.RunPython(posted_when_signed, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='charge',
            name='posted_at',
            field=models.DateTimeField(),
        ),
        migrations.AddField(
            model_name='charge',
            name='posted_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='charge',
            name='reason',
            field=models.TextField(blank=True),
        ),
        migrations.AlterField(
            model_name='charge',
            name='report',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='charges', to='reports.report'),
        ),
        migrations.AlterField(
            model_name='charge',
            name='study',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='charges', to='imaging.study'),
        ),
        migrations.AddIndex(
            model_name='charge',
            index=models.Index(fields=['facility', 'posted_at'], name='charge_facility_posted_idx'),
        ),
        migrations.AddConstraint(
            model_name='charge',
            constraint=models.UniqueConstraint(condition=models.Q(('kind', 'charge')), fields=('study',), name='charge_once_per_study'),
        ),
        migrations.AddConstraint(
            model_name='charge',
            constraint=models.UniqueConstraint(condition=models.Q(('kind', 'reversal')), fields=('corrects',), name='charge_reversed_once'),
        ),
        migrations.AddConstraint(
            model_name='charge',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('corrects__isnull', True), ('kind', 'charge')), models.Q(models.Q(('kind', 'charge'), _negated=True), ('corrects__isnull', False), models.Q(('reason', ''), _negated=True)), _connector='OR'), name='charge_correction_references_original_with_reason'),
        ),
    ]
