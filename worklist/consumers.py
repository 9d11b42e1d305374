"""``/ws/worklist/``: authenticate, join the user's groups, forward events — nothing else
(DESIGN.md §7). Events are JSON ``{"type": "study.added" | …, "study": {...}}``."""

from __future__ import annotations

import asyncio
import contextlib

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from accounts.middleware import session_locked
from accounts.roles import Role, has_role, requires_second_factor
from accounts.second_factor import session_is_verified
from accounts.selectors import session_state as session_state_read
from worklist.groups import DIRECTOR_GROUP, OPERATIONS_GROUP, session_group, user_group
from worklist.live import locked_event

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
        session_key = getattr(self.scope.get("session"), "session_key", None)
        if session_key:  # logout closes the session's sockets (``worklist.broadcast.on_user_logged_out``)
            groups.append(session_group(session_key))
        self.joined = groups
        # The screen lock is the server's to know (docs/alerts.md): while the session is locked this
        # socket forwards only what the lock may show, whatever the page's script does.
        self.locked = await database_sync_to_async(session_locked)(self.scope.get("session"))
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        if self.locked:
            await self.send_json({"type": "session.state", "state": "locked"})
        if session_key:
            self.session_watch = asyncio.create_task(self._session_watch(session_key, user.pk))

    async def _session_watch(self, session_key: str, user_id: int) -> None:
        """Authentication that lasts: an idle session expires without a request, so no signal
        tells of it; the socket looks every READROOM_WS_SESSION_CHECK_SECONDS and closes with it.
        The look also re-reads the lock, in case its message (``session.state``) went astray."""
        while True:
            await asyncio.sleep(settings.READROOM_WS_SESSION_CHECK_SECONDS)
            state = await database_sync_to_async(session_state_read)(session_key, user_id)
            if state is None:
                await self.close(code=CLOSE_UNAUTHENTICATED)
                return
            await self._lock_set(state == "locked")

    async def _lock_set(self, locked: bool) -> None:
        if locked != self.locked:
            self.locked = locked
            await self.send_json({"type": "session.state", "state": "locked" if locked else "live"})

    async def disconnect(self, code: int) -> None:
        watch = getattr(self, "session_watch", None)
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def session_ended(self, message: dict) -> None:
        """``SESSION_ENDED`` to the session's group: the user signed out in this browser."""
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def receive_json(self, content, **kwargs) -> None:
        # The worklist socket is one-way; claims go through the REST API so they are checked there.
        await self.send_json({"type": "error", "detail": "This socket only delivers events."})

    async def session_state(self, message: dict) -> None:
        """``{"type": "session.state", "state": "locked" | "live"}`` to the session's group: its
        screen was locked or unlocked (``worklist.live_views``)."""
        await self._lock_set(message.get("state") == "locked")

    async def worklist_event(self, message: dict) -> None:
        """Group messages ``{"type": "worklist.event", "event": {...}}`` → the browser; while the
        session is locked, only the lock's projection of it (``worklist.live.locked_event``)."""
        event = locked_event(message["event"]) if self.locked else message["event"]
        if event is not None:
            await self.send_json(event)
