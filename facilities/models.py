"""Client facilities and their contracts.

A facility is one hospital or imaging centre that sends orders and images and receives reports.
Its US state decides which licence a reader needs; its time zone decides what "on shift" and
"expires at midnight" mean; its contract sets the turnaround targets per priority class."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, available_timezones

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models


class PriorityClass(models.TextChoices):
    """Turnaround classes, most urgent first (DESIGN.md §6)."""

    STROKE = "STROKE", "Code stroke"
    TRAUMA = "TRAUMA", "Trauma"
    STAT = "STAT", "STAT (ED)"
    ASAP = "ASAP", "ASAP / inpatient"
    ROUTINE = "ROUTINE", "Routine"


# Default contract targets in minutes (DESIGN.md §6); each facility contract may override them.
DEFAULT_SLA_MINUTES: dict[str, int] = {
    PriorityClass.STROKE: 20,
    PriorityClass.TRAUMA: 30,
    PriorityClass.STAT: 30,
    PriorityClass.ASAP: 4 * 60,
    PriorityClass.ROUTINE: 24 * 60,
}


class USState(models.TextChoices):
    AL = "AL", "Alabama"
    AK = "AK", "Alaska"
    AZ = "AZ", "Arizona"
    AR = "AR", "Arkansas"
    CA = "CA", "California"
    CO = "CO", "Colorado"
    CT = "CT", "Connecticut"
    DE = "DE", "Delaware"
    DC = "DC", "District of Columbia"
    FL = "FL", "Florida"
    GA = "GA", "Georgia"
    HI = "HI", "Hawaii"
    ID = "ID", "Idaho"
    IL = "IL", "Illinois"
    IN = "IN", "Indiana"
    IA = "IA", "Iowa"
    KS = "KS", "Kansas"
    KY = "KY", "Kentucky"
    LA = "LA", "Louisiana"
    ME = "ME", "Maine"
    MD = "MD", "Maryland"
    MA = "MA", "Massachusetts"
    MI = "MI", "Michigan"
    MN = "MN", "Minnesota"
    MS = "MS", "Mississippi"
    MO = "MO", "Missouri"
    MT = "MT", "Montana"
    NE = "NE", "Nebraska"
    NV = "NV", "Nevada"
    NH = "NH", "New Hampshire"
    NJ = "NJ", "New Jersey"
    NM = "NM", "New Mexico"
    NY = "NY", "New York"
    NC = "NC", "North Carolina"
    ND = "ND", "North Dakota"
    OH = "OH", "Ohio"
    OK = "OK", "Oklahoma"
    OR = "OR", "Oregon"
    PA = "PA", "Pennsylvania"
    PR = "PR", "Puerto Rico"
    RI = "RI", "Rhode Island"
    SC = "SC", "South Carolina"
    SD = "SD", "South Dakota"
    TN = "TN", "Tennessee"
    TX = "TX", "Texas"
    UT = "UT", "Utah"
    VT = "VT", "Vermont"
    VA = "VA", "Virginia"
    WA = "WA", "Washington"
    WV = "WV", "West Virginia"
    WI = "WI", "Wisconsin"
    WY = "WY", "Wyoming"


class FacilityKind(models.TextChoices):
    LEVEL1_TRAUMA = "level1_trauma", "Level 1 trauma centre"
    LEVEL2_TRAUMA = "level2_trauma", "Level 2 trauma centre"
    COMMUNITY = "community", "Community hospital"
    CRITICAL_ACCESS = "critical_access", "Critical access hospital"
    OUTPATIENT_IMAGING = "outpatient_imaging", "Outpatient imaging centre"
    URGENT_CARE = "urgent_care", "Urgent care"


class RoutingMode(models.TextChoices):
    PULL = "pull", "Pull: readers claim from the worklist"
    PUSH = "push", "Push: assigned to the best eligible reader"


def validate_timezone(value: str) -> None:
    if value not in available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (e.g. America/Chicago)")


AE_TITLE_PATTERN = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # AE: 16 printable characters, no backslash
PRIOR_METHODS = ("c-move", "c-get", "dicomweb", "fhir")
PRIOR_SOURCE_KEYS = (
    "name", "method", "host", "port", "called_ae_title", "base_url", "auth", "count", "lookback_days",
    "modalities", "body_parts", "hours", "timeout_seconds", "patient_identifier_system", "parallel",
)  # fmt: skip
# a source's associations (or HTTP retrieves) at once, per retrieval: a PACS limits its associations
# per calling AE, and more than a few only queue on ReadRoom's cores (docs/priors.md)
PRIOR_PARALLEL_MAX = 8
# a FHIR source's MRN system (docs/priors.md "FHIR DiagnosticReport sources"): an absolute URI
IDENTIFIER_SYSTEM_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s|]+$")


def _dicom_peer_problems(entry: dict, at: str, title_key: str) -> list[str]:
    problems = []
    title = entry.get(title_key)
    if not isinstance(title, str) or not AE_TITLE_PATTERN.match(title):
        problems.append(f"{at}.{title_key}: 1–16 printable characters, no backslash")
    if not isinstance(entry.get("host"), str) or not entry.get("host"):
        problems.append(f"{at}.host: required (a host name or address)")
    port = entry.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        problems.append(f"{at}.port: a port number 1–65535")
    return problems


# SMART Backend Services' signing algorithms (interfaces/smart_backend.py): the two servers SHALL accept
SMART_ALGORITHMS = ("RS384", "ES384")
# each auth type: its required keys, its optional ones, and the key naming its secret's variable
_AUTH_SHAPES = {
    "basic": ({"type", "username", "password_env"}, set(), "password_env"),
    "bearer": ({"type", "token_env"}, set(), "token_env"),
    "smart_backend": ({"type", "client_id", "key_env", "kid"}, {"alg", "scope", "token_url"}, "key_env"),
}
_AUTH_FORMS = (
    "{type: basic, username, password_env}, {type: bearer, token_env} or "
    "{type: smart_backend, client_id, key_env, kid[, alg, scope, token_url]}"
)


def auth_secret_variable(auth: dict) -> str:
    """The environment variable that holds ``auth``'s secret (password, token or key); "" when the
    shape names none (a source stored before its shape was checked: the caller says it is unset)."""
    shape = _AUTH_SHAPES.get(auth.get("type")) if isinstance(auth.get("type"), str) else None
    return str(auth.get(shape[2]) or "") if shape else ""


def _web_auth_problems(auth, at: str) -> list[str]:
    """A DICOMweb or FHIR source's credentials: the secret (a password, a token, a private key) is
    named by an environment variable, never written in the onboarding file (which is kept in version
    control and shown to admins)."""
    if auth is None:
        return []
    kind = auth.get("type") if isinstance(auth, dict) else None
    shape = _AUTH_SHAPES.get(kind) if isinstance(kind, str) else None  # a list is no type, nor a 500
    if shape is None:
        return [f"{at}: {_AUTH_FORMS}"]
    required, optional = shape[:2]
    if not (
        required <= set(auth) <= required | optional and all(isinstance(v, str) and v for v in auth.values())
    ):
        return [f"{at}: {_AUTH_FORMS}"]
    if auth.get("alg", SMART_ALGORITHMS[0]) not in SMART_ALGORITHMS:
        return [f"{at}.alg: {' or '.join(SMART_ALGORITHMS)}"]
    if not auth.get("token_url", "https://").startswith(("http://", "https://")):
        return [f"{at}.token_url: an http(s) URL (or leave it out: the base's smart-configuration names it)"]
    variable = auth_secret_variable(auth)
    if variable in READROOM_SECRETS or variable.startswith("AWS_"):
        # the worker sends this variable's value to the source's URL: never one of ReadRoom's own
        return [f"{at}: {variable} is one of ReadRoom's own secrets; name a variable of this source's"]
    return []


# The environment variables that hold ReadRoom's own secrets (deploy/readroom.env.example): a prior
# source may not name one as its credential, or the worker would send it to the source's server.
READROOM_SECRETS = frozenset(
    {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "READROOM_STORAGE_KEY", "READROOM_STORAGE_OLD_KEYS"}
)


def validate_move_destinations(value) -> None:
    """dicom.move_destinations: the AEs a C-MOVE from this facility may send to (anything else 0xA801)."""
    if not isinstance(value, list):
        raise ValidationError("must be a list of {ae_title, host, port}")
    problems = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or set(entry) - {"ae_title", "host", "port", "description"}:
            problems.append(f"[{i}]: keys ae_title, host, port (and description)")
            continue
        problems += _dicom_peer_problems(entry, f"[{i}]", "ae_title")
    if problems:
        raise ValidationError("; ".join(problems))


def validate_networks(value) -> None:
    """An interface's allow-list: addresses or CIDR networks ("10.20.0.0/16", "192.0.2.7"). Host bits
    set under the mask ("10.20.1.5/16") are a typo more often than not, so they are refused."""
    if not isinstance(value, list):
        raise ValidationError('must be a list of addresses or networks, e.g. ["10.20.0.0/16"]')
    problems = []
    for i, entry in enumerate(value):
        try:
            if not isinstance(entry, str):
                raise ValueError
            ipaddress.ip_network(entry.strip())
        except ValueError:
            problems.append(f"[{i}]: {entry!r} is not an address or network such as 10.20.0.0/16")
    if problems:
        raise ValidationError("; ".join(problems))


def address_allowed(networks: list[str], address: str) -> bool:
    """Whether ``address`` is in the allow-list; an empty list allows every address (the default:
    most hospitals reach us over a site-to-site VPN that already limits who can connect)."""
    if not networks:
        return True
    try:
        peer = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if peer.version == 6 and peer.ipv4_mapped:  # a dual-stack socket reports ::ffff:10.20.1.5
        peer = peer.ipv4_mapped
    return any(peer in ipaddress.ip_network(n.strip()) for n in networks)


TLS_KEYS = ("ca_file", "cert_file", "key_file", "server_name")


def validate_outbound_tls(value) -> None:
    """hl7.outbound.tls: {} = plain MLLP; otherwise TLS, verifying the EMR's certificate against
    ``ca_file`` (default: the system's CAs), presenting ``cert_file``/``key_file`` when the engine
    asks for a client certificate. Paths on the worker's machine, never the key itself."""
    if not isinstance(value, dict) or set(value) - set(TLS_KEYS):
        raise ValidationError(f"keys {', '.join(TLS_KEYS)} (file paths; server_name optional)")
    if not all(isinstance(v, str) and v.strip() for v in value.values()):
        raise ValidationError("each value must be a non-empty path (or server_name) as text")
    if ("cert_file" in value) != ("key_file" in value):
        raise ValidationError("cert_file and key_file go together (the client certificate and its key)")


def validate_issuer_list(value) -> None:
    """Issuer names (PID-3.4 / DICOM Issuer of Patient ID, an LO: at most 64 characters)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value):
        raise ValidationError("a list of issuer names, each 1–64 characters")


# Retired storage SOP classes a sender may be allowed (docs/orders.md): older ultrasound carts still
# send them and Orthanc takes them. The SCP supports exactly these; each sender lists what it may send.
RETIRED_STORAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage (Retired)",
}


def validate_sop_class_list(value) -> None:
    if not isinstance(value, list) or not all(v in RETIRED_STORAGE_SOP_CLASSES for v in value):
        known = ", ".join(f"{uid} ({name})" for uid, name in RETIRED_STORAGE_SOP_CLASSES.items())
        raise ValidationError(f"a list of these retired SOP Class UIDs: {known}")


def validate_prior_sources(value) -> None:
    """priors.sources (docs/priors.md): where this facility's priors are fetched from, and the limits."""
    if not isinstance(value, list):
        raise ValidationError("must be a list of prior sources")
    problems = []
    for i, entry in enumerate(value):
        at = f"[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{at}: must be keys and values")
            continue
        if unknown := sorted(set(entry) - set(PRIOR_SOURCE_KEYS)):
            problems.append(
                f"{at}: unknown keys {', '.join(unknown)} (known: {', '.join(PRIOR_SOURCE_KEYS)})"
            )
        method = entry.get("method")
        if method not in PRIOR_METHODS:
            problems.append(f"{at}.method: one of {', '.join(PRIOR_METHODS)}")
        elif method in ("dicomweb", "fhir"):
            if not str(entry.get("base_url", "")).startswith(("http://", "https://")):
                problems.append(f"{at}.base_url: an http(s) URL")
            problems += _web_auth_problems(entry.get("auth"), f"{at}.auth")
        else:
            problems += _dicom_peer_problems(entry, at, "called_ae_title")
        for key in ("count", "lookback_days", "timeout_seconds"):
            number = entry.get(key)
            if number is not None and (isinstance(number, bool) or not isinstance(number, int) or number < 1):
                problems.append(f"{at}.{key}: a positive whole number")
        width = entry.get("parallel")
        if width is not None and (
            isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= PRIOR_PARALLEL_MAX
        ):
            problems.append(f"{at}.parallel: a whole number from 1 to {PRIOR_PARALLEL_MAX} (fetched at once)")
        for key in ("modalities", "body_parts"):
            items = entry.get(key)
            if items is not None and not (isinstance(items, list) and all(isinstance(x, str) for x in items)):
                problems.append(f"{at}.{key}: a list of codes")
        system = entry.get("patient_identifier_system")
        if system is not None and (
            method != "fhir" or not isinstance(system, str) or not IDENTIFIER_SYSTEM_PATTERN.match(system)
        ):
            problems.append(f"{at}.patient_identifier_system: an absolute URI (e.g. urn:oid:…), fhir only")
        hours = entry.get("hours")
        if hours is not None and not (
            isinstance(hours, str) and re.match(r"^\d{2}:\d{2}-\d{2}:\d{2}$", hours)
        ):
            problems.append(f"{at}.hours: HH:MM-HH:MM in the facility's local time")
    if problems:
        raise ValidationError("; ".join(problems))


