"""Django's ASGI handler, with one fault closed: a response the server fails to send.

``ASGIHandler.handle`` calls ``response.close()`` — which sends ``request_finished`` and so returns
the request's pooled database connection — only when ``send_response`` returned or was cancelled.
Any other exception from the server's ``send`` (uvicorn raising on a header it cannot encode, a
socket error) skipped it, and each such request kept one connection of the pool for good (issue 15
§2). Here the failure is logged and the handler goes on to close the response as usual; the client
has lost its response either way."""

from __future__ import annotations

import asyncio
import logging

from django.core.handlers.asgi import ASGIHandler

log = logging.getLogger(__name__)


class ClosingASGIHandler(ASGIHandler):
    async def send_response(self, response, send):
        try:
            await super().send_response(response, send)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the server could not send a %s response; closing it anyway", response.status_code)
