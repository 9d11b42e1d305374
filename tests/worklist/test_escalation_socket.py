"""The medical director's socket: it joins the director group and receives the code-stroke director
step; nobody else's socket joins that group."""

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from tests.worklist.conftest import make_study
from tests.worklist.test_consumer import _connect, _session_cookie
from worklist.escalation import stroke_step_fire
from worklist.groups import DIRECTOR_GROUP
from worklist.models import EscalationStep
from worklist.services import study_route

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@sync_to_async
def _unclaimed_stroke_at_five_minutes(facility) -> int:
    study = make_study(
        facility,
        code="70450",
        text="CT HEAD W/O CONTRAST CODE STROKE",
        description="CT HEAD WO",
        priority="STROKE",
        is_stroke=True,
        first_received_at=timezone.now(),
    )
    study_route(study_id=study.pk)  # the alert (to readers and operations, not the director)
    stroke_step_fire(
        study_id=study.pk, step=EscalationStep.STROKE_DIRECTOR, at=timezone.now() + timedelta(minutes=5)
    )
    return study.pk


async def test_director_socket_joins_the_director_group_and_gets_the_five_minute_step(
    chicago, director_dana, ops_omar
):
    # given the medical director's verified socket and an operations socket
    director, connected, _ = await _connect(await _session_cookie(director_dana, verified=True))
    assert connected
    operations, connected, _ = await _connect(await _session_cookie(ops_omar))
    assert connected
    # when a code stroke stays unclaimed for five minutes
    study_id = await _unclaimed_stroke_at_five_minutes(chicago)
    # then the director's screen gets the director step's alert, then the step (and did not get the
    # readers' alert)
    alert = await director.receive_json_from(timeout=3)
    assert (alert["type"], alert["step"], alert["study"]["id"]) == ("alert", "stroke_director", study_id)
    event = await director.receive_json_from(timeout=3)
    assert event["type"] == "study.escalated"
    assert (event["study"]["id"], event["escalation"]["step"]) == (study_id, EscalationStep.STROKE_DIRECTOR)
    assert await director.receive_nothing(timeout=0.3)
    # and a message to the director group reaches no operations socket (it has its own group)
    # the routing: its alert first, then study.added and the alert step with their rows
    for expected in ("alert", "study.added", "study.escalated"):
        assert (await operations.receive_json_from(timeout=3))["type"] == expected
    for expected in ("alert", "study.escalated"):  # the director step, as operations
        assert (await operations.receive_json_from(timeout=3))["type"] == expected
    await get_channel_layer().group_send(
        DIRECTOR_GROUP, {"type": "worklist.event", "event": {"type": "ping"}}
    )
    assert (await director.receive_json_from(timeout=2))["type"] == "ping"
    assert await operations.receive_nothing(timeout=0.3)
    await director.disconnect()
    await operations.disconnect()
