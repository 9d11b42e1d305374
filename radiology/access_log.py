"""No PHI in the web server's logs (issue 15 §7): uvicorn writes every request line with its query
string, and a DICOMweb search carries the patient in it (``/dicomweb/studies?PatientID=…``,
``?PatientName=…``). The query is replaced by ``?[query redacted]`` before the line is formatted:
the path, method and status stay for operations, the search terms never reach a log file, journald
or a log shipper. The audit log records who searched for what (``accounts.audit``); the access log is
not where that belongs.

Installed from ``radiology/asgi.py`` (every uvicorn worker imports it after uvicorn set up its
loggers, the embedded server included), so no command line or log config has to remember it."""

from __future__ import annotations

import logging

REDACTED = "?[query redacted]"
# uvicorn.access: the request lines; uvicorn.error: its websocket "accepted"/"rejected" lines
WEB_SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error")


def query_redacted(value: object) -> object:
    """``/path?anything`` → ``/path?[query redacted]``; any other argument unchanged."""
    if isinstance(value, str) and "?" in value:
        return value.partition("?")[0] + REDACTED
    return value


class QueryStringRedacted(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(query_redacted(arg) for arg in record.args)
        return True


def web_server_logs_redact() -> None:
    for name in WEB_SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QueryStringRedacted) for f in logger.filters):
            logger.addFilter(QueryStringRedacted())
