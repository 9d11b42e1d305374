"""The report templates ReadRoom ships (``facility`` NULL), ensured after every ``migrate``.

Every facility reads on these until it copies one and makes it its own (``template_for_study`` prefers
the facility's template). Chosen by CPT code first, then by modality + body part (the fallbacks match
the default procedure catalogue in ``worklist.setup``).

Idempotent: a missing template is created; when the content here changes in a later release, the
shipped template gets a new version (reports written on the old one keep it). Sections follow the
ACR/RSNA report structure: clinical history, technique, comparison, findings, impression."""

from __future__ import annotations

from auditlog.context import disable_auditlog
from django.db import DEFAULT_DB_ALIAS, connections

from reports.models import ReportTemplate
from reports.template_services import template_content_canonical, template_create, template_version_add


def text(key: str, label: str, default: str = "", *, required: bool = False) -> dict:
    return {"key": key, "label": label, "kind": "text", "default": default, "required": required}


def choice(key: str, label: str, choices: list[str], default: str = "", *, required: bool = False) -> dict:
    return {
        "key": key,
        "label": label,
        "kind": "choice",
        "choices": choices,
        "default": default,
        "required": required,
    }


def number(key: str, label: str, low: int, high: int, *, required: bool = False) -> dict:
    return {"key": key, "label": label, "kind": "number", "min": low, "max": high, "required": required}


def yesno(key: str, label: str, default: str = "", *, required: bool = False) -> dict:
    return {"key": key, "label": label, "kind": "yesno", "default": default, "required": required}


def report(technique: list[dict], findings: list[dict], impression: str = "") -> dict:
    """The five sections every shipped template has; history and comparison come from the order."""
    return {
        "sections": [
            {
                "key": "clinical_history",
                "title": "Clinical history",
                "fields": [
                    text("history", "Clinical history", "{{patient_age}} {{patient_sex}}. {{reason}}")
                ],
            },
            {"key": "technique", "title": "Technique", "fields": technique},
            {
                "key": "comparison",
                "title": "Comparison",
                "fields": [text("comparison", "Comparison", "{{comparison}}")],
            },
            {"key": "findings", "title": "Findings", "fields": findings},
            {
                "key": "impression",
                "title": "Impression",
                "fields": [text("impression", "Impression", impression, required=True)],
            },
        ]
    }


NORMAL = "Normal."
HEMORRHAGE_KINDS = ["None", "Intraparenchymal", "Subarachnoid", "Subdural", "Epidural", "Intraventricular"]
AMOUNTS = ["None", "Small", "Moderate", "Large"]

CT_HEAD = report(
    [
        text(
            "technique",
            "Technique",
            "Axial CT images of the head were obtained without intravenous contrast.",
        )
    ],
    [
        text("hemorrhage", "Intracranial hemorrhage", "None."),
        text("extra_axial", "Extra-axial spaces", NORMAL),
        text("ventricles", "Ventricles and sulci", "Normal for age."),
        text("parenchyma", "Brain parenchyma", "No acute territorial infarct, mass or mass effect."),
        text("midline_shift", "Midline shift", "None."),
        text("calvarium", "Calvarium and skull base", NORMAL),
        text("sinuses", "Paranasal sinuses and mastoids", "Clear."),
    ],
)

# Code stroke (DESIGN.md §6): what the stroke team decides on must be answered explicitly, so the
# hemorrhage, hyperdense vessel and ASPECTS fields have no default and are required to sign.
CT_HEAD_STROKE = report(
    [
        text(
            "technique",
            "Technique",
            "Code stroke protocol: axial CT images of the head without intravenous contrast.",
        )
    ],
    [
        choice("hemorrhage", "Intracranial hemorrhage", HEMORRHAGE_KINDS, required=True),
        yesno("hyperdense_vessel", "Hyperdense vessel sign", required=True),
        text("hyperdense_vessel_site", "Hyperdense vessel location"),
        number("aspects", "ASPECTS (0–10)", 0, 10, required=True),
        text("early_ischemia", "Early ischemic changes", "None."),
        text("other_findings", "Other findings", "No mass or midline shift."),
    ],
)

CTA_HEAD_NECK = report(
    [
        text(
            "technique",
            "Technique",
            "CT angiography of the head and neck after intravenous {{contrast}}, with 3D reformations.",
        )
    ],
    [
        yesno("lvo", "Large vessel occlusion", required=True),
        text("occlusion_site", "Occlusion site"),
        text("intracranial_arteries", "Intracranial arteries", "Patent, without aneurysm or stenosis."),
        number("right_ica_stenosis", "Right ICA stenosis (NASCET %)", 0, 100),
        number("left_ica_stenosis", "Left ICA stenosis (NASCET %)", 0, 100),
        text("vertebral_arteries", "Vertebral arteries", "Patent."),
        text("other_findings", "Other findings", "None."),
    ],
)

