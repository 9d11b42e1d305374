from django.core.management.base import BaseCommand, CommandError
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from radiology.demo import DEMO_DEVICE_NAME


class Command(BaseCommand):
    help = "Print the current code of a demo user's authenticator (demo devices only)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")

    def handle(self, *args, username: str, **options) -> None:
        # Only the demo loader's devices: a real user's secret never leaves their phone.
        device = TOTPDevice.objects.filter(
            user__username=username, name=DEMO_DEVICE_NAME, confirmed=True
        ).first()
        if device is None:
            raise CommandError(f"{username} has no demo authenticator (load_demo creates them).")
        totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
        self.stdout.write(f"{totp.token():0{device.digits}d}")
