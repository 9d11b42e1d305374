import os

import pytest
import requests
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_readyz_checks_database_broker_channel_layer_and_storage(client, settings, tmp_path):
    settings.READROOM_STORAGE_DIR = str(tmp_path)
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "ready"
    checks = response.json()["checks"]
    assert set(checks) == {"database", "broker", "channel_layer", "storage"}
    assert all(value.startswith("ok") for value in checks.values())
    # the storage probe leaves nothing behind
    assert not any(path.is_file() for path in tmp_path.rglob("*"))


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
    # the database works: degraded, not down, and the reason names the broker
    assert body["status"] == "degraded"
    assert body["reason"].startswith("broker failed")
    assert body["checks"]["broker"].startswith("failed")
    assert body["checks"]["database"].startswith("ok")


def test_readyz_reports_storage_that_cannot_be_written(client, settings, tmp_path):
    # a storage "directory" that is a file: no write can succeed (as root too, unlike a chmod)
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    settings.READROOM_STORAGE_DIR = str(blocker)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["reason"].startswith("storage failed")
    assert body["checks"]["database"].startswith("ok")


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the Redis channel layer")
def test_readyz_reports_an_unreachable_channel_layer(client, settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:1/0"}]},
        }
    }
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["channel_layer"].startswith("failed")
    assert "channel_layer failed" in response.json()["reason"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the Redis channel layer")
def test_readyz_stays_ready_while_websockets_are_connected(ops_omar, settings, tmp_path):
    """Issue 15 §4: the old round trip through the channel layer timed out behind the live sockets'
    receive loop (half the calls 503). A real uvicorn with open worklist sockets: every call 200."""
    from django.test import Client
    from websockets.sync.client import connect

    from tests.e2e.test_worklist import AsgiServer, _server_connections_close

    settings.READROOM_STORAGE_DIR = str(tmp_path)
    server = AsgiServer()
    server.start()
    try:
        web = Client()
        web.force_login(ops_omar)
        name = settings.SESSION_COOKIE_NAME
        cookie = f"{name}={web.cookies[name].value}"
        url = f"ws://127.0.0.1:{server.port}/ws/worklist/"
        with (
            connect(url, origin=server.url, additional_headers={"Cookie": cookie}, open_timeout=10),
            connect(url, origin=server.url, additional_headers={"Cookie": cookie}, open_timeout=10),
        ):
            answers = [requests.get(f"{server.url}/readyz", timeout=10) for _ in range(20)]
    finally:
        server.stop()
        _server_connections_close()
    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers if a.status_code != 200]
