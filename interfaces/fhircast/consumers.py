"""``/ws/fhircast/<endpoint>/``: the websocket channel of one FHIRcast subscription. Authenticates (the
endpoint id is the secret the authorised subscribe request returned), joins the topic's group,
forwards the subscribed events — nothing else.

The channel lives as long as the session whose topic it follows: logout tells it at once
(``session.ended``), and, as the worklist socket does, it looks at the session every
``READROOM_WS_SESSION_CHECK_SECONDS`` — an idle session expires without any request, so nothing
else would tell. Either way it sends the close events of what was open and ``UserLogout`` (those the
subscriber subscribed to), then closes with 4401."""

from __future__ import annotations

import asyncio
import contextlib

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from interfaces.fhircast.hub import (
    channel_close,
    channel_group,
    channel_subscription,
    confirmation,
    topic_end,
    topic_group,
    topic_live,
)
from interfaces.fhircast.receivers import session_end_events

CLOSE_UNKNOWN_ENDPOINT = 4404
CLOSE_SESSION_ENDED = 4401  # the topic's session signed out or expired (as the worklist socket's 4401)
CLOSE_UNSUBSCRIBED = 1000  # hub.mode=unsubscribe: the subscription ended normally


class FhircastConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.endpoint = self.scope["url_route"]["kwargs"]["endpoint"]
        self.subscription = await database_sync_to_async(channel_subscription)(self.endpoint)
        if self.subscription is None:
            await self.close(code=CLOSE_UNKNOWN_ENDPOINT)
            return
        live = await database_sync_to_async(topic_live)(self.subscription.topic, self.subscription.user_id)
        if not live:  # subscribed while the session lived; it has ended since, and so has the topic
            await database_sync_to_async(channel_close)(self.endpoint)
            await self.close(code=CLOSE_UNKNOWN_ENDPOINT)
            return
        self.groups_joined = [topic_group(self.subscription.topic), channel_group(self.endpoint)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send_json(confirmation(self.subscription))
        self.session_watch = asyncio.create_task(self._session_watch())

    async def _session_watch(self) -> None:
        topic, user_id = self.subscription.topic, self.subscription.user_id
        while True:
            await asyncio.sleep(settings.READROOM_WS_SESSION_CHECK_SECONDS)
            if not await database_sync_to_async(topic_live)(topic, user_id):
                await self._session_end("system-timeout")
                return

    async def _session_end(self, reason: str) -> None:
        """The topic ends with its session: the close events and UserLogout, then the
        subscription is removed (its endpoint no longer opens) and the channel closes."""
        topic = self.subscription.topic
        events = await database_sync_to_async(session_end_events)(topic, reason)
        for event in events:
            if event["event"]["hub.event"] in self.subscription.events:
                await self.send_json(event)
        await database_sync_to_async(topic_end)(topic)
        await database_sync_to_async(channel_close)(self.endpoint)
        await self.close(code=CLOSE_SESSION_ENDED)

    async def disconnect(self, code: int) -> None:
        watch = getattr(self, "session_watch", None)
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        for group in getattr(self, "groups_joined", ()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        pass  # event acknowledgements from the subscriber need no answer

    async def fhircast_event(self, message: dict) -> None:
        if message["event"]["event"]["hub.event"] in self.subscription.events:
            await self.send_json(message["event"])

    async def session_ended(self, message: dict) -> None:
        """The session whose topic this is signed out (``fhircast.receivers.session_channels_close``)."""
        await self._session_end("user-initiated")

    async def fhircast_unsubscribed(self, message: dict) -> None:
        """``hub.mode=unsubscribe`` named this channel's endpoint (``views.HubView``)."""
        await self.close(code=CLOSE_UNSUBSCRIBED)
