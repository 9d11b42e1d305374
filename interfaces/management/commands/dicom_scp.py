import functools

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from interfaces.dicom.receive import (
    dicom_associations_of_previous_run_close,
    dicom_associations_of_process_close,
)
from interfaces.dicom.scp import dicom_scp_service
from interfaces.runner import database_pool_enable, edge_service_run


class Command(BaseCommand):
    help = (
        "Receive DICOM images (C-STORE, all storage SOP classes) and answer C-ECHO and Query/Retrieve; "
        "--processes N serves one port from N supervised processes."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=settings.READROOM_LISTEN_HOST)
        parser.add_argument("--port", type=int, default=settings.READROOM_DICOM_PORT)
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            help="processes accepting on the one port (supervised; 1: this process serves it)",
        )
        parser.add_argument(
            "--stop-grace",
            type=float,
            default=20.0,
            help="seconds open associations may take to finish after SIGTERM before they are aborted",
        )

        parser.add_argument(
            "--no-db-pool",
            action="store_true",
            help="a PostgreSQL session per association, as before the pool (behind PgBouncer; measuring)",
        )

    def handle(self, *args, host: str, port: int, processes: int, stop_grace: float, **options) -> None:
        if processes < 1:
            raise CommandError("--processes must be at least 1")
        # this host's associations left open by a previous run that died (one plain session here,
        # closed before any pool exists or any child is forked)
        dicom_associations_of_previous_run_close()
        connections.close_all()

        def process_setup() -> None:
            if not options["no_db_pool"]:
                # sessions reused across associations (a few more than the associations one process
                # accepts at once, and the group committer's one); per serving process, so the
                # supervising parent has none
                database_pool_enable(settings.READROOM_DICOM_MAX_ASSOCIATIONS + 3)

        service = functools.partial(dicom_scp_service, stop_grace_seconds=stop_grace)
        edge_service_run(
            service,
            name="dicom_scp",
            host=host,
            port=port,
            processes=processes,
            stop_grace_seconds=stop_grace,
            process_setup=process_setup,
            on_child_died=lambda pid: dicom_associations_of_process_close(process_id=pid),
        )
