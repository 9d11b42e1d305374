"""``manage.py ohif_install``: install the pinned OHIF viewer with npm (imaging/ohif.py). A no-op
when that version is already installed, so ``make demo`` / ``make test`` can run it every time."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from imaging.ohif import VERSION, OhifInstallError, ohif_install, ohif_install_dir


class Command(BaseCommand):
    help = "Install the pinned OHIF viewer (npm pack, integrity check, only what is served)."

    def add_arguments(self, parser):
        parser.add_argument("--npm", default="npm", help="the npm executable")
        parser.add_argument("--tarball", type=Path, help="an already downloaded @ohif/app tarball")

    def handle(self, *args, npm: str, tarball: Path | None, **options):
        try:
            done = ohif_install(npm=npm, tarball=tarball, log=self.stdout.write)
        except OhifInstallError as exc:
            raise CommandError(str(exc)) from exc
        if not done:
            self.stdout.write(f"OHIF {VERSION} is installed in {ohif_install_dir().root}")