CT_ABDOMEN_PELVIS = report(
    [
        text(
            "technique",
            "Technique",
            "Axial CT images of the abdomen and pelvis in the portal venous phase after intravenous "
            "{{contrast}}, with coronal and sagittal reformations.",
        )
    ],
    [
        text("liver", "Liver", NORMAL),
        text("biliary", "Gallbladder and bile ducts", NORMAL),
        text("pancreas", "Pancreas", NORMAL),
        text("spleen", "Spleen", NORMAL),
        text("adrenals", "Adrenal glands", NORMAL),
        text("kidneys", "Kidneys and ureters", "No hydronephrosis or calculus."),
        text("bowel", "Bowel and appendix", "No obstruction or wall thickening. Normal appendix."),
        text("nodes", "Lymph nodes", "No enlarged lymph nodes."),
        text("vessels", "Vessels", NORMAL),
        text("pelvis", "Bladder and pelvic organs", NORMAL),
        choice("free_fluid", "Free fluid", AMOUNTS, "None"),
        text("bones", "Bones and soft tissues", "No aggressive osseous lesion."),
        text("lung_bases", "Lung bases", "Clear."),
    ],
)

CHEST_2_VIEWS = report(
    [text("technique", "Technique", "PA and lateral views of the chest.")],
    [
        text("lungs", "Lungs", "Clear. No consolidation."),
        text("pleura", "Pleura", "No effusion or pneumothorax."),
        text("heart_mediastinum", "Heart and mediastinum", "Normal cardiomediastinal silhouette."),
        text("bones", "Bones and soft tissues", "No acute abnormality."),
    ],
)

MRI_KNEE = report(
    [
        choice("side", "Side", ["Right", "Left"], required=True),
        text("technique", "Technique", "Multiplanar multisequence MR images of the knee without contrast."),
    ],
    [
        text("medial_meniscus", "Medial meniscus", "Intact."),
        text("lateral_meniscus", "Lateral meniscus", "Intact."),
        text("cruciates", "Cruciate ligaments", "Intact."),
        text("collaterals", "Collateral ligaments", "Intact."),
        text("extensor", "Extensor mechanism", "Intact."),
        text("cartilage", "Articular cartilage", "Preserved."),
        text("marrow", "Bone marrow", "No fracture or contusion."),
        choice("effusion", "Joint effusion", AMOUNTS, "None"),
    ],
)

PELVIC_US = report(
    [
        choice("approach", "Approach", ["Transabdominal", "Transvaginal", "Transabdominal and transvaginal"]),
        text("technique", "Technique", "Grayscale and color Doppler sonography of the pelvis."),
    ],
    [
        text("uterus", "Uterus", "Normal size and echotexture."),
        number("endometrium_mm", "Endometrial thickness (mm)", 0, 50),
        text("right_ovary", "Right ovary", NORMAL),
        text("left_ovary", "Left ovary", NORMAL),
        choice("free_fluid", "Free fluid", AMOUNTS, "None"),
    ],
)

# ACR BI-RADS atlas, 5th edition: density a–d and final assessment categories 0–6.
BIRADS = [
    "0 – Incomplete: need additional imaging evaluation",
    "1 – Negative",
    "2 – Benign",
    "3 – Probably benign",
    "4 – Suspicious",
    "5 – Highly suggestive of malignancy",
    "6 – Known biopsy-proven malignancy",
]
DENSITY = [
    "A – almost entirely fatty",
    "B – scattered areas of fibroglandular density",
    "C – heterogeneously dense",
    "D – extremely dense",
]
SCREENING_MAMMOGRAM = report(
    [text("technique", "Technique", "Bilateral CC and MLO digital screening mammograms.")],
    [
        choice("density", "Breast density", DENSITY, required=True),
        text("findings", "Findings", "No suspicious mass, calcifications or architectural distortion."),
        choice("birads", "BI-RADS assessment category", BIRADS, required=True),
    ],
)

# name: (procedure codes, modality, body part, variant, content)
SHIPPED: dict[str, tuple[list[str], str, str, str, dict]] = {
    "CT head without contrast": (["70450"], "CT", "HEAD", "", CT_HEAD),
    "CT head without contrast (code stroke)": (["70450"], "CT", "HEAD", "stroke", CT_HEAD_STROKE),
    "CTA head and neck": (["70496", "70498"], "CT", "NECK", "", CTA_HEAD_NECK),
    "CT abdomen and pelvis with contrast": (["74177"], "CT", "ABDOMEN", "", CT_ABDOMEN_PELVIS),
    "Chest radiograph, 2 views": (["71046"], "DX", "CHEST", "", CHEST_2_VIEWS),
    "MRI knee without contrast": (["73721"], "MR", "KNEE", "", MRI_KNEE),
    "Pelvic ultrasound": (["76856"], "US", "PELVIS", "", PELVIC_US),
    "Screening mammogram": (["77067"], "MG", "BREAST", "", SCREENING_MAMMOGRAM),
}


def shipped_templates_ensure(using: str = DEFAULT_DB_ALIAS) -> None:
    if "reports_templateversion" not in connections[using].introspection.table_names():
        return  # migrating backwards past reports/0001
    # Reference data shipped with the code, not someone's edit: no audit rows for the seeding.
    with disable_auditlog():
        for name, (codes, modality, body_part, variant, content) in SHIPPED.items():
            template = ReportTemplate.objects.filter(facility__isnull=True, name=name).first()
            if template is None:
                template_create(
                    facility=None,
                    name=name,
                    content=content,
                    user=None,
                    procedure_codes=codes,
                    modality=modality,
                    body_part=body_part,
                    variant=variant,
                    change_note="Shipped with ReadRoom",
                )
                continue
            current = template.current_version()
            if current is None or current.content != template_content_canonical(content):
                template_version_add(
                    template=template, content=content, change_note="Updated by a ReadRoom release", user=None
                )
