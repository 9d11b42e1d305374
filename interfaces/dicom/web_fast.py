"""OHIF's frame requests answered beside Django's URL router and DRF, under the same checks
(docs/viewer.md, "Feeding OHIF fast").

A viewer opening a 300-slice CT asks ``GET …/studies/{s}/series/{se}/instances/{i}/frames/1``
300 times within seconds. Through Django each ran on the one thread a uvicorn worker gives
synchronous views, so two workers served two frames at a time. This ASGI app, wrapped around
Django's in ``radiology/asgi.py``, answers only those GETs itself, in a pool thread
(``thread_sensitive=False``), and hands every other request to Django untouched.

It checks what the Django path checks, with the same code:

* the project's middleware, the real classes in ``settings.MIDDLEWARE`` order (session, user and
  its ``is_active``, django-otp's device binding, the second factor for signing roles, the screen
  lock, the host check, the audit context, the security headers). A middleware this module does not
  know turns the fast path off: its effect would otherwise be skipped;
* the role (``web_access.may_use_images``) and the study (``web_access.study_granted``: only a
  study the view granted within ``READROOM_DICOMWEB_GRANT_SECONDS``, the same hold the view uses —
  never a decision of its own);
* the frames themselves, their Accept negotiation, multipart body and PHI audit row
  (``web.frames_answer``, the view's own function).

Any doubt goes to Django, whose view then gives the normal answer (401, 403, 404, 406, 423): no
session cookie, a token, a query string, no held grant, a session due for its once-a-minute
renewal (Django saves it), a non-200 answer, any exception.

A session whose frame request passed the middleware is held for a few seconds
(``web_signin``: ``READROOM_DICOMWEB_SIGNIN_SECONDS``); its next frames skip the middleware's
queries and are answered with the headers the middleware added, unless Redis records a change of
the session, the user, their roles or devices since (read in the round trip the audit's key takes
anyway). Such a frame is answered only when this window's PHI row is already written: the row is
always written by a request that went through the whole chain (its actor and address)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from io import BytesIO

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.core.signals import request_finished, request_started
from django.http import HttpRequest, HttpResponse
from django.http.cookie import parse_cookie
from django.utils.module_loading import import_string

from accounts.middleware import IdleSessionMiddleware
from interfaces.dicom import web_signin

log = logging.getLogger(__name__)

FRAMES_PATH = re.compile(
    r"^/dicomweb/studies/(?P<study>[^/]+)/series/(?P<series>[^/]+)"
    r"/instances/(?P<instance>[^/]+)/frames/(?P<frames>[^/]+)$"
)

# Middleware run as on the Django path, in settings order.
APPLIED = frozenset(
    {
        "radiology.middleware.SecurityHeadersMiddleware",
        "radiology.middleware.QueryStringGuardMiddleware",
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django_otp.middleware.OTPMiddleware",
        "accounts.middleware.SecondFactorRequiredMiddleware",
        "accounts.middleware.ScreenLockMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "django_htmx.middleware.HtmxMiddleware",
        "auditlog.middleware.AuditlogMiddleware",
        "axes.middleware.AxesMiddleware",
    }
)
SESSION = "accounts.middleware.IdleSessionMiddleware"  # run, but a due renewal goes to Django
# Never acts on these paths: it serves its static prefix only.
NOT_APPLICABLE = frozenset({"whitenoise.middleware.WhiteNoiseMiddleware"})


class FallThrough(Exception):
    """Django answers this request."""


class _SessionNoRenewal(IdleSessionMiddleware):
    """The session as Django's middleware loads it; the request goes to Django when the session
    would be written (its once-a-minute renewal, a poll, a change), so activity, expiry and
    Set-Cookie stay Django's."""

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)
        if request.headers.get("X-ReadRoom-Poll") or self._renewal_due(request.session):
            raise FallThrough

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if request.session.modified or self._renewal_due(request.session):
            raise FallThrough
        return super().process_response(request, response)

    def _renewal_due(self, session) -> bool:
        return int(time.time()) - session.get(self.RENEWED_AT_KEY, 0) >= self.RENEW_EVERY_SECONDS


def _frames_view(request: HttpRequest) -> HttpResponse:
    """The checks DRF's ``DicomWebView`` makes (session authentication of an active user,
    ``MayUseImages``), then the view's own frames function under a held grant."""
    from interfaces.dicom import web
    from interfaces.dicom import web_access as access

    user = request.user
    if not user.is_authenticated or not user.is_active or not access.may_use_images(user):
        raise FallThrough
    uids = request.fast_frames_uids
    if not access.study_granted(user, uids["study"]):
        raise FallThrough
    accept = request.headers.get("Accept", "")
    response = web.frames_answer(
        user, accept, uids["study"], uids["series"], uids["instance"], uids["frames"]
    )
    if response.status_code != 200:
        raise FallThrough
    response["Allow"] = _ALLOW  # DRF's default header for the view
    request.fast_frames_view_headers = dict(response.items())  # what the middleware adds is held
    return response


def _allow() -> str:
    from interfaces.dicom.web import FramesView

    view = FramesView()
    view.setup(HttpRequest())  # as as_view() does: a GET view answers HEAD too
    return ", ".join(view.allowed_methods)


_ALLOW = ""
_CHAIN: Callable[[HttpRequest], HttpResponse] | None = None
_CHAIN_BUILT = False