facility_code_validator = RegexValidator(
    r"^[A-Z0-9][A-Z0-9_-]{1,31}$", "2–32 characters: capital letters, digits, '-' or '_'"
)


class Facility(models.Model):
    code = models.CharField(max_length=32, unique=True, validators=[facility_code_validator])
    name = models.CharField(max_length=200)
    state = models.CharField("US state", max_length=2, choices=USState.choices)
    timezone = models.CharField(max_length=64, validators=[validate_timezone], default="America/Chicago")
    kind = models.CharField(max_length=32, choices=FacilityKind.choices)
    active = models.BooleanField(default=True)

    # Contract turnaround targets (minutes) per priority class.
    sla_stroke_minutes = models.PositiveIntegerField(
        default=DEFAULT_SLA_MINUTES[PriorityClass.STROKE], validators=[MinValueValidator(1)]
    )
    sla_trauma_minutes = models.PositiveIntegerField(
        default=DEFAULT_SLA_MINUTES[PriorityClass.TRAUMA], validators=[MinValueValidator(1)]
    )
    sla_stat_minutes = models.PositiveIntegerField(
        default=DEFAULT_SLA_MINUTES[PriorityClass.STAT], validators=[MinValueValidator(1)]
    )
    sla_asap_minutes = models.PositiveIntegerField(
        default=DEFAULT_SLA_MINUTES[PriorityClass.ASAP], validators=[MinValueValidator(1)]
    )
    sla_routine_minutes = models.PositiveIntegerField(
        default=DEFAULT_SLA_MINUTES[PriorityClass.ROUTINE], validators=[MinValueValidator(1)]
    )

    # Code-stroke escalation (DESIGN.md §4): minutes after the alert at which a still-unclaimed stroke
    # study goes to every eligible reader + operations, then to the medical director + operations.
    stroke_readers_minutes = models.PositiveIntegerField(default=2, validators=[MinValueValidator(1)])
    stroke_director_minutes = models.PositiveIntegerField(default=5, validators=[MinValueValidator(1)])
    # Optional: the director step is also POSTed (JSON) here, e.g. a paging or chat integration.
    escalation_webhook_url = models.URLField(
        "escalation webhook URL", max_length=500, blank=True, help_text="POSTed JSON at the director step"
    )

    # Whether a general/ER reader may read studies whose subspecialty no reader of that
    # subspecialty covers (typical for critical-access hospitals at night).
    accepts_general_readers = models.BooleanField(default=True)
    # Whether a reader may read here before the MSO has verified their credentials with the primary
    # source: the licence in the facility's state and a malpractice cover in force (issue 19). The
    # default is not: unverified readers are flagged and the eligibility engine refuses them.
    reads_before_verification = models.BooleanField(
        "readers eligible before verification",
        default=False,
        help_text="Off (the default): a reader is eligible here only once their licence in this state "
        "and a malpractice cover in force are verified with the primary source.",
    )

    # Assignment (worklist.assignment): pull = eligible readers see a study and claim it; push = each
    # newly routed study is given to the best eligible reader on shift (core team, same patient,
    # lowest RVU load), falling back to the pull worklist when nobody fits.
    routing_mode = models.CharField(max_length=8, choices=RoutingMode.choices, default=RoutingMode.PULL)
    # A claim with no activity (viewer, report editor) for this long goes back to the worklist.
    claim_timeout_minutes = models.PositiveIntegerField(default=30, validators=[MinValueValidator(1)])
    # The screen lock (docs/alerts.md "Per facility, per role"): a contract may ask for a shorter idle
    # lock than ReadRoom's. Everyone who may see this facility's studies then locks after at most this
    # long without activity (the strictest of their facilities); blank: no contract limit.
    screen_lock_minutes = models.PositiveIntegerField(
        "screen lock after (idle minutes)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Blank: ReadRoom's own lock time. Never longer than the session's idle limit.",
    )
    # Reporting (issue 6). Whether the contract includes preliminary ("wet") reads, sent as P before
    # the final read; how long a critical result may stay uncommunicated before operations is
    # escalated to; what the facility pays per final read (billing charges).
    accepts_preliminary = models.BooleanField(
        "accepts preliminary reads", default=False, help_text="The contract includes wet reads (sent as P)."
    )
    critical_result_minutes = models.PositiveIntegerField(
        "critical result deadline (minutes)",
        default=60,
        validators=[MinValueValidator(1)],
        help_text="A critical result not communicated this long after it was marked escalates to operations.",
    )
    # An addendum's ORU (OBR-25 C) carries the addenda as NTE segments after the report's OBX rows
    # (docs/delivery.md), for an EMR that shows result comments apart; default: as OBX rows under
    # LOINC 55107-7 Addendum, like the report's other sections.
    oru_addenda_as_nte = models.BooleanField(
        "addenda as NTE in the ORU",
        default=False,
        help_text="Send addenda as NTE comments after the report's OBX rows instead of as OBX rows.",
    )
    read_rate = models.DecimalField(
        "rate per final read",
        max_digits=8,
        decimal_places=2,
        default=Decimal("0.00"),
        validators=[MinValueValidator(Decimal("0"))],
    )

    # Interfaces. Outbound ORU goes to the facility's EMR interface engine.
    hl7_outbound_host = models.CharField("ORU host", max_length=255, blank=True)
    hl7_outbound_port = models.PositiveIntegerField("ORU port", null=True, blank=True)
    # TLS for the ORU connection (docs/interfaces-hardening.md "TLS"); {} = plain MLLP.
    hl7_outbound_tls = models.JSONField(
        "ORU TLS", default=dict, blank=True, validators=[validate_outbound_tls],
        help_text='{} for plain MLLP; {"ca_file": …, "cert_file": …, "key_file": …} for TLS',
    )  # fmt: skip
    # Optional allow-lists (docs/interfaces-hardening.md): which addresses this facility's HL7 senders
    # and calling AE titles may connect from. Empty: any address.
    hl7_allowed_networks = models.JSONField(
        "HL7 sender networks", default=list, blank=True, validators=[validate_networks],
        help_text='e.g. ["10.20.0.0/16"]; empty allows any address',
    )  # fmt: skip
    hl7_max_messages_per_minute = models.PositiveIntegerField(
        "HL7 messages per minute", null=True, blank=True,
        help_text="per sender, per listener process: the listener reads the next message later "
        "(nothing is refused); empty: no limit",
    )  # fmt: skip
    dicom_allowed_networks = models.JSONField(
        "DICOM sender networks", default=list, blank=True, validators=[validate_networks],
        help_text='e.g. ["10.20.0.0/16"]; empty allows any address',
    )  # fmt: skip
    # Accession when neither IPC-1 nor OBR-18 carries one (STANDARDS.md §1 precedence).
    hl7_accession_fallback = models.CharField(
        max_length=8,
        choices=[
            ("filler", "Filler order number (ORC-3/OBR-3)"),
            ("placer", "Placer order number (ORC-2/OBR-2)"),
            ("none", "None: reject"),
        ],
        default="filler",
    )
    # The RIS/EMR may send the hospital's report history (ORU^R01 from a sender that is not an AI
    # node): kept read-only as prior reports of the patient (docs/priors.md). Off: such ORUs get AR 200.
    hl7_report_history = models.BooleanField("accepts historical reports (ORU^R01)", default=False)
    # A study is complete when no instance has arrived for this long (DESIGN.md §4).
    study_quiet_seconds = models.PositiveIntegerField(default=90, validators=[MinValueValidator(5)])
    # An interface silent for longer than this turns red on the operations page.
    hl7_expected_gap_minutes = models.PositiveIntegerField(default=60, validators=[MinValueValidator(1)])
    dicom_expected_gap_minutes = models.PositiveIntegerField(default=120, validators=[MinValueValidator(1)])
    # Query/Retrieve (docs/priors.md): where this facility's C-MOVEs may send, and where its priors come from.
    dicom_move_destinations = models.JSONField(
        default=list, blank=True, validators=[validate_move_destinations]
    )
    prior_sources = models.JSONField(default=list, blank=True, validators=[validate_prior_sources])

    # Patient identity domain (docs/orders.md "One patient per identity"): an MRN is unique within
    # this domain. ``patient_id_authority`` is its name as the EMR writes it in PID-3.4 (the ORU sends
    # it back); blank = the first HL7 sender's MSH-4, else the facility code. ``patient_id_issuers`` are
    # the other names that mean the same domain (a modality's Issuer of Patient ID, an old RIS name).
    patient_id_authority = models.CharField("MRN assigning authority", max_length=64, blank=True)
    patient_id_issuers = models.JSONField(
        "other names of the MRN domain", default=list, blank=True, validators=[validate_issuer_list]
    )
    # A study still without an order after this long shows on the operations worklist (docs/orders.md).
    orderless_wait_minutes = models.PositiveIntegerField(default=30, validators=[MinValueValidator(1)])

    # AI results (docs/ai.md): whether a reader must give a verdict on each AI finding before signing,
    # whether the verdicts go out in the ORU, and the PPV below which an algorithm raises an alert.
    ai_verdict_required = models.BooleanField("AI verdict required at signing", default=False)
    ai_verdict_in_oru = models.BooleanField("AI verdicts in the ORU", default=False)
    ai_ppv_alert_threshold = models.FloatField(
        "AI PPV alert threshold",
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0)],
        help_text="e.g. 0.5: an algorithm whose reader-confirmed share falls below raises an ops alert",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "facilities"
        permissions = [
            # Granted per facility through django-guardian (facility admins), never model-wide.
            ("administer_facility", "Administer this facility's templates, catalogue and contacts"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(sla_stroke_minutes__gt=0)
                & models.Q(sla_trauma_minutes__gt=0)
                & models.Q(sla_stat_minutes__gt=0)
                & models.Q(sla_asap_minutes__gt=0)
                & models.Q(sla_routine_minutes__gt=0),
                name="facility_sla_targets_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def sla_target(self, priority: PriorityClass | str) -> timedelta:
        """The contract's turnaround target for a priority class."""
        minutes = getattr(self, f"sla_{PriorityClass(priority).value.lower()}_minutes")
        return timedelta(minutes=minutes)

    def get_additional_data(self) -> dict:
        return {"facility_id": self.pk}

    def patient_id_domain(self) -> tuple[str, frozenset[str]]:
        """The MRN domain: its canonical authority and every name (casefolded) that means it. An
        empty issuer, the facility code and the facility's own HL7 MSH-4 names always mean it: a
        modality that leaves (0010,0021) empty and a RIS that puts its MSH-4 in PID-3.4 both speak
        of the hospital's own MRNs. Cached on the instance (one query per message or image)."""
        cached = getattr(self, "_patient_id_domain", None)
        if cached is None:
            msh4 = (
                list(self.hl7_senders.order_by("pk").values_list("sending_facility", flat=True))
                if self.pk
                else []
            )
            authority = self.patient_id_authority or (msh4[0] if msh4 else self.code)
            names = {"", self.code, authority, *msh4, *self.patient_id_issuers}
            cached = self._patient_id_domain = (authority, frozenset(n.casefold() for n in names))
        return cached

    def patient_authority(self, issuer: str) -> str:
        """The assigning authority a patient identifier is kept under: the facility's domain when
        the issuer is one of its names, else the issuer itself (another authority's identifier)."""
        authority, names = self.patient_id_domain()
        return authority if issuer.strip().casefold() in names else issuer.strip()


class Hl7Sender(models.Model):
    """An HL7 sender (MSH-3 sending application + MSH-4 sending facility) that speaks for a facility.
    Inbound messages from a pair not listed here get AR (unknown sender)."""

    facility = models.ForeignKey(Facility, on_delete=models.CASCADE, related_name="hl7_senders")
    sending_application = models.CharField("MSH-3 sending application", max_length=180)
    sending_facility = models.CharField("MSH-4 sending facility", max_length=180)
    # An AI vendor's node: its ORU^R01 are AI results (docs/ai.md), never reports; other senders' are refused.
    ai_node = models.BooleanField("AI node", default=False)

    class Meta:
        verbose_name = "HL7 sender"
        constraints = [
            models.UniqueConstraint(
                fields=["sending_application", "sending_facility"], name="unique_hl7_sender"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sending_application}^{self.sending_facility}"

    def get_additional_data(self) -> dict:
        return {"facility_id": self.facility_id}


class DicomSender(models.Model):
    """A calling AE title (modality or PACS) that sends images for a facility."""

    facility = models.ForeignKey(Facility, on_delete=models.CASCADE, related_name="dicom_senders")
    ae_title = models.CharField(
        "calling AE title",
        max_length=16,
        unique=True,
        validators=[
            RegexValidator(r"^[\x20-\x5b\x5d-\x7e]{1,16}$", "1–16 printable characters, no backslash")
        ],
    )
    description = models.CharField(max_length=200, blank=True)
    # Retired storage SOP classes this sender may still send (older ultrasound carts use Ultrasound
    # Image Storage (Retired) 1.2.840.10008.5.1.4.1.1.6 and its multi-frame …1.1.3); others are refused.
    retired_sop_classes = models.JSONField(
        "retired SOP classes accepted", default=list, blank=True, validators=[validate_sop_class_list]
    )

    class Meta:
        verbose_name = "DICOM sender"

    def __str__(self) -> str:
        return self.ae_title

    def get_additional_data(self) -> dict:
        return {"facility_id": self.facility_id}
