"""The operations desk in Chromium (issue 19): reassigning a study from the operations worklist —
the new holder's open worklist shows it without a reload; the HL7 message browser."""

from __future__ import annotations

import dataclasses

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from tests.conftest import enrol_totp, make_radiologist
from tests.e2e.conftest import RequestsHeld, sign_in
from tests.e2e.test_worklist import asgi_server, in_worker, open_worklist, route  # noqa: F401 (fixture)
from tests.worklist.conftest import make_eligible, make_study
from worklist.models import StudyAssignment, StudyEvent, StudyEventKind
from worklist.services import study_claim

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _claim(study_id: int, user) -> None:
    study_claim(study_id=study_id, user=user, at=timezone.now())


def test_ops_reassigns_from_the_page_and_the_new_holder_sees_it_live(
    asgi_server,  # noqa: F811
    browser: Browser,
    page: Page,
    dr_neuro_il,
    ops_omar,
    chicago,
):
    # given two neuro readers eligible at Lakeshore, a head CT held by the second one
    other = make_radiologist("dr_neuro_two", "neuro")
    enrol_totp(other)
    make_eligible(dr_neuro_il, chicago)
    make_eligible(other, chicago)
    study = make_study(chicago, code="70450", text="CT HEAD W/O CONTRAST", completed_at=timezone.now())
    in_worker(route, study)
    in_worker(_claim, study.pk, other)
    # and dr_neuro_il's worklist open (the study is not theirs to see: someone holds it)
    sign_in(page, asgi_server, dr_neuro_il)
    open_worklist(page, asgi_server)
    mine = page.locator(f'[data-testid="study-row"][data-study-id="{study.pk}"]')
    expect(mine).to_have_count(0)

    # when operations opens the reassign form from the operations worklist
    ops_context = browser.new_context()
    ops = ops_context.new_page()
    sign_in(ops, asgi_server, ops_omar)
    ops.goto(f"{asgi_server.url}/operations/worklist/")
    # the socket's open resyncs the rows (it replaces them): a click while the replacement lands
    # is lost (CI: the form never opened), so the link is clicked once that fetch is over
    expect(ops.get_by_test_id("live-status")).to_have_attribute("data-state", "live")
    ops.wait_for_load_state("networkidle")
    row = ops.locator(f'[data-testid="study-row"][data-study-id="{study.pk}"]')
    row.get_by_test_id("reassign-link").click()
    # then the eligible readers are offered with their load, the holder marked
    expect(ops.get_by_test_id("current-holder")).to_have_text(str(other))
    candidate = ops.locator('[data-testid="candidate"][data-reader="dr_neuro_il"]')
    expect(candidate).to_contain_text("0 RVU · 0 studies")
    expect(candidate).to_contain_text("eligible now")
    expect(ops.locator('[data-testid="candidate"][data-reader="dr_neuro_two"]')).to_contain_text("holds it")
    # and without a reason the service refuses, saying so
    candidate.get_by_role("radio").check()
    ops.get_by_label("Reason (kept in the study's history)").evaluate("e => e.removeAttribute('required')")
    ops.get_by_role("button", name="Reassign").click()
    expect(ops.get_by_test_id("reassign-problem")).to_have_text("Give a reason for the reassignment.")
    # when ops gives it to dr_neuro_il with a reason
    ops.locator('[data-testid="candidate"][data-reader="dr_neuro_il"]').get_by_role("radio").check()
    ops.get_by_label("Reason (kept in the study's history)").fill("dr_neuro_two went home ill")
    ops.get_by_role("button", name="Reassign").click()
    expect(ops.get_by_role("heading", name="Operations worklist")).to_be_visible()
    expect(ops.locator(".messages")).to_contain_text(f"{study.accession_number} reassigned to")

    # then the new holder's open worklist shows it as theirs, live
    expect(mine.get_by_test_id("holder")).to_have_text("Yours")
    assert StudyAssignment.objects.get(study=study).claimed_by_id == dr_neuro_il.pk
    event = StudyEvent.objects.get(study=study, kind=StudyEventKind.REASSIGNED)
    assert event.detail == {"from": other.pk, "to": dr_neuro_il.pk, "reason": "dr_neuro_two went home ill"}
    ops_context.close()


@pytest.fixture
def emr_simulator_received():
    """A running EMR simulator on its own loop thread: (port, the frames it received)."""
    import asyncio
    import threading

    from interfaces.emr_simulator import emr_simulator_start
    from tests.net import free_port

    loop, port, received, state = asyncio.new_event_loop(), free_port(), [], {}
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        state["server"] = loop.run_until_complete(emr_simulator_start("127.0.0.1", port, received=received))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    yield port, received

    async def shutdown() -> None:
        state["server"].close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _msh10(frame: bytes) -> str:
    return frame.decode().split("\r")[0].split("|")[9]


