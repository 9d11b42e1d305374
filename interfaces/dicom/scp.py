"""The DICOM Storage and Verification SCP (pynetdicom). Protocol only: the calling AE title names
the facility, each C-STORE goes through ``interfaces.dicom.receive`` and answers its status.

pynetdicom runs every association in its own thread; the handlers below run there, so each
association has its own database connection, closed when the association ends."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connections
from pydicom.dataset import Dataset
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    AllStoragePresentationContexts,
    evt,
)
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification, register_uid
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from facilities.models import RETIRED_STORAGE_SOP_CLASSES, DicomSender, Facility, address_allowed
from imaging.group_commit import GroupCommitter
from imaging.services import IndexCache
from imaging.transcoding import syntax_decodable
from interfaces.dicom.header import part10_file_meta
from interfaces.dicom.mwl import worklist_responses
from interfaces.dicom.qr import (
    QR_SOP_CLASSES,
    IdentifierError,
    QueryError,
    find_responses,
    move_destination,
    retrieve_objects,
    retrieve_responses,
    storage_contexts,
)
from interfaces.dicom.reactor import wake_on_work
from interfaces.dicom.receive import (
    dicom_association_close,
    dicom_association_open,
    dicom_instance_receive,
)
from interfaces.models import DicomAssociation
from interfaces.tls import server_tls_context

log = logging.getLogger(__name__)
# pynetdicom knows no retired storage class: without a registered service class an accepted
# context's C-STORE aborts the association. Keywords as in PS3.6 (…Retired).
for _uid, _name in RETIRED_STORAGE_SOP_CLASSES.items():
    # "Ultrasound Multi-frame Image Storage (Retired)" → UltrasoundMultiFrameImageStorageRetired
    register_uid(
        _uid, "".join(w.capitalize() for w in re.split(r"[^A-Za-z0-9]+", _name)), StorageServiceClass
    )
NOT_AUTHORISED = 0x0124  # C-STORE "Refused: Not authorized" (PS3.7 C.4.2.1.4)
# Connections not yet counted as associations (no A-ASSOCIATE-RQ yet: a port scan, a probe, a TLS
# handshake) are allowed this many beyond READROOM_DICOM_MAX_ASSOCIATIONS; more are closed as they come.
# Each costs a thread and a socket, never a database session, and is closed after the ACSE timeout.
CONNECTION_HEADROOM = 64


def _status_with_comment(status: int, reason: str) -> Dataset:
    """A failure status with Error Comment (0000,0902; LO, at most 64 characters): the modality's
    log says why, not only a number."""
    reply = Dataset()
    reply.Status = status
    reply.ErrorComment = reason[:64]
    return reply


class NoDelayAssociationServer(ThreadedAssociationServer):
    """Sets TCP_NODELAY on accepted sockets: without it every C-STORE response waits ~40 ms for a
    delayed ACK (Nagle), capping a modality at ~20 instances/s (STANDARDS.md §6).

    With ``listening`` it serves a socket bound by another process (``dicom_scp --processes N``,
    interfaces.supervisor) instead of binding its own: it neither binds nor listens again (that
    would shrink the shared backlog to socketserver's 5), and on close it only closes its own
    descriptor — ``shutdown()`` on a listening socket stops it listening in every process."""

    request_queue_size = 128  # a burst of associations waits in the accept queue instead of being refused
    group: GroupCommitter | None = None  # the SCP's group commit, stopped with the server
    reactor_wake = True  # associations wait for work instead of polling (interfaces.dicom.reactor)

    def __init__(self, *args, listening: socket.socket | None = None, **kwargs) -> None:
        self._listening = listening
        self.handshakes = 0  # TLS handshakes under way: connections that are no association yet
        self.handshakes_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self._listening is None:
            super().server_bind()
            return
        self.socket.close()  # the one TCPServer made; the inherited socket replaces it
        self.socket = self._listening
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self._listening is None:
            super().server_activate()

    def server_close(self) -> None:
        if self.group is not None:  # associations still open (a stop's grace) store alone
            self.group.stop()
        if self._listening is None:
            super().server_close()
        else:
            self.socket.close()

    def get_request(self):
        # not super(): pynetdicom wraps the socket for TLS with the handshake in this, the accepting,
        # thread, so one client that connects and sends nothing would stop every other from being
        # accepted. The handshake happens in the association's own thread (_ConnectionReturningHandler).
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def verify_request(self, request, client_address) -> bool:
        """Close a connection at once when too many are open: a flood of bare TCP connections then
        costs nothing but the accept, and the associations already open go on."""
        ceiling = self.ae.maximum_associations
        if len(self.active_associations) + self.handshakes >= ceiling:
            log.warning("DICOM connection from %s closed: %d connections open", client_address[0], ceiling)
            return False
        return True

    def shutdown(self) -> None:
        # AE.make_server (needed for a custom server class) does not register the server with its
        # AE the way start_server does, and AssociationServer.shutdown expects it registered.
        if self not in self.ae._servers:
            self.ae._servers.append(self)
        super().shutdown()


class _ConnectionReturningHandler(RequestHandler):
    """Each association runs in a thread of its own, and a Django connection belongs to the thread
    that opened it. The association's thread hands its connection back when it ends (to the pool,
    ``dicom_scp``; closed, without one): the one it ran on otherwise stayed checked out of the pool
    until the garbage collector closed it, and a pool of 34 was empty after 34 associations."""

    def handle(self) -> None:
        if isinstance(self.request, ssl.SSLSocket) and not self._tls_handshake():
            return
        super().handle()

    def _tls_handshake(self) -> bool:
        """The TLS handshake, bounded by the ACSE timeout (a client that opens the connection and
        says nothing is dropped like one that sends no A-ASSOCIATE-RQ)."""
        sock: ssl.SSLSocket = self.request
        sock.settimeout(self.server.ae.acse_timeout)
        with self.server.handshakes_lock:
            self.server.handshakes += 1
        try:
            sock.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError, timeout and reset are OSErrors
            log.warning("DICOM TLS handshake from %s failed: %s", self.client_address[0], exc)
            self.server.shutdown_request(sock)
            return False
        finally:
            with self.server.handshakes_lock:
                self.server.handshakes -= 1
        sock.settimeout(None)  # as pynetdicom leaves an accepted socket: it selects before reading
        return True

    def _create_association(self):
        assoc = super()._create_association()
        if self.server.reactor_wake:
            wake_on_work(assoc)
        run = assoc.run

        def run_then_return_connection() -> None:
            try:
                run()
            finally:
                connections.close_all()

        assoc.run = run_then_return_connection
        return assoc


class _AcceptorContexts(list):
    """pynetdicom deep-copies the acceptor's presentation contexts for every association: all
    storage SOP classes × all transfer syntaxes is ~7,700 UID objects, ~50 ms of CPU per association
    (a modality that opens one association per image pays it per image). The UIDs are immutable
    strings; copying each context and its lists (what an association may change) is enough."""

    def __deepcopy__(self, memo) -> list:
        copies = []
        for context in self:
            clone = copy.copy(context)
            clone.__dict__.update({k: list(v) for k, v in vars(context).items() if isinstance(v, list)})
            copies.append(clone)
        return copies


@dataclass
class _AssociationState:
    facility: Facility | None
    calling_ae_title: str
    association_id: int = 0  # set once its row is written
    stored: int = 0
    failed: int = 0
    echoes: int = 0
    cache: IndexCache = field(default_factory=IndexCache)


@dataclass
class StorageScp:
    ae_title: str
    reject_unknown_callers: bool = True
    check_called_ae: bool = True
    max_associations: int = 32
    max_associations_per_ae: int = 10
    network_timeout: float | None = 30.0
    acse_timeout: float | None = 5.0
    ssl_context: ssl.SSLContext | None = None
    group: GroupCommitter | None = None  # None: each instance in its own transaction
    reactor_wake: bool = True  # False: pynetdicom's polling reactors
    _states: dict[int, _AssociationState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def application_entity(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        # Modalities send compressed images too: the bytes are stored as sent, but only in the syntaxes
        # ReadRoom can decode (thumbnails, the built-in viewer and WADO-RS transcoding need that).
        # A modality proposing another one gets the context refused and can send it uncompressed.
        # scp_role: a C-GET requestor proposes to be the Storage SCP on this association (SCP/SCU Role
        # Selection, PS3.7 D.3.3.4); a modality proposing nothing stays the Storage SCU.
        syntaxes = [uid for uid in ALL_TRANSFER_SYNTAXES if syntax_decodable(uid)]
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, syntaxes, scu_role=True, scp_role=True)
        # retired classes are offered here and withdrawn per association unless the sender may send
        # them (on_requested): pynetdicom's list has none of them
        for sop_class in RETIRED_STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, syntaxes, scu_role=True, scp_role=True)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        for sop_class in QR_SOP_CLASSES:
            ae.add_supported_context(sop_class)
        ae.add_supported_context(ModalityWorklistInformationFind)  # interfaces.dicom.mwl
        ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs (STANDARDS.md §3 throughput)
        # pynetdicom counts every open connection, probes included, and would refuse a modality's
        # association while 32 probes sit idle: the limits that count are on_requested's (identified
        # associations, per AE and in total); this is only the ceiling on connections (verify_request)
        ae.maximum_associations = self.max_associations + CONNECTION_HEADROOM
        # an association idle this long is aborted, a connection without A-ASSOCIATE-RQ this long closed
        ae.network_timeout = self.network_timeout
        ae.acse_timeout = self.acse_timeout
        return ae

    def handlers(self) -> list:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_MOVE, self.on_move),
            (evt.EVT_C_GET, self.on_get),
            (evt.EVT_RELEASED, self.on_ended),
            (evt.EVT_ABORTED, self.on_ended),
            (evt.EVT_CONN_CLOSE, self.on_connection_closed),
            (evt.EVT_DIMSE_SENT, _idle_timer_restart),
        ]

    # --- events ------------------------------------------------------------------------------

    def on_requested(self, event) -> None:
        assoc = event.assoc
        # the requestor's AE title is filled in only after negotiation; read it from the request
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        called = str(assoc.requestor.primitive.called_ae_title).strip()
        peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
        sender = _sender_for_calling_ae(calling)
        facility = sender.facility if sender else None
        refusal = None
        if facility is None and self.reject_unknown_callers:
            refusal = _permanent(CALLING_AE_NOT_RECOGNISED, "calling AE title not registered to any facility")
        elif self.check_called_ae and called != self.ae_title.strip():
            refusal = _permanent(
                CALLED_AE_NOT_RECOGNISED, f"called AE title {called!r} is not {self.ae_title!r}"
            )
        elif facility is not None and not address_allowed(
            facility.dicom_allowed_networks, assoc.requestor.address
        ):
            # the AE title is known but not from here: to the caller it is not recognised (the
            # reject carries no text, and says nothing about which addresses would be allowed)
            refusal = _permanent(
                CALLING_AE_NOT_RECOGNISED,
                f"address {assoc.requestor.address} not in {facility.code}'s DICOM allow-list",
            )
        else:
            refusal = self._slot_reserve(assoc, calling, facility)
        if refusal is not None:
            diagnostic, reason = refusal
            dicom_association_open(
                kind=DicomAssociation.Kind.DIMSE,
                facility=facility,
                calling_ae_title=calling,
                peer=peer,
                accepted=False,
                rejection_reason=reason,
            )
            log.warning("rejected association from %r to %r (%s): %s", calling, called, peer, reason)
            _reject(assoc, *diagnostic)
            return
        _retired_classes_withdraw(assoc, allowed=set(sender.retired_sop_classes) if sender else set())
        row = dicom_association_open(
            kind=DicomAssociation.Kind.DIMSE, facility=facility, calling_ae_title=calling, peer=peer
        )
        with self._lock:
            self._states[id(assoc)].association_id = row.pk

    def _slot_reserve(self, assoc, calling: str, facility: Facility | None) -> tuple | None:
        """Count this association in (checked and taken under one lock: two associations of one AE
        arriving together cannot both take its last slot), or the refusal: transient, so the
        modality retries later instead of giving up on the study."""
        with self._lock:
            if len(self._states) >= self.max_associations:
                return _transient(f"{len(self._states)} associations open (limit {self.max_associations})")
            of_ae = sum(1 for state in self._states.values() if state.calling_ae_title == calling)
            if of_ae >= self.max_associations_per_ae:
                return _transient(
                    f"{of_ae} associations of {calling} open (limit {self.max_associations_per_ae})"
                )
            self._states[id(assoc)] = _AssociationState(facility=facility, calling_ae_title=calling)
        return None

    def on_echo(self, event) -> int:
        state = self._state(event.assoc)
        if state is not None:
            state.echoes += 1
        return 0x0000

    def on_store(self, event) -> int | Dataset:
        state = self._state(event.assoc)
        if state is None or state.facility is None:
            return NOT_AUTHORISED
        with self.group.arriving() if self.group else contextlib.nullcontext():
            result = dicom_instance_receive(
                facility=state.facility,
                part10=_part10(event),
                association_id=state.association_id,
                sop_instance_uid_hint=str(event.request.AffectedSOPInstanceUID or ""),
                cache=state.cache,
                group=self.group,
            )
        if result.ok:
            state.stored += 1
        else:
            state.failed += 1
            log.warning(
                "C-STORE from %s failed 0x%04X: %s",
                event.assoc.requestor.ae_title,
                result.status,
                result.reason,
            )
            if result.reason:
                return _status_with_comment(result.status, result.reason)
        return result.status

    # --- Query/Retrieve (interfaces.dicom.qr): the calling AE's facility is the whole scope -----------

    def on_find(self, event):
        state = self._state(event.assoc)
        if state is None or state.facility is None:
            yield NOT_AUTHORISED, None
            return
        if event.request.AffectedSOPClassUID == ModalityWorklistInformationFind:
            yield from worklist_responses(
                state.facility,
                event.identifier,
                calling_ae_title=_calling(event),
                cancelled=lambda: event.is_cancelled,
            )
            return
        yield from find_responses(
            state.facility,
            event.identifier,
            event.request.AffectedSOPClassUID,
            calling_ae_title=_calling(event),
            cancelled=lambda: event.is_cancelled,
        )

    def on_move(self, event):
        state = self._state(event.assoc)
        facility = state.facility if state else None
        destination = move_destination(facility, str(event.move_destination)) if facility else None
        if destination is None:
            log.warning("C-MOVE from %s to unknown destination %r", _calling(event), event.move_destination)
            yield None, None  # pynetdicom answers 0xA801 (Move Destination unknown)
            return
        try:
            objects = retrieve_objects(
                facility, event.identifier, event.request.AffectedSOPClassUID,
                calling_ae_title=_calling(event), via="DICOM C-MOVE",
            )  # fmt: skip
        except (IdentifierError, QueryError) as exc:
            log.warning("C-MOVE from %s refused: %s", _calling(event), exc)
            yield destination[0], destination[1]
            yield 1
            yield 0xA900, None
            return
        yield destination[0], destination[1], {"contexts": storage_contexts(objects)}
        yield len(objects)
        yield from retrieve_responses(objects, calling_ae_title=_calling(event))

    def on_get(self, event):
        state = self._state(event.assoc)
        if state is None or state.facility is None:
            yield 0
            return
        try:
            objects = retrieve_objects(
                state.facility, event.identifier, event.request.AffectedSOPClassUID,
                calling_ae_title=_calling(event), via="DICOM C-GET",
            )  # fmt: skip
        except (IdentifierError, QueryError) as exc:
            log.warning("C-GET from %s refused: %s", _calling(event), exc)
            yield 1
            yield 0xA900, None
            return
        yield len(objects)
        yield from retrieve_responses(objects, calling_ae_title=_calling(event))

    def on_ended(self, event) -> None:
        self._close(event.assoc)

    def on_connection_closed(self, event) -> None:
        self._close(event.assoc)
        # this runs in the association's DUL thread, which ends here: its connection (the close
        # above may have opened it) goes back too
        connections.close_all()

    def _state(self, assoc) -> _AssociationState | None:
        with self._lock:
            return self._states.get(id(assoc))

    def _close(self, assoc) -> None:
        with self._lock:
            state = self._states.pop(id(assoc), None)
        if state is not None and state.association_id:
            dicom_association_close(
                association_id=state.association_id,
                stored=state.stored,
                failed=state.failed,
                echoes=state.echoes,
            )

    # --- running -----------------------------------------------------------------------------

    def start(
        self, host: str, port: int, *, listening: socket.socket | None = None
    ) -> NoDelayAssociationServer:
        ae = self.application_entity()
        server = ae.make_server(
            (host, port),
            ssl_context=self.ssl_context,
            evt_handlers=self.handlers(),
            server_class=NoDelayAssociationServer,
            request_handler=_ConnectionReturningHandler,
            listening=listening,
        )
        server.contexts = _AcceptorContexts(server.contexts)
        server.group = self.group
        server.reactor_wake = self.reactor_wake
        thread = threading.Thread(target=server.serve_forever, name=f"dicom-scp:{port}", daemon=True)
        thread.start()
        return server


# A-ASSOCIATE-RJ (PS3.8 §9.3.4, table 9-21): result, source, diagnostic
REJECTED_PERMANENT, REJECTED_TRANSIENT = 0x01, 0x02
SERVICE_USER, SERVICE_PROVIDER_PRESENTATION = 0x01, 0x03
CALLING_AE_NOT_RECOGNISED = 0x03  # source service user
CALLED_AE_NOT_RECOGNISED = 0x07  # source service user
LOCAL_LIMIT_EXCEEDED = 0x02  # source service provider (presentation)


def _permanent(diagnostic: int, reason: str) -> tuple[tuple[int, int, int], str]:
    return (REJECTED_PERMANENT, SERVICE_USER, diagnostic), reason


def _transient(reason: str) -> tuple[tuple[int, int, int], str]:
    return (REJECTED_TRANSIENT, SERVICE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED), reason


def _reject(assoc, result: int, source: int, diagnostic: int) -> None:
    """Send A-ASSOCIATE-RJ and wait for the DUL to put it on the wire. pynetdicom closes the socket
    as soon as EVT_REQUESTED returns; without the wait the reject was still queued and the modality
    saw a dropped connection ("peer aborted") instead of the reason. ``kill`` returns once the DUL
    is idle again (the peer closed, or ARTIM)."""
    assoc.acse.send_reject(result, source, diagnostic)
    assoc.kill()


def _idle_timer_restart(event) -> None:
    """What we send counts as activity too: pynetdicom restarts its idle timer only when a PDU
    arrives, so a C-MOVE whose sub-operations (on another association) outlast the network timeout,
    with the requestor silently waiting, was aborted right after its final response. ``_idle_timer``
    is pynetdicom's own (no public way to restart it); without it, this does nothing."""
    timer = getattr(event.assoc.dul, "_idle_timer", None)
    if timer is not None:
        timer.restart()


