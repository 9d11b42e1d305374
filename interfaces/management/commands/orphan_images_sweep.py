from django.core.management.base import BaseCommand, CommandError

from interfaces.dicom.orphans import orphan_images_sweep_once


class Command(BaseCommand):
    help = (
        "Stored image files that no index row names, older than READROOM_ORPHAN_GRACE_SECONDS: a whole "
        "one goes to the quarantine (release it to index it), a partial one is removed (docs/storage.md)."
    )

    def handle(self, *args, **options) -> None:
        sweep = orphan_images_sweep_once()
        if sweep is None:
            raise CommandError("another orphan sweep is running")
        self.stdout.write(
            f"{sweep.quarantined} quarantined, {sweep.removed} partial removed, {sweep.kept} left"
        )