def test_ops_finds_an_oru_by_accession_sees_its_ack_and_resends_it(
    live_server, page: Page, ops_omar, chicago, emr_simulator_received
):
    from interfaces.hl7.oru import oru_build
    from interfaces.hl7.outbound import outbound_message_enqueue, outbox_deliver
    from interfaces.models import InterfaceAction, OutboundMessage, OutboundStatus
    from tests.interfaces.oru_data import stroke_report

    port, received = emr_simulator_received
    chicago.hl7_outbound_host, chicago.hl7_outbound_port = "127.0.0.1", port
    chicago.save()
    # given a report delivered to Lakeshore's EMR and acknowledged, among another one
    for n, accession in enumerate(("ACC-STROKE-1", "ACC-STROKE-12"), start=1):
        report = stroke_report(control_id=f"RR000000000000000{n}")
        report = dataclasses.replace(
            report, order=dataclasses.replace(report.order, accession_number=accession)
        )
        outbound_message_enqueue(
            facility=chicago, payload=oru_build(report), control_id=report.control_id, source=f"report:{n}:v1"
        )
    outbox_deliver(facility_id=chicago.pk)
    assert [_msh10(f) for f in received] == ["RR0000000000000001", "RR0000000000000002"]

    # when operations searches the message browser by accession
    sign_in(page, live_server, ops_omar)
    # (by address: the live channel's sound control currently overlaps the main menu's last entries)
    page.goto(f"{live_server.url}/operations/interfaces/")
    page.get_by_role("navigation", name="Interfaces").get_by_role("link", name="HL7 messages").click()
    page.get_by_label("Direction").select_option("out")
    page.get_by_label("Accession").fill("ACC-STROKE-1")
    page.get_by_role("button", name="Find").click()
    # then exactly that report is listed (not ACC-STROKE-12), acknowledged AA
    rows = page.get_by_test_id("message-row")
    expect(rows).to_have_count(1)
    expect(rows.first.get_by_test_id("ack-code")).to_have_text("AA")
    rows.first.get_by_role("link", name="Open").click()
    # and it opens segment by segment, with the EMR's ACK
    expect(page.get_by_test_id("message-segments").locator("th")).to_contain_text(
        ["MSH", "PID", "ORC", "OBR"]
    )
    expect(page.get_by_test_id("ack-segments")).to_contain_text("MSA")
    expect(page.get_by_test_id("ack-segments")).to_contain_text("RR0000000000000001")

    # when ops resends it with a reason
    page.get_by_label("Reason for resending").fill("EMR lost the result during their upgrade")
    page.get_by_role("button", name="Resend with a new control ID").click()
    # then the EMR receives it again under a new control ID, acknowledged, and the page shows the copy
    expect(page.get_by_test_id("message-status")).to_have_text("Acknowledged")
    copy = OutboundMessage.objects.exclude(control_id__startswith="RR000").get()
    expect(page.get_by_test_id("control-id")).to_have_text(copy.control_id)
    assert copy.status == OutboundStatus.ACKED
    assert [_msh10(f) for f in received] == ["RR0000000000000001", "RR0000000000000002", copy.control_id]
    assert received[-1].decode().split("\r")[1:] == received[0].decode().split("\r")[1:]  # same report
    action = InterfaceAction.objects.get()
    assert (action.by, action.reason, action.resent_as) == (
        ops_omar,
        "EMR lost the result during their upgrade",
        copy,
    )


def test_a_facility_admin_cannot_reach_the_message_browser(live_server, page: Page, admin_chicago):
    sign_in(page, live_server, admin_chicago)
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Interfaces")).to_have_count(
        0
    )
    response = page.goto(f"{live_server.url}/operations/interfaces/messages/?direction=out")
    assert response.status == 403
    expect(page.get_by_text("The message browser is for the operations desk.")).to_be_visible()
    assert page.goto(f"{live_server.url}/operations/interfaces/messages/out/1/").status == 403


