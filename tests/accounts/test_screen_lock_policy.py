"""Per-facility and per-role screen-lock times (issue 14, docs/alerts.md "Per facility, per role"):
the effective lock time is the strictest of the user's role default and the contracts of the
facilities they see, never past the session's idle limit; the page is given it, and the server
locks an idle session at it (plus its slack) even when no page says so."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from accounts.middleware import SERVER_LOCK_SLACK_SECONDS, lock_ceiling_seconds
from credentialing.screen_lock import screen_lock_seconds
from tests.worklist.conftest import make_eligible

pytestmark = pytest.mark.django_db


def _contract(facility, minutes: int | None) -> None:
    facility.screen_lock_minutes = minutes
    facility.save(update_fields=["screen_lock_minutes"])


def test_the_strictest_contract_among_the_readers_facilities_applies(
    dr_neuro_il, dr_msk_wi, chicago, lakeview
):
    # given Lakeshore's contract asking for a 5-minute lock, Lakeview none
    _contract(chicago, 5)
    make_eligible(dr_neuro_il, chicago)
    make_eligible(dr_msk_wi, lakeview)
    # then its reader locks at 5 minutes; the reader privileged only at Lakeview at ReadRoom's time
    assert screen_lock_seconds(dr_neuro_il) == 300
    assert screen_lock_seconds(dr_msk_wi) == settings.READROOM_LOCK_AFTER_SECONDS
    # and when Lakeview asks for 3 minutes, a reader at both gets the stricter
    _contract(lakeview, 3)
    make_eligible(dr_neuro_il, lakeview)
    assert screen_lock_seconds(dr_neuro_il) == 180
    # an inactive facility's contract binds nobody
    lakeview.active = False
    lakeview.save(update_fields=["active"])
    assert screen_lock_seconds(dr_neuro_il) == 300


def test_operations_see_every_facility_and_a_facility_admin_their_own(
    ops_omar, admin_chicago, admin_lakeview, chicago, lakeview
):
    _contract(chicago, 4)
    # operations see every client: Lakeshore's contract binds them
    assert screen_lock_seconds(ops_omar) == 240
    # a facility admin only their own facility's
    assert screen_lock_seconds(admin_chicago) == 240
    assert screen_lock_seconds(admin_lakeview) == settings.READROOM_LOCK_AFTER_SECONDS


def test_a_role_default_replaces_readrooms_and_a_contract_only_shortens_it(
    settings, dr_neuro_il, ops_omar, chicago
):
    # given readers at a reading station 10 minutes, the operations desk 4 minutes
    settings.READROOM_LOCK_AFTER_SECONDS = 420
    settings.READROOM_LOCK_AFTER_SECONDS_BY_ROLE = {"RADIOLOGIST": 600, "OPERATIONS": 240}
    make_eligible(dr_neuro_il, chicago)
    assert screen_lock_seconds(dr_neuro_il) == 600
    assert screen_lock_seconds(ops_omar) == 240
    # a contract stricter than the role shortens it; a looser one does not lengthen it
    _contract(chicago, 8)
    assert screen_lock_seconds(dr_neuro_il) == 480
    assert screen_lock_seconds(ops_omar) == 240


def test_nothing_locks_later_than_the_sessions_idle_limit(settings, dr_neuro_il, chicago):
    # given a role default longer than the session's idle life (HIPAA automatic logoff)
    settings.READROOM_LOCK_AFTER_SECONDS_BY_ROLE = {"RADIOLOGIST": 3 * settings.SESSION_COOKIE_AGE}
    _contract(chicago, 3 * settings.SESSION_COOKIE_AGE // 60)
    make_eligible(dr_neuro_il, chicago)
    # then the lock comes first, with the server's slack still before the session's end
    assert screen_lock_seconds(dr_neuro_il) == lock_ceiling_seconds()
    assert lock_ceiling_seconds() + SERVER_LOCK_SLACK_SECONDS < settings.SESSION_COOKIE_AGE


def _lock_after_on_page(client) -> int:
    html = client.get("/account/security/").content.decode()
    return int(re.search(r'data-lock-after="(\d+)"', html).group(1))


def test_the_page_is_given_the_effective_time(verified_client, client, dr_neuro_il, ops_omar, chicago):
    _contract(chicago, 2)
    make_eligible(dr_neuro_il, chicago)
    assert _lock_after_on_page(verified_client(dr_neuro_il)) == 120
    client.logout()
    _contract(chicago, None)
    client.force_login(ops_omar)
    assert _lock_after_on_page(client) == min(settings.READROOM_LOCK_AFTER_SECONDS, lock_ceiling_seconds())


def test_the_server_locks_a_strict_facilitys_reader_earlier_though_no_page_said_so(
    verified_client, dr_neuro_il, dr_msk_wi, chicago, lakeview
):
    from django.test import Client

    from tests.conftest import enrol_totp

    # given Lakeshore's 2-minute contract, its reader and Lakeview's (no contract), both signed in
    _contract(chicago, 2)
    make_eligible(dr_neuro_il, chicago)
    make_eligible(dr_msk_wi, lakeview)
    enrol_totp(dr_msk_wi)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        strict = verified_client(dr_neuro_il)
        assert strict.get("/account/security/").status_code == 200
        lenient = Client()
        _verified(lenient, dr_msk_wi)
        assert lenient.get("/account/security/").status_code == 200
    # when neither does anything for the contract's 2 minutes and the server's slack
    with time_machine.travel(start + timedelta(seconds=120 + SERVER_LOCK_SLACK_SECONDS + 1), tick=False):
        # then the strict facility's reader gets the lock page, the API a 423, and the session says
        # locked (its sockets too: accounts.selectors.session_state)
        page = strict.get("/account/security/", headers={"Accept": "text/html"})
        assert page.status_code == 423
        assert strict.get("/api/v1/worklist/").status_code == 423
        assert strict.session.get("_readroom_locked") is True
        # and the other reader, whose facilities ask for nothing stricter, still works
        assert lenient.get("/account/security/").status_code == 200


def _verified(client, user) -> None:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from tests.conftest import current_totp

    client.force_login(user)
    device = TOTPDevice.objects.get(user=user, confirmed=True)
    assert client.post("/account/verify/", {"token": current_totp(device)}).status_code == 302


def test_the_pages_heartbeat_keeps_a_working_reader_unlocked_and_a_locked_one_is_told(
    verified_client, dr_neuro_il, chicago
):
    # given Lakeshore's 2-minute contract and its reader signed in
    _contract(chicago, 2)
    make_eligible(dr_neuro_il, chicago)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        reader = verified_client(dr_neuro_il)
        assert reader.get("/account/security/").status_code == 200
    # when they type a report for 4 minutes (no request but the page's heartbeat every 30 s)
    for seconds in range(30, 241, 30):
        with time_machine.travel(start + timedelta(seconds=seconds), tick=False):
            beat = reader.post("/live/active/")
            assert beat.json() == {"state": "live", "lock_after": 120}, seconds
    # then the server never locked them
    with time_machine.travel(start + timedelta(seconds=250), tick=False):
        assert reader.get("/account/security/").status_code == 200
    # and once they stop, the next beat (a page left open) hears that the server locked the session
    with time_machine.travel(start + timedelta(seconds=250 + 120 + SERVER_LOCK_SLACK_SECONDS), tick=False):
        assert reader.post("/live/active/").json() == {"state": "locked"}
        assert reader.get("/account/security/", headers={"Accept": "text/html"}).status_code == 423


def test_the_heartbeat_is_refused_to_anonymous(client):
    assert client.post("/live/active/").status_code == 401


def test_a_misspelt_role_in_the_lock_setting_is_a_start_up_error(settings):
    from accounts.apps import lock_roles_check

    settings.READROOM_LOCK_AFTER_SECONDS_BY_ROLE = {"RADIOLOGIST": 600, "OPERATION": 300}
    assert [error.id for error in lock_roles_check(None)] == ["accounts.E001"]
    settings.READROOM_LOCK_AFTER_SECONDS_BY_ROLE = {"RADIOLOGIST": 600, "OPERATIONS": 300}
    assert lock_roles_check(None) == []


def test_each_role_is_given_its_own_minutes_on_the_page(
    settings, verified_client, client, dr_neuro_il, ops_omar, chicago
):
    # given the operations desk (a shared room) set shorter than reading stations, no contract
    settings.READROOM_LOCK_AFTER_SECONDS_BY_ROLE = {"RADIOLOGIST": 600, "OPERATIONS": 240}
    make_eligible(dr_neuro_il, chicago)
    # then each role's page is given its role's time
    assert _lock_after_on_page(verified_client(dr_neuro_il)) == 600
    client.logout()
    client.force_login(ops_omar)
    assert _lock_after_on_page(client) == 240
    # and a facility contract stricter than the role binds them from the page's next heartbeat
    _contract(chicago, 3)
    assert client.post("/live/active/").json()["lock_after"] == 180
    assert _lock_after_on_page(client) == 180


def test_a_contract_changed_while_locked_binds_from_the_unlock(verified_client, dr_neuro_il, chicago):
    import json

    from tests.conftest import PASSWORD

    # given Lakeshore's reader at a 5-minute contract, their screen locked
    _contract(chicago, 5)
    make_eligible(dr_neuro_il, chicago)
    client = verified_client(dr_neuro_il)
    assert _lock_after_on_page(client) == 300
    assert client.post("/live/lock/").json() == {"state": "locked"}
    # when the contract is cut to 2 minutes meanwhile, then the unlock's answer gives the page the new
    # time (live.js takes it) and the session keeps it for the server's own lock
    _contract(chicago, 2)
    unlock = client.post("/live/unlock/", json.dumps({"secret": PASSWORD}), content_type="application/json")
    assert unlock.json() == {"state": "live", "lock_after": 120}
    assert client.session["_readroom_lock_after"] == 120


def test_only_operations_change_a_facilitys_screen_lock(
    verified_client, dr_neuro_il, admin_chicago, admin_lakeview, ops_omar, chicago
):
    url = f"/admin/facilities/facility/{chicago.pk}/change/"
    form = {"name": chicago.name, "timezone": chicago.timezone, "screen_lock_minutes": 1}
    # a radiologist (no admin access) is refused outright
    client = verified_client(dr_neuro_il)
    assert client.post(url, form).status_code == 403
    # another facility's admin cannot reach Lakeshore's form at all
    client.force_login(admin_lakeview)
    client.post(url, form)
    # Lakeshore's own admin edits its name but the contract's lock is read-only to them
    client.force_login(admin_chicago)
    assert b'name="screen_lock_minutes"' not in client.get(url).content
    assert client.post(url, form).status_code == 302
    chicago.refresh_from_db()
    assert chicago.screen_lock_minutes is None
    # operations (ReadRoom's interface analysts) set the contract's value
    client.force_login(ops_omar)
    assert b'name="screen_lock_minutes"' in client.get(url).content
