from django.conf import settings
from django.core.management.base import BaseCommand

from interfaces.dicom.scp import dicom_scp_service
from interfaces.runner import event_loop_run, run_until_signalled


class Command(BaseCommand):
    help = "Receive DICOM images (C-STORE, all storage SOP classes) and answer C-ECHO."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=settings.READROOM_LISTEN_HOST)
        parser.add_argument("--port", type=int, default=settings.READROOM_DICOM_PORT)

    def handle(self, *args, host: str, port: int, **options) -> None:
        event_loop_run(run_until_signalled(dicom_scp_service, host, port))
