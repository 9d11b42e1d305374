"""Settings read from the environment.

Two topologies, no code change between them (DESIGN.md §2):

* **embedded** (no ``DATABASE_URL``/``REDIS_URL``): SQLite under ``READROOM_DATA_DIR``, Channels'
  in-memory layer, Celery tasks run inline, a secret key and a storage key generated once and kept
  in the data directory. One process serves everything (``manage.py run_embedded``).
* **production** (``DATABASE_URL`` + ``REDIS_URL``): PostgreSQL, channels-redis, a Redis broker.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

DATA_DIR = Path(env.str("READROOM_DATA_DIR", default=str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

REDIS_URL: str | None = env.str("REDIS_URL", default="") or None
EMBEDDED = not (env.str("DATABASE_URL", default="") and REDIS_URL)


def _secret_from_data_dir(name: str, make: callable) -> str:
    """Generate a secret once and keep it in the data directory (0600), so restarts keep sessions
    and encrypted files readable. Only the embedded topology does this; production must be given
    its secrets."""
    path = DATA_DIR / name
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(make())
    return path.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _secret_from_data_dir(
    "secret_key", lambda: secrets.token_urlsafe(50)
)
# AES-256-GCM key for images and documents at rest: base64 of 32 bytes. The key id is stored with
# every encrypted file so keys can rotate (issue: ingest).
READROOM_STORAGE_KEY = env.str("READROOM_STORAGE_KEY", default="") or _secret_from_data_dir(
    "storage_key", lambda: base64.b64encode(secrets.token_bytes(32)).decode()
)
# Days before a credential's expiry at which credentialing staff are notified (credentialing.selectors)
READROOM_CREDENTIAL_NOTICE_DAYS = tuple(
    int(d) for d in env.list("READROOM_CREDENTIAL_NOTICE_DAYS", default=["90", "60", "30"])
)
READROOM_STORAGE_KEY_ID = env.str("READROOM_STORAGE_KEY_ID", default="k1")
# Earlier keys, still needed to read files written before a rotation: "k0:base64,k-1:base64".
READROOM_STORAGE_OLD_KEYS = env.str("READROOM_STORAGE_OLD_KEYS", default="")
READROOM_STORAGE_DIR = Path(env.str("READROOM_STORAGE_DIR", default=str(DATA_DIR / "storage")))
# Uploads too big for memory (documents, STOW bodies) are spooled here, not in /tmp: ReadRoom's own
# directory, so the start-up sweep can remove what a crash left (imaging.storage.temp_files_sweep).
FILE_UPLOAD_TEMP_DIR = str(DATA_DIR / "tmp")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(exist_ok=True)
# An upload past the memory handler's 2.5 MB is kept in that directory encrypted under a key of its
# own, never in plain text (radiology/spool.py); request bodies likewise (radiology/asgi_handler.py).
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "radiology.spool.EncryptedTemporaryFileUploadHandler",
]
# A temp file older than this at a process's start was left by a crash (a write takes seconds, an
# upload minutes); younger ones may belong to another process on the machine that is still writing.
READROOM_TEMP_GRACE_SECONDS = env.int("READROOM_TEMP_GRACE_SECONDS", default=3600)
# A stored image file no index row names, older than this, was left by a crash or a failed commit
# (ingest writes the file just before its row: milliseconds); the orphan sweep quarantines a whole
# one and removes a partial one (interfaces/dicom/orphans.py, docs/storage.md).
READROOM_ORPHAN_GRACE_SECONDS = env.int("READROOM_ORPHAN_GRACE_SECONDS", default=3600)
# An S3-API object store instead of READROOM_STORAGE_DIR (imaging/object_store.py, docs/storage.md):
# AWS S3, MinIO or Ceph RGW, shared by every SCP, web and worker machine. Empty bucket: the file system.
READROOM_S3_BUCKET = env.str("READROOM_S3_BUCKET", default="")
READROOM_S3_ENDPOINT_URL = env.str("READROOM_S3_ENDPOINT_URL", default="")  # empty: AWS
READROOM_S3_REGION = env.str("READROOM_S3_REGION", default="us-east-1")
READROOM_S3_ACCESS_KEY_ID = env.str("READROOM_S3_ACCESS_KEY_ID", default="")  # empty: boto3's chain
READROOM_S3_SECRET_ACCESS_KEY = env.str("READROOM_S3_SECRET_ACCESS_KEY", default="")
READROOM_S3_PREFIX = env.str("READROOM_S3_PREFIX", default="")
READROOM_S3_ADDRESSING_STYLE = env.str(
    "READROOM_S3_ADDRESSING_STYLE", default="path" if READROOM_S3_ENDPOINT_URL else "auto"
)
# The OHIF viewer, installed by `make ohif` (imaging/ohif.py, docs/viewer.md); absent = built-in viewer only.
READROOM_OHIF_DIR = Path(env.str("READROOM_OHIF_DIR", default=str(BASE_DIR / "vendor" / "ohif")))
# Credentialing documents (licences, certificates) uploaded by MSO staff or radiologists.
READROOM_DOCUMENT_MAX_BYTES = env.int("READROOM_DOCUMENT_MAX_BYTES", default=20 * 1024 * 1024)
# fsync each stored file before acknowledging it (C-STORE success, HL7 ACK): nothing acknowledged is lost.
READROOM_STORAGE_FSYNC = env.bool("READROOM_STORAGE_FSYNC", default=True)

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",  # API tokens: accounts.ApiToken, stored hashed (not rest_framework.authtoken)
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI vendored: hospitals run offline
    "django_htmx",
    "guardian",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "auditlog",
    # ReadRoom apps (DESIGN.md §3)
    "accounts",
    "facilities",
    "imaging",
    "interfaces",
    "worklist",
    "reports",
    "credentialing",
    "qa",
]

MIDDLEWARE = [
    "radiology.middleware.SecurityHeadersMiddleware",  # CSP, no-store, nosniff on every response
    "radiology.middleware.QueryStringGuardMiddleware",  # control characters: 400 before anything
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "accounts.middleware.IdleSessionMiddleware",  # Django's SessionMiddleware; polls are not activity
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "accounts.middleware.SecondFactorRequiredMiddleware",
    "accounts.middleware.ScreenLockMiddleware",  # a locked screen's session serves no PHI
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    # AxesMiddleware last, as its documentation asks.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "radiology.urls"
ASGI_APPLICATION = "radiology.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.navigation",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------------------------
if env.str("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
    # Under ASGI every request may run in a different thread; Django's docs advise against
    # persistent connections there (the web pools instead, below). Workers may raise it.
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=0))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # A pool of connections (psycopg_pool, Django's "pool" option) for the web processes: under ASGI
    # each request may run in its own thread, so they cannot keep persistent connections, and
    # opening a PostgreSQL connection per request cost more than the worklist's own SQL
    # (bench/worklist). radiology/asgi.py turns it on for uvicorn; Celery workers and the listeners
    # open a connection per task or association thread, as before. The size is per process.
    READROOM_DB_POOL_MAX_SIZE = env.int("READROOM_DB_POOL_MAX_SIZE", default=0)
    if READROOM_DB_POOL_MAX_SIZE and DATABASES["default"]["ENGINE"].endswith("postgresql"):
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # a pooled connection goes back after each request
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(2, READROOM_DB_POOL_MAX_SIZE),
            "max_size": READROOM_DB_POOL_MAX_SIZE,
            # a request waits this long for a free connection, then fails with a 500 (not forever)
            "timeout": env.float("READROOM_DB_POOL_TIMEOUT", default=10.0),
        }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "readroom.sqlite3",
            # One process does everything in the embedded topology: WAL and a busy timeout keep
            # the listeners and the web server from tripping over each other's writes.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache, channels, celery --------------------------------------------------------------------
# Rendered image frames are patient data: kept in each process's memory, bounded, never in Redis.
FRAMES_CACHE = {
    "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
    "LOCATION": "readroom-frames",
    "OPTIONS": {"MAX_ENTRIES": env.int("READROOM_RENDER_CACHE_ENTRIES", default=2000)},
}
CHANNEL_REDIS_SOCKET_TIMEOUT = 15  # seconds; more than channels-redis's 5 s blocking receive
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's RedisCache, with one connection pool per process rather than per request
            # (radiology/process_cache.py: a new connection per request was ~30 % of a web worker)
            "BACKEND": "radiology.process_cache.ProcessRedisCache",
            "LOCATION": REDIS_URL,
            # several installs (or test workers) on one Redis database keep their keys apart
            "KEY_PREFIX": env.str("READROOM_CACHE_KEY_PREFIX", default=""),
        },
        "frames": FRAMES_CACHE,
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # A consumer waits for events in a BZPOPMIN that blocks up to 5 s; redis-py 8 aborts
                # any read after 5 s by default, so a quiet socket's wait raised TimeoutError and the
                # reader's websocket was dropped (django/channels_redis#422). Let the wait finish;
                # a dead connection is still noticed.
                "hosts": [{"address": REDIS_URL, "socket_timeout": CHANNEL_REDIS_SOCKET_TIMEOUT}],
                "prefix": env.str("READROOM_CHANNEL_PREFIX", default="asgi"),
            },
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
    # The queue every task goes to and every worker of this install consumes. Installs (or a bench
    # run beside a test run) that share one Redis keep their tasks apart with their own queue name:
    # a worker of another install would otherwise take the task and apply it to its own database.
    CELERY_TASK_DEFAULT_QUEUE = env.str("READROOM_CELERY_QUEUE", default="celery")
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}, "frames": FRAMES_CACHE}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "memory://localhost/"
    CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True  # a killed worker leaves the message for another one
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"

# --- auth, sessions, second factor, lockout -----------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    # Axes first: it refuses a locked-out user before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "accounts:home"
LOGOUT_REDIRECT_URL = "accounts:login"

# Push routing gives no more studies to a reader holding this many RVUs (a reader's own
# RadiologistProfile.rvu_load_cap overrides it); stroke and trauma bypass it.
READROOM_PUSH_RVU_CAP = env.float("READROOM_PUSH_RVU_CAP", default=20.0)
READROOM_IDLE_TIMEOUT_MINUTES = env.int("READROOM_IDLE_TIMEOUT_MINUTES", default=15)
SESSION_COOKIE_AGE = READROOM_IDLE_TIMEOUT_MINUTES * 60
# Idle sessions end: accounts.middleware.IdleSessionMiddleware renews the expiry on activity (at most
# once a minute), so the age measures idleness.
SESSION_SAVE_EVERY_REQUEST = False
# The screen lock (docs/alerts.md): a page locks this long after its last activity — before the
# session's own idle end, which may come up to a minute early — and a locked session lives at most
# READROOM_LOCK_MAX_HOURS (then it ends, as every idle session did before).
READROOM_LOCK_AFTER_SECONDS = env.int("READROOM_LOCK_AFTER_SECONDS", default=max(30, SESSION_COOKIE_AGE - 90))
# Per role (docs/alerts.md "Per facility, per role"): "RADIOLOGIST=600,OPERATIONS=300" (the role's
# name in accounts.roles.Role) replaces READROOM_LOCK_AFTER_SECONDS for its members — the shortest
# of a person's roles; a facility's contract (Facility.screen_lock_minutes) may only shorten it.
READROOM_LOCK_AFTER_SECONDS_BY_ROLE = {
    role.strip().upper(): int(seconds)
    for role, _, seconds in (
        item.partition("=") for item in env.list("READROOM_LOCK_AFTER_SECONDS_BY_ROLE", default=[])
    )
}
READROOM_LOCK_MAX_HOURS = env.float("READROOM_LOCK_MAX_HOURS", default=12.0)
# An open worklist socket checks this often that its session still lives (an idle session ends
# without any request, so no signal tells of it) and closes with 4401 when it has ended.
READROOM_WS_SESSION_CHECK_SECONDS = env.float("READROOM_WS_SESSION_CHECK_SECONDS", default=30.0)
# API tokens expire this many days after they are issued (0: never); rotate by issuing a new one.
READROOM_API_TOKEN_DAYS = env.int("READROOM_API_TOKEN_DAYS", default=365)
# requests per minute an API token may make unless the token says (accounts.throttling); 0: no limit
READROOM_API_TOKEN_RATE_PER_MINUTE = env.int("READROOM_API_TOKEN_RATE_PER_MINUTE", default=0)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

# django-axes: lock a username from one address after repeated failures. Locking the username
# alone would let anyone lock a radiologist out at 3 a.m.; the address alone would lock a whole
# hospital behind one NAT.
AXES_FAILURE_LIMIT = env.int("READROOM_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("READROOM_LOGIN_COOLOFF_HOURS", default=0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"

# django-guardian: no anonymous object permissions.
ANONYMOUS_USER_NAME = None
GUARDIAN_RAISE_403 = False

OTP_TOTP_ISSUER = env.str("READROOM_OTP_ISSUER", default="ReadRoom")

# --- audit log ----------------------------------------------------------------------------------
AUDITLOG_STORE_JSON_CHANGES = True
AUDITLOG_DISABLE_REMOTE_ADDR = False

# --- REST API -----------------------------------------------------------------------------------
# OHIF's frame requests answered beside Django's router and DRF, with the same middleware and checks
# and only under a held DICOMweb grant (interfaces/dicom/web_fast.py; docs/viewer.md "Feeding OHIF
# fast"). Off: every frame through the view.
READROOM_DICOMWEB_FAST_FRAMES = env.bool("READROOM_DICOMWEB_FAST_FRAMES", default=True)
# A session whose frame request passed every check is held that long per web process (0: never);
# sign-out, the lock and account changes reach it at once through Redis, a change made without a
# model save within this window (interfaces/dicom/web_signin.py; docs/viewer.md "The fast frame path").
READROOM_DICOMWEB_SIGNIN_SECONDS = env.float("READROOM_DICOMWEB_SIGNIN_SECONDS", default=5.0)
REST_FRAMEWORK = {
    # The token class first: DRF answers an anonymous call with the first class's challenge, so
    # every API refuses it with 401 and ``WWW-Authenticate: Token`` (a session class has no
    # challenge and would make it 403; issue 15 §9).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.AuditedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["accounts.throttling.ApiTokenRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "accounts.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ReadRoom API",
    "DESCRIPTION": "Teleradiology reading workflow: facilities, orders, studies, worklist, reports.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a "kind" or "method": name each choice set after what it is.
    "ENUM_NAME_OVERRIDES": {
        "FacilityKindEnum": "facilities.models.FacilityKind",
        "LicenceKindEnum": "credentialing.models.LicenceKind",
        "CoverageKindEnum": "credentialing.models.CoverageKind",
        "DocumentKindEnum": "credentialing.models.DocumentKind",
        "VerificationMethodEnum": "credentialing.models.VerificationMethod",
        "CommunicationMethodEnum": "reports.models.CommunicationMethod",
        "OrderStatusEnum": "imaging.models.OrderStatus",
        "StudyStatusEnum": "imaging.models.StudyStatus",
    },
}

# --- i18n, static -------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"  # stored in UTC; pages show the facility's local time
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on a missing root before collectstatic
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if EMBEDDED:
    # One process, started by a newcomer: serve static files straight from the source folders
    # (no collectstatic, which compresses every file and takes many seconds at start-up).
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    WHITENOISE_USE_FINDERS = True

# --- network edges (DESIGN.md §5 contract) ------------------------------------------------------
READROOM_WEB_PORT = env.int("READROOM_WEB_PORT", default=8000)
READROOM_HL7_PORT = env.int("READROOM_HL7_PORT", default=2575)
READROOM_DICOM_PORT = env.int("READROOM_DICOM_PORT", default=11112)
# The demo's EMR simulator (run_embedded --simulate) listens here on 127.0.0.1; load_demo points the
# demo facilities' ORU endpoint at it, so both read this one setting.
READROOM_EMR_SIM_PORT = env.int("READROOM_EMR_SIM_PORT", default=2576)
READROOM_DICOM_AE_TITLE = env.str("READROOM_DICOM_AE_TITLE", default="READROOM")
# Address the HL7 listener and the DICOM SCP bind to (0.0.0.0 in a container or behind a balancer).
READROOM_LISTEN_HOST = env.str("READROOM_LISTEN_HOST", default="127.0.0.1")
# Orders are small; a frame above this is answered AR and discarded up to its end (its head is kept).
READROOM_HL7_MAX_FRAME_BYTES = env.int("READROOM_HL7_MAX_FRAME_BYTES", default=1024 * 1024)
# Inbound HL7 dead letter (docs/interfaces-hardening.md): a message whose apply fails this many times
# (at once for a deterministic error: data too long, invalid bytes) is set aside; the sender goes on.
READROOM_HL7_IN_MAX_ATTEMPTS = env.int("READROOM_HL7_IN_MAX_ATTEMPTS", default=5)
# An AI node's ORU for a study not stored yet waits this long for the study's first image, then is
# dead-lettered for operations (docs/ai.md): past a day a triage result no longer triages anything,
# and a study that never came means a wrong accession or a lost forward that an analyst must see.
READROOM_AI_ORU_WAIT_HOURS = env.float("READROOM_AI_ORU_WAIT_HOURS", default=24.0)
# Pixel data longer than this is refused at C-STORE/STOW (0xA900), as is pixel data whose length
# contradicts its Rows x Columns x frames x bits (docs/interfaces-hardening.md). 2 GiB by default.
READROOM_DICOM_MAX_PIXEL_BYTES = env.int("READROOM_DICOM_MAX_PIXEL_BYTES", default=2 * 1024**3)
# After an image is indexed, a worker decodes its first and last frame the way the viewer does and
# flags it when it cannot be displayed (imaging.tasks.instance_display_check_task;
# instances_display_check_task for a group commit's images; docs/viewer.md).
READROOM_DECODE_CHECK = env.bool("READROOM_DECODE_CHECK", default=True)
# C-STOREs of concurrent associations are committed a few at a time, in one transaction each
# (imaging.group_commit, docs/ingest.md): at most MAX instances, and the committer waits up to WAIT_MS
# for more only while other associations are still checking one. Each Success still goes out only
# after its own group committed. false: each instance in its own transaction.
READROOM_DICOM_GROUP_COMMIT = env.bool("READROOM_DICOM_GROUP_COMMIT", default=True)
READROOM_DICOM_GROUP_COMMIT_MAX = env.int("READROOM_DICOM_GROUP_COMMIT_MAX", default=32)
READROOM_DICOM_GROUP_COMMIT_WAIT_MS = env.float("READROOM_DICOM_GROUP_COMMIT_WAIT_MS", default=20.0)
# The SCP's associations wait for their socket and queues instead of polling every millisecond
# (interfaces.dicom.reactor, docs/ingest.md "pynetdicom's polling"). false: pynetdicom's own reactors.
READROOM_DICOM_REACTOR_WAKE = env.bool("READROOM_DICOM_REACTOR_WAKE", default=True)
# A prior that comes back to the worker (C-GET, WADO-RS) is stored on this many threads while the
# next instances arrive, their images committed together (interfaces.dicom.prior_ingest,
# docs/priors.md). 1: each instance stored before the next is read, as a C-STORE SCP does.
READROOM_PRIOR_INGEST_THREADS = env.int("READROOM_PRIOR_INGEST_THREADS", default=3)
# A retrieval beats its claimed (RUNNING) prior fetches every BEAT seconds while it runs
# (imaging.priors.prior_claims_kept); a claim not beaten for MAX seconds is a dead worker's, and the
# next retrieval of the patient takes it over (compare-and-set on the row; prior_fetches_plan).
# MAX must be several beats: a live holder whose beats fail for that long loses its claim (the
# prior is then fetched twice, stored once).
READROOM_PRIOR_CLAIM_BEAT_SECONDS = env.float("READROOM_PRIOR_CLAIM_BEAT_SECONDS", default=30.0)
READROOM_PRIOR_CLAIM_MAX_SECONDS = env.int("READROOM_PRIOR_CLAIM_MAX_SECONDS", default=300)
# How many of a C-MOVE retrieval's priors are fetched at once (a source's ``parallel`` overrides
# it; C-GET and DICOMweb default to 1): one association per prior, newest asked first. 1 fetches
# them one after another (docs/priors.md "Priors fetched side by side").
READROOM_PRIOR_PARALLEL = env.int("READROOM_PRIOR_PARALLEL", default=3)
# Refuse associations from calling AE titles that no facility has registered.
READROOM_DICOM_REJECT_UNKNOWN_CALLERS = env.bool("READROOM_DICOM_REJECT_UNKNOWN_CALLERS", default=True)
# An association addressed to another called AE title is refused (A-ASSOCIATE-RJ, called AE not recognised)
READROOM_DICOM_CHECK_CALLED_AE = env.bool("READROOM_DICOM_CHECK_CALLED_AE", default=True)

# Edge limits (docs/interfaces-hardening.md "Connection limits"), per SCP process. An association
# counts once its A-ASSOCIATE-RQ has arrived (it then holds a database session); one calling AE may
# hold at most PER_AE of them, so a modality stuck opening associations cannot crowd out the others.
# Above either limit: A-ASSOCIATE-RJ rejected-transient, local-limit-exceeded (the modality retries).
READROOM_DICOM_MAX_ASSOCIATIONS = env.int("READROOM_DICOM_MAX_ASSOCIATIONS", default=32)
READROOM_DICOM_MAX_ASSOCIATIONS_PER_AE = env.int("READROOM_DICOM_MAX_ASSOCIATIONS_PER_AE", default=10)
# An association that sends nothing for this long is aborted (pynetdicom's default was 60 s; Orthanc's
# DicomScpTimeout is 30 s); a connection that sends no A-ASSOCIATE-RQ this long after it opened is closed.
READROOM_DICOM_NETWORK_TIMEOUT = env.float("READROOM_DICOM_NETWORK_TIMEOUT", default=30.0)
READROOM_DICOM_ACSE_TIMEOUT = env.float("READROOM_DICOM_ACSE_TIMEOUT", default=5.0)
# MLLP: connections at once from one address (per listener process); more are closed at once.
READROOM_HL7_MAX_CONNECTIONS_PER_PEER = env.int("READROOM_HL7_MAX_CONNECTIONS_PER_PEER", default=10)
# TLS on the edges (docs/interfaces-hardening.md "TLS"): PEM file paths. With CERT and KEY set the port
# speaks only TLS; with CA_FILE set too, a client certificate signed by that CA is required.
READROOM_DICOM_TLS_CERT_FILE = env.str("READROOM_DICOM_TLS_CERT_FILE", default="")
READROOM_DICOM_TLS_KEY_FILE = env.str("READROOM_DICOM_TLS_KEY_FILE", default="")
READROOM_DICOM_TLS_CA_FILE = env.str("READROOM_DICOM_TLS_CA_FILE", default="")
READROOM_HL7_TLS_CERT_FILE = env.str("READROOM_HL7_TLS_CERT_FILE", default="")
READROOM_HL7_TLS_KEY_FILE = env.str("READROOM_HL7_TLS_KEY_FILE", default="")
READROOM_HL7_TLS_CA_FILE = env.str("READROOM_HL7_TLS_CA_FILE", default="")

# Outbound HL7 (the report outbox, docs/delivery.md): retry after 5 s, doubling, at most 5 min apart,
# ±jitter; dead letter after this many attempts or this long since it was queued.
READROOM_HL7_OUT_RETRY_BASE_SECONDS = env.float("READROOM_HL7_OUT_RETRY_BASE_SECONDS", default=5.0)
READROOM_HL7_OUT_RETRY_MAX_SECONDS = env.float("READROOM_HL7_OUT_RETRY_MAX_SECONDS", default=300.0)
READROOM_HL7_OUT_RETRY_JITTER = env.bool("READROOM_HL7_OUT_RETRY_JITTER", default=True)
# An EMR that could not be reached is probed by each outbox sweep (10 s) when its head of the line
# waits longer than this: reachable again, the head is resent at once (docs/delivery.md).
READROOM_HL7_OUT_PROBE_SECONDS = env.float("READROOM_HL7_OUT_PROBE_SECONDS", default=10.0)
READROOM_HL7_OUT_MAX_ATTEMPTS = env.int("READROOM_HL7_OUT_MAX_ATTEMPTS", default=30)
READROOM_HL7_OUT_MAX_AGE_HOURS = env.float("READROOM_HL7_OUT_MAX_AGE_HOURS", default=24.0)
READROOM_HL7_OUT_CONNECT_TIMEOUT = env.float("READROOM_HL7_OUT_CONNECT_TIMEOUT", default=5.0)
READROOM_HL7_OUT_ACK_TIMEOUT = env.float("READROOM_HL7_OUT_ACK_TIMEOUT", default=30.0)
# A report queued this long without an ACK turns the facility's "HL7 out" red (issue #6).
READROOM_HL7_OUT_OVERDUE_MINUTES = env.float("READROOM_HL7_OUT_OVERDUE_MINUTES", default=5.0)

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"  # a URL may carry a study UID: never sent to another site
X_FRAME_OPTIONS = "DENY"
# EMAIL_URL e.g. smtp+tls://user:password@smtp.example.org:587 (django-environ); console by default.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="readroom@localhost")
# Where people reach this installation (e.g. https://readroom.example.org): links in e-mails and webhooks.
READROOM_BASE_URL = env.str("READROOM_BASE_URL", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
        # one line per C-STORE and per task is too much for an operator's console
        "pynetdicom": {"level": "WARNING"},
        "celery.app.trace": {"level": "WARNING"},
    },
}

# Periodic work, declared once: Celery beat and the embedded ticker both read it.
from radiology.schedule import PERIODIC_TASKS  # noqa: E402

CELERY_BEAT_SCHEDULE = {
    name: {"task": entry.task, "schedule": entry.every.total_seconds()}
    for name, entry in PERIODIC_TASKS.items()
}
