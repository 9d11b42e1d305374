"""``manage.py onboard_facility FILE``: create or update a facility from its YAML description.

The format is documented in ``facilities/onboarding.py`` and, with comments, in
``deploy/facility.example.yaml``."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from facilities.onboarding import InvalidFacilitySpec, OnboardResult, facility_onboard, facility_yaml_load


class Command(BaseCommand):
    help = (
        "Create or update a facility (identity, HL7 senders, DICOM AE titles, ORU endpoint, SLA targets) "
        "from a YAML file; see deploy/facility.example.yaml. Running it again after an edit updates the "
        "facility; an unchanged file changes nothing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path, help="the facility's YAML file")
        parser.add_argument(
            "--dry-run", action="store_true", help="validate and show what would change, write nothing"
        )
        parser.add_argument(
            "--actor",
            metavar="USERNAME",
            help="record this user as the author of the changes in the audit log",
        )

    def handle(self, *args, file: Path, dry_run: bool, actor: str | None, **options) -> None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as error:
            raise CommandError(f"{file}: cannot read it ({error.strerror})") from None
        except UnicodeDecodeError:
            raise CommandError(f"{file}: not UTF-8 text") from None
        author = None
        if actor:
            author = get_user_model().objects.filter(username=actor).first()
            if author is None:
                raise CommandError(f"--actor: no user {actor!r}")
        try:
            result = facility_onboard(spec=facility_yaml_load(text), dry_run=dry_run, actor=author)
        except InvalidFacilitySpec as error:
            count = len(error.problems)
            raise CommandError(
                f"{file}: {count} problem{'s' if count != 1 else ''}, nothing was changed:\n"
                + "\n".join(f"  {p}" for p in error.problems)
            ) from None
        self._summary(result)

    def _summary(self, result: OnboardResult) -> None:
        facility = f"{result.facility.code} ({result.facility.name})"
        if result.status == "unchanged":
            self.stdout.write(f"{facility}: unchanged, the database already matches the file.")
            return
        if result.dry_run:
            verb = "would be created" if result.status == "created" else "would be updated"
            headline = f"Dry run, nothing written. {facility} {verb}:"
        else:
            headline = self.style.SUCCESS(f"{result.status.capitalize()} {facility}:")
        self.stdout.write(headline)
        for change in result.changes:
            self.stdout.write(f"  {change}")
