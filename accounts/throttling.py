"""Per-token rate limit for hospital integrations (issue 15): a runaway interface engine or script
calling with its ``Authorization: Token`` cannot take the web tier from the readers. Sessions (people
in a browser) are not limited here: the login is, and a person cannot click a web tier down.

The limit is the token's ``rate_per_minute``, else ``READROOM_API_TOKEN_RATE_PER_MINUTE``; neither set
means no limit (as before this existed). Above it DRF answers 429 with ``Retry-After`` (seconds until
the oldest request in the window leaves it), which HTTP clients and engines honour. The window is
DRF's sliding one, kept in the shared cache (Redis), so it holds across web processes."""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import ApiToken


class ApiTokenRateThrottle(SimpleRateThrottle):
    scope = "api_token"

    def get_rate(self) -> None:
        return None  # per request, from the token (``allow_request``)

    def get_cache_key(self, request, view) -> str | None:
        token = request.auth
        return f"throttle:api_token:{token.digest[:20]}" if isinstance(token, ApiToken) else None

    def allow_request(self, request, view) -> bool:
        token = request.auth
        if not isinstance(token, ApiToken):
            return True
        rate = token.rate_per_minute or settings.READROOM_API_TOKEN_RATE_PER_MINUTE
        if not rate:
            return True
        self.rate = f"{rate}/min"
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)
