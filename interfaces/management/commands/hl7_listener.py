import functools
import os

from django.conf import settings
from django.core.management.base import BaseCommand

from interfaces.hl7.listener import InlineInbox, hl7_listener_service
from interfaces.runner import event_loop_run, run_until_signalled


class Command(BaseCommand):
    help = "Receive HL7 v2 orders and ADT over MLLP (persistent connections, many senders)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=settings.READROOM_LISTEN_HOST)
        parser.add_argument("--port", type=int, default=settings.READROOM_HL7_PORT)

    def handle(self, *args, host: str, port: int, **options) -> None:
        # This process's loop serves only MLLP: frames are stored in it (InlineInbox explains why,
        # and why Django's async-safety check may be lifted here and nowhere else).
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        service = functools.partial(hl7_listener_service, inbox=InlineInbox())
        event_loop_run(run_until_signalled(service, host, port))
