"""HTML → PDF with WeasyPrint, the one way every document (credentialing packet, signed report, QA
report) is printed."""

from __future__ import annotations

import logging

# WeasyPrint logs every layout step at INFO; one document would add ten lines to the service log.
logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)


def _no_fetch(url: str, *args, **kwargs):
    # Documents are self-contained (inline CSS, system fonts). Refusing every fetch means no text a
    # user typed into a record can make the server request a URL.
    raise ValueError(f"documents do not load external resources ({url[:60]})")


def html_to_pdf(html: str) -> bytes:
    from weasyprint import HTML  # imported on use: it loads pango, which most requests never need

    return HTML(string=html, url_fetcher=_no_fetch).write_pdf()
