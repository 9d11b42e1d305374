"""TLS for the edges (MLLP in and out, the DICOM SCP): one place builds the ``ssl.SSLContext``s, so
every edge speaks the same protocol versions (TLS 1.2+, as BCP 195 and dcmtk's default profile ask).
Certificates are PEM files named by path (settings, the onboarding YAML); keys never live in the
database."""

from __future__ import annotations

import ssl


def server_tls_context(cert_file: str, key_file: str, ca_file: str = "") -> ssl.SSLContext | None:
    """The listener's context, or None when no certificate is configured (plain TCP). With
    ``ca_file`` a client certificate signed by that CA is required (mutual TLS)."""
    if not cert_file and not key_file:
        return None
    if not (cert_file and key_file):
        raise ValueError("TLS needs both a certificate file and its key file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """An outbound context that verifies the peer's certificate and host name: against ``ca_file``,
    or the system's CAs without one. ``cert_file``/``key_file``: our client certificate."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context
