"""Small NIH ChestX-ray14 label files as both releases wrote them, shared by the reader and `cxrlt stats` tests."""

from __future__ import annotations

import gzip

HEADER_2020 = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
# The 2017 release ends every line with a comma (an unnamed trailing column)
# and wrote ages like "058Y".
HEADER_2017 = HEADER_2020 + ","

ROWS = [
    # image, findings, follow-up, patient, age, sex, view
    ("00000001_000.png", "Cardiomegaly", 0, 1, 58, "M", "PA"),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, 58, "M", "PA"),
    ("00000002_000.png", "No Finding", 0, 2, 81, "F", "AP"),
    ("00000003_000.png", "Hernia|Effusion|Pleural_Thickening", 0, 3, 74, "F", "PA"),
]

# SPEC section 8 (seed 001, Table 3): totals over all 112,120 images.
SPEC_TOTALS = {
    "Hernia": 227, "Pneumonia": 1431, "Fibrosis": 1686, "Edema": 2303, "Emphysema": 2516,
    "Cardiomegaly": 2776, "Pleural_Thickening": 3385, "Consolidation": 4667, "Pneumothorax": 5302,
    "Mass": 5782, "Nodule": 6331, "Atelectasis": 11559, "Effusion": 13317, "Infiltration": 19894,
    "No Finding": 60361,
}


def write_nih(path, rows=ROWS, header=HEADER_2020, age_suffix="", trailing="", compress=False):
    lines = [header]
    for image, findings, follow, patient, age, sex, view in rows:
        lines.append(f"{image},{findings},{follow},{patient},{age:03d}{age_suffix},{sex},{view},2048,2500,0.143,0.143{trailing}"
                     if isinstance(age, int) else f"{image},{findings},{follow},{patient},{age},{sex},{view},2048,2500,0.143,0.143{trailing}")
    text = "\n".join(lines) + "\n"
    if compress:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path
