from django.db import migrations

SUBSPECIALTIES = {
    "neuro": "Neuroradiology",
    "msk": "Musculoskeletal",
    "body": "Body (abdomen/pelvis)",
    "chest": "Chest / cardiac",
    "pediatric": "Paediatric",
    "breast": "Breast",
    "nuclear": "Nuclear medicine",
    "general": "General / ER",
}


def add_subspecialties(apps, schema_editor):
    Subspecialty = apps.get_model("credentialing", "Subspecialty")
    for code, name in SUBSPECIALTIES.items():
        Subspecialty.objects.update_or_create(code=code, defaults={"name": name})


class Migration(migrations.Migration):
    dependencies = [("credentialing", "0001_initial")]
    operations = [migrations.RunPython(add_subspecialties, migrations.RunPython.noop)]
