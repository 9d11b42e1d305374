import asyncio
import contextlib

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from radiology import embedded
from radiology.demo import PEOPLE, demo_logins_text


class Command(BaseCommand):
    help = "Run the whole system in one process (embedded topology): web, websockets, periodic work."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.READROOM_WEB_PORT)

    def handle(self, *args, host: str, port: int, **options) -> None:
        if not settings.EMBEDDED:
            raise CommandError(
                "run_embedded is the one-process topology; with DATABASE_URL and REDIS_URL run the "
                "processes of deploy/Procfile instead."
            )
        call_command("collectstatic", interactive=False, verbosity=0)
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"  # noqa: S104
        show_logins = User.objects.filter(username=PEOPLE[0].username).exists()

        def on_ready() -> None:
            self.stdout.write(self.style.SUCCESS(f"\nReadRoom is running at {url}"))
            self.stdout.write(f"Data directory: {settings.DATA_DIR}")
            if show_logins:
                self.stdout.write(demo_logins_text())
            self.stdout.write("Press Ctrl-C to stop.\n")
            self.stdout.flush()

        services = [embedded.periodic_ticker]
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(embedded.run(host, port, services, on_ready))
