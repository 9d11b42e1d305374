from django.core.management.base import BaseCommand

from radiology.demo import demo_load, demo_logins_text


class Command(BaseCommand):
    help = "Load the demo facilities and people (idempotent: running it again duplicates nothing)."

    def handle(self, *args, **options) -> None:
        created = demo_load()
        self.stdout.write(
            f"Demo data loaded: {created['facilities']} new facilities, {created['users']} new users "
            "(existing ones were brought up to date)."
        )
        self.stdout.write(demo_logins_text())  # also printed by run_embedded once it is up
