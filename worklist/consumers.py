"""``/ws/worklist/``: authenticate, join the user's groups, forward events — nothing else
(DESIGN.md §7). Events are JSON ``{"type": "study.added" | …, "study": {...}}``."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.roles import Role, has_role, requires_second_factor
from accounts.second_factor import session_is_verified
from worklist.groups import DIRECTOR_GROUP, OPERATIONS_GROUP, user_group

# Close codes in the 4000–4999 range are the application's (RFC 6455 §7.4.2).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_SECOND_FACTOR = 4403


@database_sync_to_async
def _groups_for(user, session) -> tuple[list[str] | None, int | None]:
    if requires_second_factor(user) and not session_is_verified(session, user):
        return None, CLOSE_SECOND_FACTOR
    groups = [user_group(user.pk)]
    if user.is_superuser or has_role(user, Role.OPERATIONS):
        groups.append(OPERATIONS_GROUP)
    if has_role(user, Role.MEDICAL_DIRECTOR):
        groups.append(DIRECTOR_GROUP)
    return groups, None


class WorklistConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        groups, refusal = await _groups_for(user, self.scope.get("session"))
        if refusal is not None:
            await self.close(code=refusal)
            return
        self.joined = groups
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        # The worklist socket is one-way; claims go through the REST API so they are checked there.
        await self.send_json({"type": "error", "detail": "This socket only delivers events."})

    async def worklist_event(self, message: dict) -> None:
        """Group messages ``{"type": "worklist.event", "event": {...}}`` → the browser."""
        await self.send_json(message["event"])
