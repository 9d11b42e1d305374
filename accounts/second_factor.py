"""TOTP enrolment and verification (django-otp), kept in one place."""

from __future__ import annotations

from io import BytesIO

import qrcode
import qrcode.image.svg
from django.db import transaction
from django_otp import DEVICE_ID_SESSION_KEY, devices_for_user
from django_otp.models import Device
from django_otp.plugins.otp_totp.models import TOTPDevice

DEVICE_NAME = "Authenticator app"


def has_confirmed_device(user) -> bool:
    return any(True for _ in devices_for_user(user, confirmed=True))


@transaction.atomic
def totp_device_pending(user) -> TOTPDevice:
    """The user's unconfirmed authenticator, created on first use, so reloading the enrolment page
    shows the same secret instead of invalidating the one just scanned."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("id").first()
    return device or TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)


def totp_device_confirm(*, device: TOTPDevice, token: str) -> bool:
    """Confirm an enrolment when the code from the app matches."""
    if not device.verify_token(token.strip()):
        return False
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    return True


def provisioning_qr_svg(device: TOTPDevice) -> str:
    """The otpauth:// URI as an inline SVG QR code (no network, no image library)."""
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = BytesIO()
    image.save(buffer)
    return buffer.getvalue().decode()


def session_is_verified(session, user) -> bool:
    """Whether this session passed the second factor — for websocket scopes, which django-otp's
    HTTP middleware never sees. Mirrors OTPMiddleware: the device must still exist and be the user's."""
    persistent_id = session.get(DEVICE_ID_SESSION_KEY) if session is not None else None
    if not persistent_id:
        return False
    device = Device.from_persistent_id(persistent_id)
    return device is not None and device.user_id == user.pk and device.confirmed
