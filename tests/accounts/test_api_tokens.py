"""Issue 15 §9: API tokens are stored as a hash, shown once, expire, and rotate; the plain DRF
tokens of an existing install keep working after the migration, and their plain keys are gone."""

from __future__ import annotations

import importlib
import io
from datetime import timedelta

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.models import ApiToken
from accounts.tokens import api_token_issue, token_digest

pytestmark = pytest.mark.django_db


def _call(key: str):
    return Client(HTTP_AUTHORIZATION=f"Token {key}").get("/api/v1/facilities/")


def _issued(username: str, *args) -> str:
    out = io.StringIO()
    call_command("drf_create_token", username, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().split()[2]  # "Generated token <key> for user <name>"


def test_a_token_is_shown_once_and_stored_as_its_hash(ops_omar, chicago):
    key = _issued(ops_omar.username)
    token = ApiToken.objects.get(user=ops_omar)
    # the key is nowhere in the row: only its SHA-256 and an 8-character prefix
    assert token.digest == token_digest(key) and token.prefix == key[:8]
    assert key not in {token.digest, token.prefix, str(token)}
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM accounts_apitoken WHERE digest = %s OR prefix = %s", [key, key])
        assert cursor.fetchone()[0] == 0
    # it expires after READROOM_API_TOKEN_DAYS by default
    assert timedelta(days=364) < token.expires_at - timezone.now() <= timedelta(days=365)
    # the key works; a wrong one is a 401
    assert _call(key).status_code == 200
    assert _call(key[:-1] + ("A" if key[-1] != "A" else "B")).status_code == 401


def test_an_expired_token_is_refused_with_the_reason(ops_omar, chicago):
    issued = api_token_issue(user=ops_omar)
    ApiToken.objects.filter(pk=issued.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = _call(issued.key)
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_rotation_revokes_the_old_token(ops_omar, chicago):
    old = _issued(ops_omar.username)
    new = _issued(ops_omar.username, "--reset")
    assert _call(old).status_code == 401
    assert _call(new).status_code == 200
    assert ApiToken.objects.filter(user=ops_omar).count() == 1


def test_an_inactive_users_token_is_refused(ops_omar, chicago):
    key = api_token_issue(user=ops_omar).key
    ops_omar.is_active = False
    ops_omar.save(update_fields=["is_active"])
    assert _call(key).status_code == 401


def test_the_migration_hashes_existing_plain_tokens_and_drops_them(ops_omar, chicago):
    # given an install with a DRF token table holding a plain key (as rest_framework.authtoken made)
    plain = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamptz NOT NULL,"
            " user_id bigint NOT NULL)"
        )
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, now(), %s)", [plain, ops_omar.pk])
    # when the migration's data step runs
    migration = importlib.import_module("accounts.migrations.0002_api_tokens_hashed")
    with connection.schema_editor() as editor:
        migration.plain_tokens_hash(apps, editor)
    # then the same key still works, only its hash is kept, and the plain table is gone
    assert ApiToken.objects.get(user=ops_omar).digest == token_digest(plain)
    assert "authtoken_token" not in connection.introspection.table_names()
    assert _call(plain).status_code == 200


def test_a_token_above_its_rate_gets_429_with_retry_after_and_other_callers_do_not(
    ops_omar, chicago, settings
):
    """Issue 15: a runaway integration is limited per token (``ApiToken.rate_per_minute``); the
    limit says when to come back, and neither another token nor a signed-in person is slowed."""
    limited = api_token_issue(user=ops_omar)
    ApiToken.objects.filter(digest=token_digest(limited.key)).update(rate_per_minute=3)
    other = api_token_issue(user=ops_omar)
    # given three calls within the minute
    assert [_call(limited.key).status_code for _ in range(3)] == [200, 200, 200]
    # then the fourth is refused with 429, a reason, and when to retry
    refused = _call(limited.key)
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "throttled" in refused.json()["detail"].lower()
    # and another token with no rate of its own (and no default) is not limited
    assert {_call(other.key).status_code for _ in range(5)} == {200}
    # and a person's session is not limited by tokens' rates
    client = Client()
    client.force_login(ops_omar)
    assert client.get("/api/v1/facilities/").status_code == 200
    # and the install's default applies to a token without its own rate
    settings.READROOM_API_TOKEN_RATE_PER_MINUTE = 2
    fresh = api_token_issue(user=ops_omar)
    assert [_call(fresh.key).status_code for _ in range(3)] == [200, 200, 429]
