"""Real HL7 v2 text for tests, the way RIS and interface engines send it (segments end with CR)."""

from __future__ import annotations

import itertools

_ids = itertools.count(1)

CHICAGO_SENDER = ("EPIC_RAD", "LAKESHORE")


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from {field number: value}; the fields between are empty."""
    values = [fields.get(n, "") for n in range(1, max(fields) + 1)]
    return "|".join([name, *values])


def msh(
    message_type: str,
    *,
    control_id: str | None = None,
    version: str = "2.5.1",
    sender=CHICAGO_SENDER,
    accept_ack: str = "",
    app_ack: str = "",
    charset: str = "",
) -> str:
    control_id = control_id or f"MSG{next(_ids):06d}"
    fields = [
        "MSH",
        "^~\\&",
        sender[0],
        sender[1],
        "READROOM",
        "READROOM",
        "20261128031000",
        "",
        message_type,
        control_id,
        "P",
        version,
        "",
        "",
        accept_ack,
        app_ack,
        "",
        charset,
    ]
    return "|".join(fields).rstrip("|")


def pid(
    mrn: str = "MRN1001",
    family: str = "QUINLAN",
    given: str = "JANE",
    dob: str = "19580214",
    sex: str = "F",
    authority: str = "LAKESHORE",
) -> str:
    address = "100 LAKE SHORE DR^^CHICAGO^IL^60611"
    return f"PID|1||{mrn}^^^{authority}^MR||{family}^{given}^M||{dob}|{sex}|||{address}"


def orm(
    control: str = "NW",
    *,
    accession: str = "A1001",
    placer: str = "P1001",
    filler: str = "F1001",
    code: str = "70450",
    text: str = "CT HEAD W/O CONTRAST",
    priority: str = "S",
    reason: str = "HEADACHE",
    patient_class: str = "E",
    control_id: str | None = None,
    version: str = "2.3.1",
    mrn: str = "MRN1001",
    extra_segments: tuple[str, ...] = (),
    **msh_kwargs,
) -> str:
    """ORM^O01 as IHE RAD-4 sends it: accession in OBR-18, modality in OBR-24, priority in ORC-7.6."""
    segments = [
        msh("ORM^O01", control_id=control_id, version=version, **msh_kwargs),
        pid(mrn=mrn),
        f"PV1|1|{patient_class}|ED^ROOM4^1^LAKESHORE||||1234567^WELBY^MARCUS^^^DR",
        f"ORC|{control}|{placer}^EPIC|{filler}^RIS||SC||^^^20261128031500^^{priority}||20261128031000|||"
        "1234567^WELBY^MARCUS^^^DR",
        f"OBR|1|{placer}^EPIC|{filler}^RIS|{code}^{text}^C4||||||||||||1234567^WELBY^MARCUS^^^DR||{accession}|RP{accession}|"
        f"SPS{accession}||||CT|||^^^20261128031500^^{priority}||||^{reason}",
        *extra_segments,
    ]
    return "\r".join(segments) + "\r"


def omi(
    control: str = "NW",
    *,
    accession: str = "A2001",
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    priority: str = "S",
    code: str = "70450",
    text: str = "CT HEAD W/O CONTRAST",
    **msh_kwargs,
) -> str:
    """OMI^O23 (IHE RAD-4 v2.5.1 option): priority in TQ1-9, accession/Study UID/modality in IPC."""
    segments = [
        msh("OMI^O23^OMI_O23", **msh_kwargs),
        pid(),
        "PV1|1|O|CT1^^^LAKESHORE",
        f"ORC|{control}|PX{accession}^EPIC|FX{accession}^RIS||SC",
        "|".join(
            ["TQ1", "1", "", "", "", "", "", "20261128040000", "", priority]
        ),  # TQ1-7 start, TQ1-9 priority
        segment(
            "OBR",
            {
                1: "1",
                2: f"PX{accession}^EPIC",
                3: f"FX{accession}^RIS",
                4: f"{code}^{text}^C4",
                31: "^ACUTE NEURO DEFICIT",
            },
        ),
        f"IPC|{accession}|RP{accession}|{study_uid}|SPS{accession}|CT",
    ]
    return "\r".join(segments) + "\r"


def adt_a08(
    *,
    mrn: str = "MRN1001",
    family: str = "QUINLAN-SMITH",
    given: str = "JANE",
    dob: str = "19580214",
    **msh_kwargs,
) -> str:
    return (
        "\r".join(
            [
                msh("ADT^A08^ADT_A01", **msh_kwargs),
                "EVN|A08|20261128040000",
                pid(mrn=mrn, family=family, given=given, dob=dob),
                "PV1|1|O",
            ]
        )
        + "\r"
    )


def adt_a40(*, surviving: str = "MRN1001", prior: str = "MRN0999", **msh_kwargs) -> str:
    return (
        "\r".join(
            [
                msh("ADT^A40^ADT_A39", **msh_kwargs),
                "EVN|A40|20261128040000",
                pid(mrn=surviving),
                f"MRG|{prior}^^^LAKESHORE^MR",
            ]
        )
        + "\r"
    )
