"""SMART Backend Services (HL7 SMART App Launch 2.x, "Backend Services"): how ReadRoom, a system
with no user at the keyboard, gets an access token from a hospital EHR's authorization server to
read its FHIR API (docs/priors.md, "SMART Backend Services").

The client-credentials grant with a signed JWT assertion (RFC 7523 §2.2): ReadRoom signs a short
assertion (iss = sub = its client id, aud = the token endpoint, a unique jti, exp ≤ 5 minutes) with
its private key — RS384 or ES384, the two SMART requires servers to accept — and the EHR checks it
against the public key (JWKS) it was given at registration. No shared secret travels; the key is
read from the environment variable the onboarding file names, as every source secret is.

The token endpoint is the source's ``token_url``, else discovered from
``[base]/.well-known/smart-configuration``. Tokens are kept per process until shortly before they
expire (SMART recommends 5 minutes), so a priors run asks for one token, not one per request; a
401 from the FHIR server drops the kept token and the request is made once more with a new one."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

import jwt

from facilities.models import SMART_ALGORITHMS
from imaging.priors import SourceUnavailable

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# What a prior-report source reads (SMART v2 scopes; a v1-only server is given its own in `scope`)
DEFAULT_SCOPE = "system/DiagnosticReport.rs system/Patient.rs system/Binary.r"
ASSERTION_LIFETIME = 300  # seconds; the spec's upper bound
DEFAULT_TOKEN_LIFETIME = 300  # an answer without expires_in (the spec requires it) is kept this long
MAX_ANSWER = 1024 * 1024  # a token or a smart-configuration answer is small: never read more


@dataclass(frozen=True)
class _Kept:
    token: str
    renew_at: float  # time.monotonic() after which a new token is asked for


_kept: dict[tuple, _Kept] = {}
_endpoints: dict[str, str] = {}
_lock = threading.Lock()  # C-GET and paging threads of one worker share the kept tokens
_signing_in: dict[tuple, threading.Lock] = {}  # one token request per source at a time (below)


def bearer(source: dict, *, timeout: float) -> str:
    """A current access token for ``source`` (``auth.type: smart_backend``): the kept one, else a new
    one from the token endpoint. Raises ``SourceUnavailable`` with a reason for the priors line."""
    key = _cache_key(source)
    if (token := _current(key)) is not None:
        return token
    with _lock:
        signing_in = _signing_in.setdefault(key, threading.Lock())
    # Threads of one retrieval (side-by-side fetches) that find no token wait for the first one's
    # sign-in instead of each asking the EHR for a token of its own.
    with signing_in:
        if (token := _current(key)) is not None:
            return token
        token, lifetime = _token_request(source, timeout=timeout)
        # renewed with a fifth of its life (at most a minute) left: a request never leaves with a
        # token that expires on its way
        margin = min(60.0, lifetime / 5)
        with _lock:
            _kept[key] = _Kept(token, time.monotonic() + lifetime - margin)
        return token


def _current(key: tuple) -> str | None:
    with _lock:
        kept = _kept.get(key)
    return kept.token if kept is not None and time.monotonic() < kept.renew_at else None


def refused(source: dict, token: str) -> None:
    """The FHIR server refused ``token`` (revoked, or the server's clock disagrees): forget it, so
    the next ``bearer`` asks the token endpoint — unless another thread has renewed it meanwhile
    (its new token is kept: dropping it would only make one more sign-in)."""
    key = _cache_key(source)
    with _lock:
        if (kept := _kept.get(key)) is not None and kept.token == token:
            del _kept[key]


def _cache_key(source: dict) -> tuple:
    auth = source["auth"]
    return (source["base_url"], auth["client_id"], auth["kid"], auth.get("scope") or DEFAULT_SCOPE)


def token_endpoint(source: dict, *, timeout: float) -> str:
    """The source's ``auth.token_url``, else the ``token_endpoint`` its FHIR base publishes in
    ``.well-known/smart-configuration`` (asked once per process and base)."""
    auth, base = source["auth"], source["base_url"].rstrip("/")
    if auth.get("token_url"):
        return auth["token_url"]
    with _lock:
        if base in _endpoints:
            return _endpoints[base]
    request = urllib.request.Request(  # noqa: S310 -- base_url is validated http(s) at onboarding
        f"{base}/.well-known/smart-configuration", headers={"Accept": "application/json"}
    )
    answer = _json_answer(request, timeout, "smart-configuration")
    endpoint = answer.get("token_endpoint") if isinstance(answer, dict) else None
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        raise SourceUnavailable("smart-configuration names no token_endpoint")
    with _lock:
        _endpoints[base] = endpoint
    return endpoint


def client_assertion(auth: dict, audience: str) -> str:
    """The signed JWT that stands for ReadRoom at the token endpoint ``audience``."""
    variable = auth["key_env"]
    pem = os.environ.get(variable, "")
    if not pem.strip():
        raise SourceUnavailable(f"credentials not configured (${variable} is not set)")
    issued = int(time.time())
    claims = {
        "iss": auth["client_id"],
        "sub": auth["client_id"],
        "aud": audience,
        "jti": uuid.uuid4().hex,  # the server refuses a jti it has seen: never reused
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
    }
    headers = {"kid": auth["kid"], "typ": "JWT"}
    try:
        return jwt.encode(claims, pem, algorithm=auth.get("alg") or SMART_ALGORITHMS[0], headers=headers)
    except (ValueError, TypeError, jwt.exceptions.PyJWTError) as exc:
        # never the key's text: this reason is shown on the reading screen and kept in the database
        raise SourceUnavailable(
            f"the private key in ${variable} cannot sign {auth.get('alg') or SMART_ALGORITHMS[0]}"
            " (a PEM RSA or EC P-384 key)"
        ) from exc


def _token_request(source: dict, *, timeout: float) -> tuple[str, float]:
    auth = source["auth"]
    endpoint = token_endpoint(source, timeout=timeout)
    form = urlencode(
        {
            "grant_type": "client_credentials",
            "scope": auth.get("scope") or DEFAULT_SCOPE,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(auth, endpoint),
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 -- validated http(s) (onboarding, or discovery above)
        endpoint,
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )
    answer = _json_answer(request, timeout, "token endpoint")
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise SourceUnavailable("the token endpoint's answer has no access_token")
    lifetime = answer.get("expires_in")
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    return token, float(lifetime)


def _json_answer(request: urllib.request.Request, timeout: float, what: str):
    """The JSON an authorization endpoint answered; its OAuth error (RFC 6749 §5.2) in the reason."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read(MAX_ANSWER)
    except urllib.error.HTTPError as exc:
        raise SourceUnavailable(f"{what} refused (HTTP {exc.code}{_oauth_error(exc)})") from exc
    except TimeoutError as exc:
        raise SourceUnavailable(f"no answer from the {what} (timed out)") from exc
    except (urllib.error.URLError, ConnectionError, OSError) as exc:
        raise SourceUnavailable(f"{what} unreachable") from exc
    try:
        return json.loads(body)
    except ValueError as exc:
        raise SourceUnavailable(f"the {what}'s answer is not JSON") from exc


def _oauth_error(exc: urllib.error.HTTPError) -> str:
    """``: invalid_client`` from an OAuth error body, else nothing (the code says enough)."""
    try:
        error = json.loads(exc.read(MAX_ANSWER)).get("error")
    except (ValueError, AttributeError, OSError):
        return ""
    return f": {error[:60]}" if isinstance(error, str) and error else ""
