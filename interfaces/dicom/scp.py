"""The DICOM Storage and Verification SCP (pynetdicom). Protocol only: the calling AE title names
the facility, each C-STORE goes through ``interfaces.dicom.receive`` and answers its status.

pynetdicom runs every association in its own thread; the handlers below run there, so each
association has its own database connection, closed when the association ends."""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
import threading
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connections
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from facilities.models import DicomSender, Facility
from imaging.services import IndexCache
from interfaces.dicom.receive import (
    dicom_association_close,
    dicom_association_open,
    dicom_instance_receive,
)
from interfaces.models import DicomAssociation

log = logging.getLogger(__name__)
NOT_AUTHORISED = 0x0124  # C-STORE "Refused: Not authorized" (PS3.7 C.4.2.1.4)


class NoDelayAssociationServer(ThreadedAssociationServer):
    """Sets TCP_NODELAY on accepted sockets: without it every C-STORE response waits ~40 ms for a
    delayed ACK (Nagle), capping a modality at ~20 instances/s (STANDARDS.md §6)."""

    def get_request(self):
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def shutdown(self) -> None:
        # AE.make_server (needed for a custom server class) does not register the server with its
        # AE the way start_server does, and AssociationServer.shutdown expects it registered.
        if self not in self.ae._servers:
            self.ae._servers.append(self)
        super().shutdown()


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
    association_id: int
    facility: Facility | None
    stored: int = 0
    failed: int = 0
    echoes: int = 0
    cache: IndexCache = field(default_factory=IndexCache)


@dataclass
class StorageScp:
    ae_title: str
    reject_unknown_callers: bool = True
    _states: dict[int, _AssociationState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def application_entity(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        # Modalities send compressed images too: we store the bytes as sent, so accept them all.
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs (STANDARDS.md §3 throughput)
        ae.maximum_associations = 32
        return ae

    def handlers(self) -> list:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_RELEASED, self.on_ended),
            (evt.EVT_ABORTED, self.on_ended),
            (evt.EVT_CONN_CLOSE, self.on_connection_closed),
        ]

    # --- events ------------------------------------------------------------------------------

    def on_requested(self, event) -> None:
        assoc = event.assoc
        # the requestor's AE title is filled in only after negotiation; read it from the request
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
        facility = _facility_for_calling_ae(calling)
        if facility is None and self.reject_unknown_callers:
            dicom_association_open(
                kind=DicomAssociation.Kind.DIMSE,
                facility=None,
                calling_ae_title=calling,
                peer=peer,
                accepted=False,
                rejection_reason="calling AE title not registered to any facility",
            )
            log.warning("rejected association from unknown calling AE %r (%s)", calling, peer)
            # A-ASSOCIATE-RJ: rejected-permanent, service-user, calling-AE-title-not-recognized
            assoc.acse.send_reject(0x01, 0x01, 0x03)
            return
        row = dicom_association_open(
            kind=DicomAssociation.Kind.DIMSE, facility=facility, calling_ae_title=calling, peer=peer
        )
        with self._lock:
            self._states[id(assoc)] = _AssociationState(association_id=row.pk, facility=facility)

    def on_echo(self, event) -> int:
        state = self._state(event.assoc)
        if state is not None:
            state.echoes += 1
        return 0x0000

    def on_store(self, event) -> int:
        state = self._state(event.assoc)
        if state is None or state.facility is None:
            return NOT_AUTHORISED
        result = dicom_instance_receive(
            facility=state.facility,
            part10=event.encoded_dataset(include_meta=True),
            association_id=state.association_id,
            sop_instance_uid_hint=str(event.request.AffectedSOPInstanceUID or ""),
            cache=state.cache,
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
        return result.status

    def on_ended(self, event) -> None:
        self._close(event.assoc)

    def on_connection_closed(self, event) -> None:
        self._close(event.assoc)
        connections.close_all()  # this association's thread ends here; so does its DB connection

    def _state(self, assoc) -> _AssociationState | None:
        with self._lock:
            return self._states.get(id(assoc))

    def _close(self, assoc) -> None:
        with self._lock:
            state = self._states.pop(id(assoc), None)
        if state is not None:
            dicom_association_close(
                association_id=state.association_id,
                stored=state.stored,
                failed=state.failed,
                echoes=state.echoes,
            )

    # --- running -----------------------------------------------------------------------------

    def start(self, host: str, port: int) -> NoDelayAssociationServer:
        ae = self.application_entity()
        server = ae.make_server(
            (host, port), evt_handlers=self.handlers(), server_class=NoDelayAssociationServer
        )
        server.contexts = _AcceptorContexts(server.contexts)
        thread = threading.Thread(target=server.serve_forever, name=f"dicom-scp:{port}", daemon=True)
        thread.start()
        return server


def _facility_for_calling_ae(calling_ae_title: str) -> Facility | None:
    sender = (
        DicomSender.objects.select_related("facility")
        .filter(ae_title=calling_ae_title, facility__active=True)
        .first()
    )
    return sender.facility if sender else None


def storage_scp() -> StorageScp:
    return StorageScp(
        ae_title=settings.READROOM_DICOM_AE_TITLE,
        reject_unknown_callers=settings.READROOM_DICOM_REJECT_UNKNOWN_CALLERS,
    )


async def dicom_scp_service(stop: asyncio.Event, *, host: str | None = None, port: int | None = None) -> None:
    """Run the SCP until ``stop`` is set (embedded server and ``manage.py dicom_scp``)."""
    server = storage_scp().start(host or settings.READROOM_LISTEN_HOST, port or settings.READROOM_DICOM_PORT)
    log.info("DICOM SCP %s listening on %s", settings.READROOM_DICOM_AE_TITLE, server.server_address)
    try:
        await stop.wait()
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()
