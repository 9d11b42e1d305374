"""``/ws/fhircast/<endpoint>/``: the websocket channel of one FHIRcast subscription. Authenticates (the
endpoint id is the secret the authorised subscribe request returned), joins the topic's group,
forwards the subscribed events — nothing else."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from interfaces.fhircast.hub import channel_subscription, confirmation, topic_group

CLOSE_UNKNOWN_ENDPOINT = 4404
CLOSE_SESSION_ENDED = 4401  # the topic's session signed out (as the worklist socket's 4401)


class FhircastConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        endpoint = self.scope["url_route"]["kwargs"]["endpoint"]
        self.subscription = await database_sync_to_async(channel_subscription)(endpoint)
        if self.subscription is None:
            await self.close(code=CLOSE_UNKNOWN_ENDPOINT)
            return
        self.group = topic_group(self.subscription.topic)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json(confirmation(self.subscription))

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        pass  # event acknowledgements from the subscriber need no answer

    async def fhircast_event(self, message: dict) -> None:
        if message["event"]["event"]["hub.event"] in self.subscription.events:
            await self.send_json(message["event"])

    async def session_ended(self, message: dict) -> None:
        """The session whose topic this is ended (``fhircast.receivers.session_channels_close``)."""
        await self.close(code=CLOSE_SESSION_ENDED)
