"""Reference rows every deployment needs, ensured after every ``migrate`` (and after the test
runner's flush, which empties tables but re-sends post_migrate)."""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS

from credentialing.models import Subspecialty

SUBSPECIALTIES = {
    Subspecialty.NEURO: "Neuroradiology",
    Subspecialty.MSK: "Musculoskeletal",
    Subspecialty.BODY: "Body (abdomen/pelvis)",
    Subspecialty.CHEST: "Chest / cardiac",
    Subspecialty.PEDIATRIC: "Paediatric",
    Subspecialty.BREAST: "Breast",
    Subspecialty.NUCLEAR: "Nuclear medicine",
    Subspecialty.GENERAL: "General / ER",
}


def subspecialties_ensure(using: str = DEFAULT_DB_ALIAS) -> None:
    for code, name in SUBSPECIALTIES.items():
        Subspecialty.objects.using(using).update_or_create(code=code, defaults={"name": name})


def on_post_migrate(sender, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    subspecialties_ensure(using)
