"""Django's ASGI handler, with two faults closed: a response the server fails to send, and a large
request body spooled to disk in plain text.

``ASGIHandler.handle`` calls ``response.close()`` — which sends ``request_finished`` and so returns
the request's pooled database connection — only when ``send_response`` returned or was cancelled.
Any other exception from the server's ``send`` (uvicorn raising on a header it cannot encode, a
socket error) skipped it, and each such request kept one connection of the pool for good (issue 15
§2). Here the failure is logged and the handler goes on to close the response as usual; the client
has lost its response either way.

``read_body`` is Django's, with the body read into a ``radiology.spool.BodySpool``: past
``FILE_UPLOAD_MAX_MEMORY_SIZE`` it goes on in an encrypted temporary file, where Django's
``SpooledTemporaryFile`` rolled over to a plain one (a STOW-RS body of a CT series lay in /tmp
readable for the length of the request; docs/ingest.md "Request bodies on disk")."""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler

from radiology.spool import BodySpool

log = logging.getLogger(__name__)


# ``read_body`` below is Django's with its spool replaced: the hash of the source it was copied from
# (Django 5.2). tests/test_spool.py fails when Django's changes, so the copy is looked at again.
UPSTREAM_READ_BODY = "cf4aa904631d5410"


class ClosingASGIHandler(ASGIHandler):
    async def send_response(self, response, send):
        try:
            await super().send_response(response, send)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the server could not send a %s response; closing it anyway", response.status_code)

    async def read_body(self, receive):
        body_file = BodySpool(settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted()  # the client went away early
            if "body" in message:
                body_file.write(message["body"])
            if not message.get("more_body", False):
                break
        body_file.seek(0)
        return body_file