def _chain() -> Callable[[HttpRequest], HttpResponse] | None:
    """The middleware around ``_frames_view``; None when settings hold one this module does not know."""
    global _CHAIN, _CHAIN_BUILT, _ALLOW
    if _CHAIN_BUILT:
        return _CHAIN
    handler: Callable[[HttpRequest], HttpResponse] = _frames_view
    unknown = [m for m in settings.MIDDLEWARE if m not in APPLIED | NOT_APPLICABLE | {SESSION}]
    if unknown:
        log.warning("DICOMweb fast frames off: middleware %s is not known to it", ", ".join(unknown))
        handler = None
    else:
        for path in reversed(settings.MIDDLEWARE):
            if path in NOT_APPLICABLE:
                continue
            handler = (_SessionNoRenewal if path == SESSION else import_string(path))(handler)
        _ALLOW = _allow()
    _CHAIN, _CHAIN_BUILT = handler, True
    return _CHAIN


def _serve(scope: dict, uids: dict[str, str]) -> HttpResponse | None:
    """The answer, or None: Django's. Runs in a pool thread; the request's signals (connections
    checked out and returned to the pool) as Django's handler sends them."""
    chain = _chain()
    if chain is None:
        return None
    request_started.send(sender=FastFrames, scope=scope)
    try:
        key = web_signin.request_key(scope)
        signin = web_signin.held(key, time.time())
        if signin is not None:
            response = _held_answer(signin, key, scope, uids)
            if response is not None:
                return response
        made_at = time.time()  # before the middleware reads the session and the user
        request = ASGIRequest(scope, BytesIO())
        request.fast_frames_uids = uids
        response = chain(request)
        if response.status_code != 200 or response.cookies or not response.has_header("Content-Type"):
            return None  # a middleware answered (redirect, 403, 423): Django says it again
        _signin_hold(key, request, response, made_at)
        return response
    except FallThrough:
        return None
    except Exception:
        # Django's view gives the same request its proper answer (404 as Http404, 500 logged there)
        log.debug("DICOMweb fast frames: handing %s to Django", scope.get("path"), exc_info=True)
        return None
    finally:
        request_finished.send(sender=FastFrames)


def _signin_hold(key: tuple, request: HttpRequest, response: HttpResponse, made_at: float) -> None:
    """Hold the sign-in this 200 passed with, and the headers the middleware added to the view's:
    all of them constant for a frames path (the security headers, ``Vary: Cookie``), except
    CommonMiddleware's Content-Length, which the held answer computes as it does. Not held when a
    middleware changed a header the view set (it would not be replayed exactly)."""
    view_headers = getattr(request, "fast_frames_view_headers", None)
    if view_headers is None or response.get("Content-Length") != str(len(response.content)):
        return
    if any(response.get(name) != value for name, value in view_headers.items()):
        return
    added = tuple(
        (name, value)
        for name, value in response.items()
        if name not in view_headers and name != "Content-Length"
    )
    web_signin.hold(key, request, made_at, added)


def _held_answer(signin: web_signin.HeldSignIn, key: tuple, scope: dict, uids: dict[str, str]):
    """The frames under a held sign-in and a held grant, or None (the whole chain then decides)."""
    from interfaces.dicom import web
    from interfaces.dicom import web_access as access

    user = signin.user
    if not access.study_granted(user, uids["study"]):
        return None
    changed, audited = web_signin.changes_and_audit(signin, access.frames_read_key(user, uids["study"]))
    if changed:
        web_signin.drop(key)
        return None
    if not audited:
        return None  # the PHI row is due: written through the chain, with the request's actor
    response = web.frames_answer(
        user,
        _accept(scope),
        uids["study"],
        uids["series"],
        uids["instance"],
        uids["frames"],
        audited=True,
        held_rows=True,
    )
    if response.status_code != 200:
        return None
    response["Allow"] = _ALLOW
    for name, value in signin.headers:
        response[name] = value
    response["Content-Length"] = str(len(response.content))  # as CommonMiddleware sets it
    return response


def _accept(scope: dict) -> str:
    """The Accept header as Django's ASGIRequest reads it (repeated headers joined by commas)."""
    values = [value.decode("latin1") for name, value in scope.get("headers", ()) if name == b"accept"]
    return ",".join(values)


def _candidate(scope: dict) -> dict[str, str] | None:
    """The UIDs of an OHIF frame request this app may try; None for everything else."""
    if scope["type"] != "http" or scope.get("method") != "GET" or scope.get("root_path"):
        return None
    if scope.get("query_string") or not getattr(settings, "READROOM_DICOMWEB_FAST_FRAMES", True):
        return None
    match = FRAMES_PATH.match(scope.get("path", ""))
    if match is None:
        return None
    cookie = b""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return None  # a token: DRF's token authentication, on the Django path
        if name == b"cookie":
            cookie = value
    if settings.SESSION_COOKIE_NAME not in parse_cookie(cookie.decode("latin1")):
        return None
    return match.groupdict()


class FastFrames:
    """ASGI app: OHIF's frame GETs here, everything else to ``django_app``."""

    def __init__(self, django_app) -> None:
        self.django_app = django_app

    async def __call__(self, scope, receive, send) -> None:
        uids = _candidate(scope)
        response = None
        if uids is not None:
            response = await sync_to_async(_serve, thread_sensitive=False)(scope, uids)
        if response is None:
            await self.django_app(scope, receive, send)
            return
        headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": response.content, "more_body": False})
