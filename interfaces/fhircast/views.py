"""``/fhircast/``: the hub's HTTP end (HL7 FHIRcast STU3). ``POST`` subscribe / unsubscribe
(form-encoded or JSON), authorised by the session (with its CSRF token) or an API token; ``GET`` tells a
signed-in user their session's ``hub.topic`` (and the events offered)."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts.authentication import AuditedTokenAuthentication
from interfaces.fhircast.hub import (
    EVENTS,
    SubscribeError,
    channel_close,
    channel_group,
    channel_open,
    channel_subscription,
    session_topic,
    subscription_parse,
)


# Not in ReadRoom's OpenAPI: the hub's form-encoded protocol is the FHIRcast STU3 specification's
# (docs/fhircast.md), which OpenAPI clients do not drive.
@extend_schema(exclude=True)
class HubView(APIView):
    authentication_classes = [SessionAuthentication, AuditedTokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> JsonResponse:
        session_key = request._request.session.session_key
        if not session_key:
            return JsonResponse({"detail": "hub.topic is per browser session: sign in with one."}, status=400)
        topic = session_topic(session_key, request.user.pk)
        return JsonResponse({"hub.topic": topic, "events": list(EVENTS), "hub.channel.type": ["websocket"]})

    def post(self, request: Request) -> JsonResponse:
        try:
            mode, subscription = subscription_parse(request.data, user_id=request.user.pk)
        except SubscribeError as error:
            return JsonResponse({"detail": error.message}, status=error.status)
        if mode == "unsubscribe":
            endpoint = str(request.data.get("hub.channel.endpoint", "")).rstrip("/").rpartition("/")[2]
            current = channel_subscription(endpoint)
            if current is not None and current.topic == subscription.topic:
                channel_close(endpoint)
                async_to_sync(get_channel_layer().group_send)(
                    channel_group(endpoint), {"type": "fhircast.unsubscribed"}
                )
            return JsonResponse({}, status=202)
        endpoint = channel_open(subscription)
        scheme = "wss" if request.is_secure() else "ws"
        url = f"{scheme}://{request.get_host()}/ws/fhircast/{endpoint}/"
        return JsonResponse({"hub.channel.endpoint": url}, status=202)
