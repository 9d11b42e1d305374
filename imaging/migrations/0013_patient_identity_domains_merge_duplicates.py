"""One patient per identity (issue #13, docs/orders.md): the index the identity lookup uses, and the
merge of the duplicates made before identity domains existed. The demo made two patients for one
person: one from the images (empty Issuer of Patient ID, kept under the facility code) and one from
the order (PID-3.4 = the hospital's MSH-4). Each duplicate's orders and studies move to the survivor
and the duplicate stays as a link (``merged_into``); every move is written to the audit log."""

from django.db import migrations, models
from django.utils import timezone

REASON = "identity domain merge (migration imaging 0013): same MRN in one facility's MRN domain"
UPDATE = 1  # auditlog LogEntry.Action.UPDATE


def _domain(facility, senders) -> tuple[str, set[str]]:
    """Facility.patient_id_domain, frozen here: a migration must not depend on today's model code."""
    msh4 = [s.sending_facility for s in senders]
    authority = facility.patient_id_authority or (msh4[0] if msh4 else facility.code)
    names = {"", facility.code, authority, *msh4, *facility.patient_id_issuers}
    return authority, {n.casefold() for n in names}


def merge_duplicates(apps, schema_editor) -> None:
    Facility = apps.get_model("facilities", "Facility")
    Hl7Sender = apps.get_model("facilities", "Hl7Sender")
    Patient = apps.get_model("imaging", "Patient")
    ContentType = apps.get_model("contenttypes", "ContentType")
    LogEntry = apps.get_model("auditlog", "LogEntry")
    types = {
        name: ContentType.objects.get_or_create(app_label="imaging", model=name)[0]
        for name in ("patient", "order", "study")
    }

    def audit(kind: str, row, changes: dict) -> None:
        LogEntry.objects.create(
            content_type=types[kind],
            object_pk=str(row.pk),
            object_id=row.pk,
            object_repr=f"{kind} {row.pk}",
            action=UPDATE,
            changes=changes,
            changes_text=REASON,
            timestamp=timezone.now(),
            additional_data={"reason": REASON, "facility_id": row.facility_id},
        )

    for facility in Facility.objects.all():
        authority, names = _domain(facility, Hl7Sender.objects.filter(facility=facility).order_by("pk"))
        groups: dict[str, list] = {}
        for patient in Patient.objects.filter(facility=facility, merged_into=None).order_by("pk"):
            if patient.assigning_authority.casefold() in names:
                groups.setdefault(patient.mrn, []).append(patient)
        for group in groups.values():
            # the survivor: the record kept under the domain's own authority, else one with orders
            # (the EMR's demographics), else the oldest
            group.sort(
                key=lambda p: (p.assigning_authority != authority, not p.orders.exists(), p.pk)
            )
            survivor, duplicates = group[0], group[1:]
            for prior in duplicates:
                moved = {"patient": [str(prior.pk), str(survivor.pk)]}
                for kind, rows in (("order", prior.orders.all()), ("study", prior.studies.all())):
                    for row in rows:
                        row.patient = survivor
                        row.save(update_fields=["patient", "updated_at"])
                        audit(kind, row, moved)
                Patient.objects.filter(merged_into=prior).update(merged_into=survivor)
                prior.merged_into = survivor
                prior.save(update_fields=["merged_into", "updated_at"])
                audit("patient", prior, {"merged_into": ["None", str(survivor.pk)]})
            taken = Patient.objects.filter(facility=facility, mrn=survivor.mrn, assigning_authority=authority)
            if survivor.assigning_authority != authority and not taken.exists():
                audit("patient", survivor, {"assigning_authority": [survivor.assigning_authority, authority]})
                survivor.assigning_authority = authority
                survivor.save(update_fields=["assigning_authority", "updated_at"])


class Migration(migrations.Migration):
    dependencies = [
        ("auditlog", "0017_add_actor_email"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("facilities", "0007_patient_identity_domain_orderless_wait_retired_sop"),
        ("imaging", "0012_study_ai_badge"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="patient",
            index=models.Index(fields=["facility", "mrn"], name="patient_mrn_idx"),
        ),
        migrations.RunPython(merge_duplicates, migrations.RunPython.noop),
    ]
