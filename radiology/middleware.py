"""Project-wide request guards that sit before every app (settings MIDDLEWARE, first).

``QueryStringGuardMiddleware``: a query parameter name or value with a control character is a 400
before any view, authentication or database work (issue 15 §2: ``?bad%0Bkey=1`` reached a view that
echoed the name into a response header, which the server then could not send)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

# C0 controls and DEL. Tab is a control too: no ReadRoom parameter needs one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_character(text: str) -> bool:
    return bool(_CONTROL.search(text))


def _bad_request(request: HttpRequest, message: str) -> HttpResponse:
    if request.path.startswith("/fhir/"):
        # FHIR clients read errors as an OperationOutcome (R4 http.html), not DRF's {"detail": ...}
        from interfaces.fhir.views import operation_outcome

        return operation_outcome(400, "invalid", message)
    response = HttpResponse(json.dumps({"detail": message}), status=400, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


class QueryStringGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for name, values in request.GET.lists():
            if has_control_character(name):
                return _bad_request(request, "A query parameter name contains a control character.")
            if any(has_control_character(value) for value in values):
                return _bad_request(request, f"The query parameter {name!r} contains a control character.")
        return self.get_response(request)


# --- response headers (docs/security.md "Response headers") --------------------------------------


# ReadRoom's own pages: every script and style is a static file (no inline <script>, no style=
# attribute; tests/hardening/test_headers.py scans the templates), so the policy needs no
# 'unsafe-inline'. connect-src 'self' covers the same-origin websockets (CSP Level 3). A view that
# needs another policy (OHIF's page) sets its own header and this one is left alone.
def content_security_policy(*, frame_ancestors: str = "'none'") -> str:
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            "font-src 'self'",
            "connect-src 'self'",
            "worker-src 'self' blob:",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            f"frame-ancestors {frame_ancestors}",
        )
    )


CONTENT_SECURITY_POLICY = content_security_policy()
# The one exception to "never framed": the viewer pages the report editor shows in its images pane
# (docs/viewer.md "One reading screen"). Such a view says so with Django's
# ``@xframe_options_sameorigin``; its policy then lets this origin, and only it, frame the page.
# A refusal (404, the lock page) is built outside the view and stays unframeable.
SAME_ORIGIN_FRAMED_POLICY = content_security_policy(frame_ancestors="'self'")
# Nearly every dynamic response names a patient, a reader or a study: none may sit in a browser's
# disk cache or a shared proxy. A view whose response is not PHI and may be cached (OHIF's versioned
# bundles, static files) says so with its own Cache-Control, which is kept.
DEFAULT_CACHE_CONTROL = "no-store, private"


class SecurityHeadersMiddleware:
    """Outermost middleware: the headers every response carries, including the 400s of the query
    guard and WhiteNoise's static files. Django's SecurityMiddleware adds HSTS (production, over
    TLS), nosniff and Referrer-Policy to the responses that pass through it; these are set here too
    so that no early response goes without them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not response.has_header("Content-Security-Policy"):
            framed = response.get("X-Frame-Options") == "SAMEORIGIN"
            response["Content-Security-Policy"] = (
                SAME_ORIGIN_FRAMED_POLICY if framed else CONTENT_SECURITY_POLICY
            )
        if not response.has_header("Cache-Control"):
            response["Cache-Control"] = DEFAULT_CACHE_CONTROL
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response
