"""ReadRoom project package: settings, URL and ASGI routing, Celery wiring. No models live here."""

from radiology.celery import app as celery_app

__all__ = ["celery_app"]
