"""The listener reads every frame's content with a plain split on the MSH separators (fast);
python-hl7's tree is used when the message has escape sequences. Both must read every message
the same way, down to the NAK: these tests compare them on real and on mangled messages."""

from __future__ import annotations

import random

import pytest

from interfaces.hl7.parse import (
    Hl7Error,
    check_header,
    content_read,
    hl7_message,
    parse,
    read_header,
    split_message,
)
from tests import hl7_data

SEPARATORS = "|^~\\&"


def corpus() -> list[str]:
    return [
        hl7_data.orm(),
        hl7_data.orm("XO", priority="STAT", reason="CODE STROKE"),
        hl7_data.orm("CA", extra_segments=("NTE|1||CALLED TO DR X", "ZDS|1.2.3.4^RIS^Application^DICOM")),
        hl7_data.orm(version="2.5.1", extra_segments=("ORC|NW|P2^EPIC|F2^RIS", "OBR|1|P2||71045^XR CHEST")),
        hl7_data.omi(),
        hl7_data.adt_a08(),
        hl7_data.adt_a40(),
        hl7_data.orm().replace("PID|1||MRN1001^^^LAKESHORE^MR", "PID|1||X1^^^A^PI~MRN1001^^^LAKESHORE^MR"),
    ]


def outcome(kind, header, message):
    try:
        return content_read(kind, header, message)
    except Hl7Error as exc:
        return ("Hl7Error", exc.ack, exc.code, exc.text, exc.location)
    except Exception as exc:  # the two paths must not even differ in how they fail
        return (type(exc).__name__, str(exc))


def both_ways(text: str):
    """(split reading, python-hl7 reading), or None when the header already decides."""
    try:
        header = read_header(text)
        kind = check_header(header)
    except Hl7Error:
        return None
    split = split_message(text, header)
    if split is None:
        return None
    return outcome(kind, header, split), outcome(kind, header, hl7_message(text))


def mangle(text: str, rng: random.Random) -> str:
    """Keep the MSH (the header is read separately) and damage the rest: separators added or
    removed, fields emptied or padded, segments dropped or emptied."""
    head, _, body = text.partition("\r")
    chars = list(body)
    for _ in range(rng.randint(1, 6)):
        where = rng.randrange(len(chars) + 1)
        action = rng.random()
        if action < 0.35:
            chars.insert(where, rng.choice("|^~&\r "))
        elif action < 0.6 and chars:
            del chars[min(where, len(chars) - 1)]
        elif action < 0.8:
            chars[where:where] = list(rng.choice(["||", "^^^", "~", "&&", "  ", "\r\r", "X"]))
        else:
            stop = body.find("\r", where)
            del chars[where : stop if stop > 0 else len(chars)]
    return head + "\r" + "".join(chars)


@pytest.mark.parametrize("text", corpus())
def test_split_reading_equals_python_hl7_on_real_messages(text):
    # given a message as a RIS sends it
    # when it is read both ways
    split, tree = both_ways(text)
    # then the facts are the same (and were read: a ParsedMessage, not an error)
    assert split == tree
    assert not isinstance(split, tuple)


def test_split_reading_equals_python_hl7_on_mangled_messages():
    # given thousands of damaged messages (missing fields, extra separators, lost segments)
    rng = random.Random(3)
    compared = errors = 0
    for n in range(3000):
        text = mangle(rng.choice(corpus()), rng)
        # when each is read both ways
        result = both_ways(text)
        if result is None:
            continue
        split, tree = result
        # then the facts, or the NAK (ack, code, text, location), are identical
        assert split == tree, f"case {n}: {text!r}"
        compared += 1
        errors += isinstance(split, tuple)
    assert compared > 2500 and errors > 100  # both accepted and refused messages were compared


def test_other_encoding_characters_are_honoured():
    # given a sender declaring its own separators in MSH-1/MSH-2
    text = hl7_data.orm()
    for old, new in zip(SEPARATORS, "#*@%!", strict=True):
        text = text.replace(old, new)
    # when it is read both ways
    split, tree = both_ways(text)
    # then both find the accession and the patient
    assert split == tree
    assert split.content.orders[0].accession_number == "A1001"
    assert split.content.patient.identifier.mrn == "MRN1001"


def test_escape_sequences_go_to_python_hl7():
    # given an order whose reason contains an escaped delimiter (\T\ is "&")
    text = hl7_data.orm(reason="HEAD \\T\\ NECK PAIN")
    header = read_header(text)
    # when it is read
    parsed = parse(text.encode())
    # then the split reading declines it and the escape is resolved
    assert split_message(text, header) is None
    assert parsed.content.orders[0].reasons == ({"code": "", "text": "HEAD & NECK PAIN", "system": ""},)


def test_the_ordering_provider_is_kept_by_xcn_component():
    # given an order whose ORC-12 carries the provider's full XCN, NPI as assigning authority
    text = hl7_data.orm().replace(
        "|||1234567^WELBY^MARCUS^^^DR\rOBR", "|||1234567^WELBY^MARCUS^J^JR^DR^MD^^NPI\rOBR", 1
    )
    # when it is read both ways
    split, tree = both_ways(text)
    # then both keep every component the ORU will echo, and the display name as before
    assert split == tree
    order = split.content.orders[0]
    assert dict(order.ordering_provider_xcn) == {
        "id": "1234567",
        "family": "WELBY",
        "given": "MARCUS",
        "middle": "J",
        "suffix": "JR",
        "prefix": "DR",
        "degree": "MD",
        "authority": "NPI",
    }
    assert order.ordering_provider_name == "DR MARCUS J WELBY JR"
