import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from interfaces.hl7.listener import InlineInbox, hl7_listener_service
from interfaces.runner import edge_service_run


class Command(BaseCommand):
    help = (
        "Receive HL7 v2 orders and ADT over MLLP (persistent connections, many senders); "
        "--processes N serves one port from N supervised processes."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=settings.READROOM_LISTEN_HOST)
        parser.add_argument("--port", type=int, default=settings.READROOM_HL7_PORT)
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            help="processes accepting on the one port (supervised; 1: this process serves it)",
        )

    def handle(self, *args, host: str, port: int, processes: int, **options) -> None:
        if processes < 1:
            raise CommandError("--processes must be at least 1")
        # Each process's loop serves only MLLP: frames are stored in it (InlineInbox explains why,
        # and why Django's async-safety check may be lifted here and nowhere else). A child makes
        # its own inbox, so its one database connection is opened in the child.
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

        async def service(stop, **where) -> None:
            await hl7_listener_service(stop, inbox=InlineInbox(), **where)

        edge_service_run(service, name="hl7_listener", host=host, port=port, processes=processes)
