import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand

from interfaces.hl7.listener import hl7_listener_service
from interfaces.runner import run_until_signalled


class Command(BaseCommand):
    help = "Receive HL7 v2 orders and ADT over MLLP (persistent connections, many senders)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=settings.READROOM_LISTEN_HOST)
        parser.add_argument("--port", type=int, default=settings.READROOM_HL7_PORT)

    def handle(self, *args, host: str, port: int, **options) -> None:
        asyncio.run(run_until_signalled(hl7_listener_service, host, port))
