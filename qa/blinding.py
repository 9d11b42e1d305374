"""Blinding (issue 7): the reviewer must not learn whose read they review — not from the name, the
signature line, nor initials typed in the text.

Redaction errs on the side of removing too much: a reader called White makes "White" (capitalised,
as a word) disappear from the text they signed, even in "White matter …" at the start of a sentence.
A reviewer reading "[reader] matter" loses little; a reviewer who recognises a colleague loses the
blinding for good."""

from __future__ import annotations

import re

MASK = "[reader]"

# Lines that name the signer by convention in dictated reports.
_SIGNATURE_LINE = re.compile(
    r"^\s*(electronically\s+signed|e-signed|signed|dictated|read|reported|interpreted|attending|"
    r"transcribed|verified)\b[^\n]*(\n|$)",
    re.IGNORECASE | re.MULTILINE,
)


def _name_parts(reader) -> tuple[list[str], list[str]]:
    """Words of the reader's names (display name, first/last) and their initials."""
    names = " ".join(filter(None, [getattr(reader, "display_name", ""), reader.first_name, reader.last_name]))
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z'\-]+", names) if w.upper() not in {"MD", "DO", "DR"}]
    words = list(dict.fromkeys(words))
    initials = []
    if reader.first_name and reader.last_name:
        initials.append(reader.first_name[0] + reader.last_name[0])
    if len(words) >= 2:
        initials.append("".join(w[0] for w in words[:3]))
    return words, list(dict.fromkeys(i.upper() for i in initials if len(i) >= 2))


def redact_reader(text: str, reader) -> str:
    """``text`` with every trace of ``reader`` replaced by ``[reader]``."""
    text = _SIGNATURE_LINE.sub("", text)
    words, initials = _name_parts(reader)
    for word in sorted(words, key=len, reverse=True):
        # "Dr. White", "White, MD", and the name as a capitalised word
        text = re.sub(rf"\b(?:Dr\.?\s+)?{re.escape(word)}\b(?:,?\s+M\.?D\.?)?", MASK, text)
    for letters in initials:
        # "JW", "J.W.", "J. W." as a word of their own, upper-case only ("jw" is not an initial)
        dotted = r"\.?\s?".join(re.escape(c) for c in letters) + r"\.?"
        text = re.sub(rf"(?<![A-Za-z]){dotted}(?![A-Za-z])", MASK, text)
    if reader.username:
        text = re.sub(rf"\b{re.escape(reader.username)}\b", MASK, text, flags=re.IGNORECASE)
    return re.sub(rf"(?:{re.escape(MASK)}[\s,]*){{2,}}", MASK + " ", text).strip()
