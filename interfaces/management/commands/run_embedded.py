import contextlib
import functools

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from interfaces.dicom.scp import dicom_scp_service
from interfaces.emr_simulator import EMR_SIMULATOR_HOST, emr_simulator_service
from interfaces.hl7.listener import hl7_listener_service
from interfaces.runner import event_loop_run
from interfaces.selectors import simulated_facilities
from interfaces.simulator import simulator_service
from radiology import embedded
from radiology.demo import PEOPLE, demo_logins_text


class Command(BaseCommand):
    help = (
        "Run the whole system in one process (embedded topology): web and websockets, the HL7 listener, "
        "the DICOM SCP, the periodic work and, with --simulate, a facility simulator and an EMR simulator "
        "that acknowledges the reports sent back (on READROOM_EMR_SIM_PORT)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="web address")
        parser.add_argument("--port", type=int, default=settings.READROOM_WEB_PORT)
        parser.add_argument("--hl7-port", type=int, default=settings.READROOM_HL7_PORT)
        parser.add_argument("--dicom-port", type=int, default=settings.READROOM_DICOM_PORT)
        parser.add_argument("--simulate", action="store_true", help="send synthetic orders and images")
        parser.add_argument("--simulate-interval", type=float, default=45.0, help="seconds between exams")

    def handle(self, *args, host: str, port: int, hl7_port: int, dicom_port: int, **options) -> None:
        if not settings.EMBEDDED:
            raise CommandError(
                "run_embedded is the one-process topology; with DATABASE_URL and REDIS_URL run the "
                "processes of deploy/Procfile instead."
            )
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"  # noqa: S104
        show_logins = User.objects.filter(username=PEOPLE[0].username).exists()
        edge_host = settings.READROOM_LISTEN_HOST
        services = [
            embedded.periodic_ticker,
            functools.partial(hl7_listener_service, host=edge_host, port=hl7_port),
            functools.partial(dicom_scp_service, host=edge_host, port=dicom_port),
        ]
        simulated = simulated_facilities() if options["simulate"] else []
        if simulated:
            services.append(
                functools.partial(
                    simulator_service,
                    facilities=simulated,
                    host="127.0.0.1" if edge_host in ("0.0.0.0", "::") else edge_host,  # noqa: S104
                    hl7_port=hl7_port,
                    dicom_port=dicom_port,
                    interval_seconds=options["simulate_interval"],
                )
            )
        emr_port = settings.READROOM_EMR_SIM_PORT
        if options["simulate"]:
            services.append(functools.partial(emr_simulator_service, port=emr_port))

        def on_ready() -> None:
            self.stdout.write(self.style.SUCCESS(f"\nReadRoom is running at {url}"))
            ae_title = settings.READROOM_DICOM_AE_TITLE
            self.stdout.write(
                f"HL7 MLLP on {edge_host}:{hl7_port} · DICOM {ae_title}@{edge_host}:{dicom_port}"
            )
            if simulated:
                names = ", ".join(f.code for f in simulated)
                self.stdout.write(
                    f"Simulator: an exam every {options['simulate_interval']:.0f} s from {names}"
                )
            if options["simulate"]:
                self.stdout.write(
                    f"EMR simulator (receives the signed reports) on {EMR_SIMULATOR_HOST}:{emr_port}"
                )
            self.stdout.write(f"Data directory: {settings.DATA_DIR}")
            if show_logins:
                self.stdout.write(demo_logins_text())
            self.stdout.write("Press Ctrl-C to stop.\n")
            self.stdout.flush()

        with contextlib.suppress(KeyboardInterrupt):
            event_loop_run(embedded.run(host, port, services, on_ready))
