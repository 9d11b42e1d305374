"""``manage.py patients_domain_merge [--facility CODE] [--dry-run] [--actor USERNAME]``: merge the
patients that became duplicates when an issuer was added to a facility's MRN domain after records
were made under it (docs/orders.md). Onboarding runs the same merge when a re-applied file changes
the domain; this command is for a domain changed in the admin, or to look first (``--dry-run``)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from facilities.models import Facility
from imaging.services import patients_domain_merge


class Command(BaseCommand):
    help = "Merge patients recorded under two names of one facility's MRN domain (audited)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--facility", metavar="CODE", help="one facility (default: every facility)")
        parser.add_argument("--dry-run", action="store_true", help="list what would be merged, write nothing")
        parser.add_argument("--actor", metavar="USERNAME", help="the author of the merges in the audit log")

    def handle(self, *args, facility: str | None, dry_run: bool, actor: str | None, **options) -> None:
        author = None
        if actor and (author := get_user_model().objects.filter(username=actor).first()) is None:
            raise CommandError(f"--actor: no user {actor!r}")
        facilities = Facility.objects.order_by("code")
        if facility:
            facilities = facilities.filter(code=facility)
            if not facilities.exists():
                raise CommandError(f"--facility: no facility {facility!r}")
        verb = "would merge" if dry_run else "merged"
        total = 0
        for each in facilities:
            for merge in patients_domain_merge(facility=each, actor=author, dry_run=dry_run):
                total += 1
                merged = ", ".join(f"{p.pk} ({p.assigning_authority or 'no issuer'})" for p in merge.merged)
                self.stdout.write(f"{each.code}: {verb} MRN {merge.mrn}: {merged} into {merge.survivor.pk}")
        self.stdout.write(
            f"{total} patient{'s' if total != 1 else ''} {verb}." if total else "No duplicates."
        )
