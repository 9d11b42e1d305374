from django.core.management.base import BaseCommand, CommandError

from radiology.demo import DemoRefused, demo_load, demo_logins_text


class Command(BaseCommand):
    help = "Load the demo facilities and people (idempotent: running it again duplicates nothing)."

    def handle(self, *args, **options) -> None:
        try:
            created = demo_load()
        except DemoRefused as refused:
            raise CommandError(str(refused)) from refused  # exit status 1, the reason on stderr
        self.stdout.write(
            f"Demo data loaded: {created['facilities']} new facilities, {created['users']} new users "
            "(existing ones were brought up to date)."
        )
        self.stdout.write(demo_logins_text())  # also printed by run_embedded once it is up
