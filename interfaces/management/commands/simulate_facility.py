import asyncio
import random

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from interfaces.selectors import simulated_facilities
from interfaces.simulator import STROKE_RATE, exam_random, exam_simulate


class Command(BaseCommand):
    help = (
        "Send realistic orders and CT/MR/XR series for a facility through the real MLLP and DICOM ports "
        "(the go-live rehearsal with dummy patients)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("facility", help="facility code, e.g. CHI-L1")
        parser.add_argument("--count", type=int, default=5, help="exams to send")
        parser.add_argument("--slices", type=int, default=None, help="images per series (default: realistic)")
        parser.add_argument("--stroke-rate", type=float, default=STROKE_RATE)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--hl7-port", type=int, default=settings.READROOM_HL7_PORT)
        parser.add_argument("--dicom-port", type=int, default=settings.READROOM_DICOM_PORT)
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args, facility: str, **options) -> None:
        found = simulated_facilities(code=facility)
        if not found:
            raise CommandError(
                f"{facility}: no such active facility with an HL7 sender and a DICOM calling AE"
            )
        target = found[0]
        rng = random.Random(options["seed"])
        for number in range(1, options["count"] + 1):
            exam = exam_random(rng, target.code, stroke_rate=options["stroke_rate"])
            ack, statuses = asyncio.run(
                exam_simulate(
                    exam,
                    target,
                    host=options["host"],
                    hl7_port=options["hl7_port"],
                    dicom_port=options["dicom_port"],
                    slices=options["slices"],
                    control_id=f"SIM{exam.accession}",
                )
            )
            msa = next(seg for seg in ack.decode(errors="replace").split("\r") if seg.startswith("MSA"))
            stored = sum(status == 0 for status in statuses)
            stroke = " CODE STROKE" if exam.is_stroke else ""
            self.stdout.write(
                f"{number}. {exam.accession} {exam.procedure.text}{stroke}: {msa.split('|')[1]}, "
                f"{stored}/{len(statuses)} images stored"
            )