def test_ops_match_a_waiting_study_to_its_order_in_one_click(asgi_server, page: Page, ops_omar, chicago):  # noqa: F811
    # given a CT 45 min without its order, and the STAT order it answers
    from datetime import timedelta

    from imaging.models import Order, Patient, Study

    patient = Patient.objects.create(facility=chicago, mrn="MRN6060", assigning_authority="LAKESHORE")
    study = make_study(chicago, first_received_at=timezone.now() - timedelta(minutes=45))
    Study.objects.filter(pk=study.pk).update(patient=patient)
    order = Order.objects.create(
        facility=chicago, patient=patient, accession_number="A6060", procedure_code="70450",
        procedure_text="CT HEAD WO", priority="STAT",
    )  # fmt: skip
    # when operations type the reason while the socket's first resync is on its way (held here,
    # so the race CI met is met every time), and press the order's button once it has landed
    sign_in(page, asgi_server, ops_omar)
    resync = RequestsHeld(page, "**/operations/worklist/rows/**")
    page.goto(f"{asgi_server.url}/operations/worklist/")
    resync.wait_for_one()
    row = page.locator(f'[data-testid="waiting-row"][data-study-id="{study.pk}"]')
    reason = row.locator('input[name="reason"]')
    reason.fill("accession missing at the CT")
    page.evaluate("document.getElementById('worklist-live').dataset.stale = '1'")
    resync.release()
    expect(page.locator("#worklist-live:not([data-stale])")).to_have_count(1)
    # the reason typed survives the region's replacement, and keeps the focus
    expect(reason).to_have_value("accession missing at the CT")
    expect(reason).to_be_focused()
    row.locator(f'[data-testid="match-order"][data-order-id="{order.pk}"]').click()
    # then the desk says so and the row is gone; the study has the order and its priority
    expect(page.locator(".messages")).to_contain_text("matched to order A6060, now STAT")
    expect(page.locator(f'[data-testid="waiting-row"][data-study-id="{study.pk}"]')).to_have_count(0)
    assert Study.objects.filter(pk=study.pk, order=order, priority="STAT").exists()


def _match_by_hand(study_id: int, order_id: int, actor) -> None:
    from worklist.order_match import study_order_match

    study_order_match(
        study_id=study_id, order_id=order_id, actor=actor, reason="looked like it", at=timezone.now()
    )


def test_ops_undo_a_wrong_match_and_the_study_waits_for_its_order_again(
    asgi_server,  # noqa: F811
    page: Page,
    ops_omar,
    chicago,
):
    # given a CT matched by hand, by mistake, to another patient's STAT order
    from datetime import timedelta

    from imaging.models import Order, Patient, Study

    mine = Patient.objects.create(facility=chicago, mrn="MRN6161", assigning_authority="LAKESHORE")
    other = Patient.objects.create(facility=chicago, mrn="MRN6262", assigning_authority="LAKESHORE")
    study = make_study(chicago, first_received_at=timezone.now() - timedelta(minutes=45))
    Study.objects.filter(pk=study.pk).update(patient=mine, accession_number="A6I61")
    wrong = Order.objects.create(
        facility=chicago, patient=other, accession_number="A6262", procedure_code="70450",
        procedure_text="CT HEAD WO", priority="STAT",
    )  # fmt: skip
    in_worker(_match_by_hand, study.pk, wrong.pk, ops_omar)
    # when operations open their worklist: the match is listed with its undo button
    sign_in(page, asgi_server, ops_omar)
    page.goto(f"{asgi_server.url}/operations/worklist/")
    row = page.locator(f'[data-testid="matched-row"][data-study-id="{study.pk}"]')
    expect(row).to_contain_text("A6262")
    expect(row).to_contain_text("looked like it")
    # the button does nothing without a reason (required)
    row.locator('[data-testid="unmatch-order"]').click()
    expect(row).to_have_count(1)
    assert Study.objects.filter(pk=study.pk, order=wrong).exists()
    # with one, the desk says so; the study is back on the waiting list, offered the order again
    row.locator('input[name="reason"]').fill("wrong patient: the order was for the next CT")
    row.locator('[data-testid="unmatch-order"]').click()
    expect(page.locator(".messages")).to_contain_text("Match to order A6262 undone")
    expect(page.locator(f'[data-testid="matched-row"][data-study-id="{study.pk}"]')).to_have_count(0)
    waiting = page.locator(f'[data-testid="waiting-row"][data-study-id="{study.pk}"]')
    expect(waiting.locator(f'[data-testid="match-order"][data-order-id="{wrong.pk}"]')).to_have_count(1)
    study.refresh_from_db()
    assert (study.order_id, study.patient_id, study.accession_number, study.priority) == (
        None,
        mine.pk,
        "A6I61",
        "ROUTINE",
    )
    undone = StudyEvent.objects.get(study=study, kind=StudyEventKind.ORDER_UNMATCHED)
    assert (
        undone.actor == ops_omar and undone.detail["reason"] == "wrong patient: the order was for the next CT"
    )
