"""API authentication that the audit log can see.

AuditlogMiddleware records the request's user before DRF authenticates an ``Authorization: Token``
header, so token calls would leave audit rows without an actor. This class binds the actor as soon as
the token is accepted — for every API and DICOMweb view, in one place."""

from __future__ import annotations

from auditlog.context import auditlog_value
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed


def audit_actor_bind(user) -> None:
    """Fill in the actor of the current request's audit context (installed by AuditlogMiddleware)."""
    try:
        context = auditlog_value.get()
    except LookupError:
        return
    if context.get("actor") is None and user is not None and user.is_authenticated:
        context["actor"] = user


class AuditedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, checked against the stored hash (``accounts.tokens``) and
    the token's expiry; the actor bound for the audit log."""

    def authenticate_credentials(self, key: str):
        from accounts.tokens import api_token_for_key

        token = api_token_for_key(key)
        if token is None:
            raise AuthenticationFailed("Invalid token.")
        if token.expires_at is not None and token.expires_at <= timezone.now():
            raise AuthenticationFailed("Token expired: ask for a new one (manage.py drf_create_token).")
        if not token.user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        return token.user, token

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            audit_actor_bind(result[0])
        return result