def _part10(event) -> bytes:
    """The received object as a Part 10 stream: what ``event.encoded_dataset()`` returns, with its
    File Meta Information encoded directly (``header.part10_file_meta``) instead of through pydicom."""
    request = event.request
    if not request.AffectedSOPClassUID or not request.AffectedSOPInstanceUID:
        return event.encoded_dataset(include_meta=True)  # whatever pynetdicom does with that
    try:
        meta = part10_file_meta(
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            implementation_uid=PYNETDICOM_IMPLEMENTATION_UID,
            implementation_version=PYNETDICOM_IMPLEMENTATION_VERSION,
        )
    except ValueError:  # not ASCII: pynetdicom's own encoding says what it makes of it
        return event.encoded_dataset(include_meta=True)
    return meta + request.DataSet.getvalue()


def _calling(event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def _sender_for_calling_ae(calling_ae_title: str) -> DicomSender | None:
    return (
        DicomSender.objects.select_related("facility")
        .filter(ae_title=calling_ae_title, facility__active=True)
        .first()
    )


def _retired_classes_withdraw(assoc, *, allowed: set[str]) -> None:
    """Before negotiation: this association supports only the retired classes its sender may send;
    a context for another is refused (abstract syntax not supported), as for any unknown class."""
    withdrawn = set(RETIRED_STORAGE_SOP_CLASSES) - allowed
    if withdrawn:
        contexts = assoc.acceptor.supported_contexts
        assoc.acceptor.supported_contexts = [cx for cx in contexts if cx.abstract_syntax not in withdrawn]


def storage_scp() -> StorageScp:
    return StorageScp(
        ae_title=settings.READROOM_DICOM_AE_TITLE,
        reject_unknown_callers=settings.READROOM_DICOM_REJECT_UNKNOWN_CALLERS,
        check_called_ae=settings.READROOM_DICOM_CHECK_CALLED_AE,
        max_associations=settings.READROOM_DICOM_MAX_ASSOCIATIONS,
        max_associations_per_ae=settings.READROOM_DICOM_MAX_ASSOCIATIONS_PER_AE,
        network_timeout=settings.READROOM_DICOM_NETWORK_TIMEOUT or None,
        acse_timeout=settings.READROOM_DICOM_ACSE_TIMEOUT or None,
        ssl_context=server_tls_context(
            settings.READROOM_DICOM_TLS_CERT_FILE,
            settings.READROOM_DICOM_TLS_KEY_FILE,
            settings.READROOM_DICOM_TLS_CA_FILE,
        ),
        reactor_wake=settings.READROOM_DICOM_REACTOR_WAKE,
        group=GroupCommitter(
            max_instances=settings.READROOM_DICOM_GROUP_COMMIT_MAX,
            max_wait_seconds=settings.READROOM_DICOM_GROUP_COMMIT_WAIT_MS / 1000,
        )
        if settings.READROOM_DICOM_GROUP_COMMIT
        else None,
    )


async def dicom_scp_service(
    stop: asyncio.Event,
    *,
    host: str | None = None,
    port: int | None = None,
    listening: socket.socket | None = None,
    stop_grace_seconds: float = 0.0,
) -> None:
    """Run the SCP until ``stop`` is set (embedded server and ``manage.py dicom_scp``). ``listening``:
    a socket bound by the supervisor (``--processes N``). On stop it accepts no new association and
    gives the open ones up to ``stop_grace_seconds`` to finish, then aborts them (A-ABORT: the
    modality knows, and sends those images again)."""
    server = storage_scp().start(
        host or settings.READROOM_LISTEN_HOST, port or settings.READROOM_DICOM_PORT, listening=listening
    )
    log.info("DICOM SCP %s listening on %s", settings.READROOM_DICOM_AE_TITLE, server.server_address)
    try:
        await stop.wait()
    finally:
        await asyncio.to_thread(_server_stop, server, stop_grace_seconds)


def _server_stop(server: NoDelayAssociationServer, grace_seconds: float) -> None:
    server.shutdown()  # no new associations (the socket is closed in this process)
    log.info(
        "DICOM SCP stopping: no new associations; waiting up to %.0f s for %d open",
        grace_seconds, len(_established(server)),
    )  # fmt: skip
    deadline = time.monotonic() + grace_seconds
    # only established associations may carry images: a connection still without its A-ASSOCIATE-RQ
    # (a probe, a half-done TLS handshake) is not waited for — it ends by the ACSE timeout, or with
    # the process — so a port scan can no longer hold a stop for its whole grace
    while (open_ := _established(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for assoc in open_:
        log.warning("DICOM association from %s aborted at shutdown", assoc.requestor.ae_title)
        assoc.abort()


def _established(server: NoDelayAssociationServer) -> list:
    return [assoc for assoc in server.active_associations if assoc.is_established]
