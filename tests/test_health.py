import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_broker_and_channel_layer(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    checks = response.json()["checks"]
    assert set(checks) == {"database", "broker", "channel_layer"}
    assert all(value.startswith("ok") for value in checks.values())


def test_readyz_reports_an_unreachable_broker(client, settings):
    # a port nothing listens on: the check must fail and name the part
    with override_settings(
        REDIS_URL="redis://127.0.0.1:1/0",
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        CELERY_TASK_ALWAYS_EAGER=False,
    ):
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["broker"].startswith("failed")
    assert body["checks"]["database"].startswith("ok")
