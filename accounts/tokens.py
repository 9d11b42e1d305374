"""API tokens (issue 15 §9): issued with an expiry, stored as a hash, shown once, rotated by issuing
a new one and revoking the old ones."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken, User

KEY_BYTES = 30  # 240 bits; 40 URL-safe characters, as long as DRF's keys were


def token_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    """The key (shown to the caller once, never stored) and its stored row."""

    key: str
    token: ApiToken


def api_token_issue(
    *, user: User, days: int | None = None, replace: bool = False, at: datetime | None = None
) -> IssuedToken:
    """A new token for ``user``, expiring after ``days`` (READROOM_API_TOKEN_DAYS by default; 0:
    never). ``replace`` revokes the user's other tokens in the same transaction: rotation without a
    moment when the hospital's system has no valid token is done by issuing first, switching the
    system over, then revoking (``api_token_revoke``)."""
    now = at or timezone.now()
    days = settings.READROOM_API_TOKEN_DAYS if days is None else days
    key = secrets.token_urlsafe(KEY_BYTES)
    with transaction.atomic():
        if replace:
            ApiToken.objects.filter(user=user).delete()
        token = ApiToken.objects.create(
            user=user,
            digest=token_digest(key),
            prefix=key[:8],
            created_at=now,
            expires_at=now + timedelta(days=days) if days else None,
        )
    return IssuedToken(key=key, token=token)


def api_token_revoke(*, user: User, keep: ApiToken | None = None) -> int:
    """Revoke the user's tokens (all but ``keep``); the number revoked."""
    tokens = ApiToken.objects.filter(user=user)
    if keep is not None:
        tokens = tokens.exclude(pk=keep.pk)
    return tokens.delete()[0]


def api_token_for_key(key: str) -> ApiToken | None:
    """The stored token a presented key belongs to (looked up by its hash), expired or not."""
    return ApiToken.objects.select_related("user").filter(digest=token_digest(key)).first()
