"""Signing in: Argon2, lockout, idle expiry, and the second factor for roles that sign."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.hashers import get_hasher
from django.test import override_settings
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.conftest import PASSWORD, current_totp

pytestmark = pytest.mark.django_db


def test_production_hasher_is_argon2():
    from radiology.settings import base

    assert base.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"
    with override_settings(PASSWORD_HASHERS=base.PASSWORD_HASHERS):
        assert get_hasher().algorithm == "argon2"


def test_login_page_then_home(client, ops_omar):
    assert b"Sign in to ReadRoom" in client.get("/login/").content
    response = client.post("/login/", {"username": "ops_omar", "password": PASSWORD})
    assert response.status_code == 302
    home = client.get("/")
    assert home.status_code == 200
    assert b"Operations" in home.content


def test_wrong_password_says_so_and_keeps_user_out(client, ops_omar):
    response = client.post("/login/", {"username": "ops_omar", "password": "wrong"})
    assert response.status_code == 200
    assert b"correct username and password" in response.content
    assert client.get("/").status_code == 302


def test_repeated_failures_lock_the_account_from_that_address(client, ops_omar):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "ops_omar", "password": "wrong"})
    # even the right password is refused now
    response = client.post("/login/", {"username": "ops_omar", "password": PASSWORD})
    assert response.status_code == 429
    assert b"Too many failed sign-ins" in response.content
    assert client.get("/").status_code == 302


def test_lockout_is_per_address(client, ops_omar):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "ops_omar", "password": "wrong"}, REMOTE_ADDR="203.0.113.9")
    # the same user from the hospital's own address still gets in
    response = client.post(
        "/login/", {"username": "ops_omar", "password": PASSWORD}, REMOTE_ADDR="198.51.100.7"
    )
    assert response.status_code == 302


def test_idle_session_expires(client, ops_omar):
    client.force_login(ops_omar)
    start = timezone.now()
    with time_machine.travel(start + timedelta(minutes=settings.READROOM_IDLE_TIMEOUT_MINUTES - 1)):
        assert client.get("/").status_code == 200  # activity renews the session
    with time_machine.travel(start + timedelta(minutes=2 * settings.READROOM_IDLE_TIMEOUT_MINUTES)):
        response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_activity_renews_the_session_at_most_once_a_minute(client, ops_omar):
    from django.contrib.sessions.models import Session
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(ops_omar)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        client.get("/")  # renews: the expiry is now start + the timeout
    expiry = Session.objects.get().expire_date
    # a request 30 s later writes no session row (the worklist polls the API all shift long)
    with (
        time_machine.travel(start + timedelta(seconds=30), tick=False),
        CaptureQueriesContext(connection) as queries,
    ):
        assert client.get("/").status_code == 200
    assert not [q for q in queries.captured_queries if "django_session" in q["sql"] and "UPDATE" in q["sql"]]
    assert Session.objects.get().expire_date == expiry
    # a minute after the last renewal, activity moves the expiry on again
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        client.get("/")
    assert Session.objects.get().expire_date >= expiry + timedelta(seconds=60)


def test_logout_ends_the_session(client, ops_omar):
    client.force_login(ops_omar)
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_radiologist_without_authenticator_must_enrol(client, dr_msk_wi):
    client.force_login(dr_msk_wi)
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/account/security/")
    page = client.get(response["Location"])
    assert b"enrol an authenticator app to continue" in page.content
    # the API is refused too, with a message instead of a redirect
    api = client.get("/api/v1/facilities/")
    assert api.status_code == 403
    assert "second factor" in api.json()["detail"]


def test_enrolment_confirms_with_a_code_and_verifies_the_session(client, dr_msk_wi):
    client.force_login(dr_msk_wi)
    client.get("/account/security/")
    device = TOTPDevice.objects.get(user=dr_msk_wi, confirmed=False)
    bad = client.post(
        "/account/security/", {"token": "000000" if current_totp(device) != "000000" else "111111"}
    )
    assert b"does not match" in bad.content
    # django-otp throttles after a failure (1 s, doubling): the next try comes a few seconds later
    with time_machine.travel(timezone.now() + timedelta(seconds=5)):
        device.refresh_from_db()
        response = client.post("/account/security/", {"token": current_totp(device)})
    assert response.status_code == 302
    device.refresh_from_db()
    assert device.confirmed
    assert client.get("/").status_code == 200


def test_enrolled_radiologist_must_enter_code_after_password(client, dr_neuro_il):
    client.post("/login/", {"username": "dr_neuro_il", "password": PASSWORD})
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/account/verify/")
    wrong = client.post("/account/verify/", {"token": "12345a"})
    assert wrong.status_code == 200
    assert b"not valid" in wrong.content
    with time_machine.travel(timezone.now() + timedelta(seconds=5)):
        device = TOTPDevice.objects.get(user=dr_neuro_il)
        ok = client.post("/account/verify/", {"token": current_totp(device), "next": "/facilities/"})
    assert ok.status_code == 302
    assert ok["Location"] == "/facilities/"
    assert client.get("/").status_code == 200


def test_verify_refuses_offsite_next(client, dr_neuro_il):
    client.force_login(dr_neuro_il)
    device = TOTPDevice.objects.get(user=dr_neuro_il)
    response = client.post(
        "/account/verify/", {"token": current_totp(device), "next": "https://evil.example/"}
    )
    assert response["Location"] == "/worklist/"  # a radiologist's landing, never the other site


def test_operations_do_not_need_a_second_factor(client, ops_omar):
    client.force_login(ops_omar)
    assert client.get("/facilities/").status_code == 200


def test_admin_login_goes_through_the_one_login_page(client):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_a_radiologist_lands_on_the_worklist_and_operations_on_home(client, dr_neuro_il, ops_omar):
    # a radiologist: password, then the code, then their worklist (not a welcome page)
    response = client.post("/login/", {"username": "dr_neuro_il", "password": PASSWORD})
    assert response["Location"] == "/worklist/"
    device = TOTPDevice.objects.get(user=dr_neuro_il)
    verified = client.post("/account/verify/", {"token": current_totp(device)})
    assert verified["Location"] == "/worklist/"
    client.logout()
    # operations: home, as before
    response = client.post("/login/", {"username": "ops_omar", "password": PASSWORD})
    assert response["Location"] == "/"
