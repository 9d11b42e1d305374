"""ASGI entry point: HTTP through Django, websockets through Channels.

Websockets pass the origin check (only ALLOWED_HOSTS may open one, so another site cannot ride a
radiologist's session cookie) and then the session authentication; each consumer refuses an
anonymous scope itself."""

import os
import warnings

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radiology.settings.base")
# The web process pools its PostgreSQL connections (radiology/settings/base.py); 0 turns it off.
os.environ.setdefault("READROOM_DB_POOL_MAX_SIZE", "16")
# WhiteNoise 6 hands static files to Django as synchronous iterators; under ASGI Django consumes
# them in a thread and warns on every file. The files are small and cached by browsers.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators")

django.setup(set_prefix=False)  # must run before importing consumers (app registry)

from radiology.access_log import web_server_logs_redact  # noqa: E402

web_server_logs_redact()  # no query strings (MRNs in QIDO searches) in uvicorn's request lines

from radiology.asgi_handler import ClosingASGIHandler  # noqa: E402

# Django's get_asgi_application(), with the handler that returns connections on a failed send
django_asgi_app = ClosingASGIHandler()

from interfaces.dicom.web_fast import FastFrames  # noqa: E402

# OHIF's frame GETs answered beside the URL router and DRF, under the same checks; everything else,
# and any doubt, goes to Django (docs/viewer.md "Feeding OHIF fast"; READROOM_DICOMWEB_FAST_FRAMES)
http_app = FastFrames(django_asgi_app)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from radiology.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
