"""API authentication that the audit log can see.

AuditlogMiddleware records the request's user before DRF authenticates an ``Authorization: Token``
header, so token calls would leave audit rows without an actor. This class binds the actor as soon as
the token is accepted — for every API and DICOMweb view, in one place."""

from __future__ import annotations

from auditlog.context import auditlog_value
from rest_framework.authentication import TokenAuthentication


def audit_actor_bind(user) -> None:
    """Fill in the actor of the current request's audit context (installed by AuditlogMiddleware)."""
    try:
        context = auditlog_value.get()
    except LookupError:
        return
    if context.get("actor") is None and user is not None and user.is_authenticated:
        context["actor"] = user


class AuditedTokenAuthentication(TokenAuthentication):
    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            audit_actor_bind(result[0])
        return result
