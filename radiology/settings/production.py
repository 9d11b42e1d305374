"""Production settings: the base settings, but refuse to start on anything generated or missing.

A generated secret key lives on one machine's disk; behind a load balancer every web process must
share the same one, and a lost storage key makes every stored image unreadable."""

import base64
import binascii
import os

from django.core.exceptions import ImproperlyConfigured


def _required_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(f"{name} must be set in production (see deploy/readroom.env.example)")
    return value


def _validated_storage_key(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImproperlyConfigured("READROOM_STORAGE_KEY must be base64") from exc
    if len(raw) != 32:
        raise ImproperlyConfigured(
            f"READROOM_STORAGE_KEY must decode to 32 bytes for AES-256-GCM, not {len(raw)}"
        )
    return value


# Checked before the base settings load: base would otherwise generate throwaway secrets on disk.
_secret_key = _required_env("SECRET_KEY")
_PLACEHOLDER_SECRETS = {"change-me", "changeme", "secret"}
if len(_secret_key) < 40 or _secret_key.startswith("django-insecure") or _secret_key in _PLACEHOLDER_SECRETS:
    raise ImproperlyConfigured("SECRET_KEY must be a real secret of at least 40 characters")
_validated_storage_key(_required_env("READROOM_STORAGE_KEY"))
_required_env("DATABASE_URL")
_required_env("REDIS_URL")

from radiology.settings.base import *  # noqa: E402, F403

DEBUG = False
# What refuses to run on a real installation reads this (load_demo: published passwords, docs/security.md).
READROOM_PRODUCTION = True
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)  # noqa: F405
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HSTS (docs/security.md): a year by default. Django's SecurityMiddleware sends it only on a secure
# request (TLS at the proxy, X-Forwarded-Proto https), so a plain-HTTP lab install is not locked out.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600)  # noqa: F405
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)  # noqa: F405
