"""Label spaces of the public chest X-ray datasets and mapping between them.

Each dataset spells its findings its own way (NIH "Effusion" and
"Pleural_Thickening", CheXpert/MIMIC "Pleural Effusion"...). A `LabelSpace`
keeps the dataset's own spelling for display; `canonical_name` reduces any
spelling to one canonical name, and mapping between spaces goes through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import numpy as np

from cxrlt.errors import ConfigError

# alias (normalised) -> canonical name. Only spellings that differ from the
# canonical one after normalisation need an entry.
_ALIASES = {
    "effusion": "Pleural Effusion",
    "pleural effusions": "Pleural Effusion",
    "pleural thickening": "Pleural Thickening",
    "normal": "No Finding",
    "no findings": "No Finding",
    "aortic calcification": "Calcification of the Aorta",
    "calcification of aorta": "Calcification of the Aorta",
    "round atelectasis": "Round(ed) Atelectasis",
    "rounded atelectasis": "Round(ed) Atelectasis",
    "round(ed) atelectasis": "Round(ed) Atelectasis",
    "subcutaneous emphysema": "Subcutaneous Emphysema",
    "enlarged cardiomediastinum": "Enlarged Cardiomediastinum",
    "support device": "Support Devices",
    "lymphadenopathy": "Adenopathy",
    "tortuous aorta": "Tortuous Aorta",
}

NIH14 = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
CHEXPERT14 = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
CXRLT2023 = (
    "Atelectasis", "Calcification of the Aorta", "Cardiomegaly", "Consolidation", "Edema", "Emphysema",
    "Enlarged Cardiomediastinum", "Fibrosis", "Fracture", "Hernia", "Infiltration", "Lung Lesion",
    "Lung Opacity", "Mass", "No Finding", "Nodule", "Pleural Effusion", "Pleural Other",
    "Pleural Thickening", "Pneumomediastinum", "Pneumonia", "Pneumoperitoneum", "Pneumothorax",
    "Subcutaneous Emphysema", "Support Devices", "Tortuous Aorta",
)
CXRLT2024 = (
    "Adenopathy", "Atelectasis", "Azygos Lobe", "Calcification of the Aorta", "Cardiomegaly",
    "Clavicle Fracture", "Consolidation", "Edema", "Emphysema", "Enlarged Cardiomediastinum", "Fibrosis",
    "Fissure", "Fracture", "Granuloma", "Hernia", "Hydropneumothorax", "Infarction", "Infiltration",
    "Kyphosis", "Lobar Atelectasis", "Lung Lesion", "Lung Opacity", "Mass", "Nodule", "Normal",
    "Pleural Effusion", "Pleural Other", "Pleural Thickening", "Pneumomediastinum", "Pneumonia",
    "Pneumoperitoneum", "Pneumothorax", "Pulmonary Embolism", "Pulmonary Hypertension", "Rib Fracture",
    "Round(ed) Atelectasis", "Subcutaneous Emphysema", "Support Devices", "Tortuous Aorta", "Tuberculosis",
)
# CXR-LT 2024 task 3: classes absent from training, scored zero-shot.
CXRLT2024_ZERO_SHOT = ("Bulla", "Cardiomyopathy", "Hilum", "Osteopenia", "Scoliosis")

# Canonical spellings: the CXR-LT / CheXpert names.
_KNOWN = {
    re.sub(r"\s+", " ", name.lower()): name
    for name in CHEXPERT14 + CXRLT2023 + CXRLT2024 + CXRLT2024_ZERO_SHOT
    if name != "Normal"
}


def _normalise(name: str) -> str:
    text = re.sub(r"[_\-]+", " ", str(name)).strip().lower()
    return re.sub(r"\s+", " ", text)


def canonical_name(name: str) -> str:
    """The canonical spelling of a finding name (aliases, case, `_`/`-` folded).

    Known findings get the CXR-LT spelling; an unknown name keeps its own
    words with `_`/`-` turned into spaces.

    >>> canonical_name("Pleural_Thickening")
    'Pleural Thickening'
    >>> canonical_name("Effusion")
    'Pleural Effusion'
    """
    key = _normalise(name)
    if key in _ALIASES:
        return _ALIASES[key]
    if key in _KNOWN:
        return _KNOWN[key]
    return re.sub(r"\s+", " ", re.sub(r"[_\-]+", " ", str(name))).strip()


def canonical_key(name: str) -> str:
    """Case-folded canonical name: two spellings of one finding share it."""
    return _normalise(canonical_name(name))


@dataclass(frozen=True)
class LabelSpace:
    """An ordered list of class names as one dataset spells them.

    `groups` is the number of head and of tail classes (by training
    positives) that every run of this space reports unless its config says
    otherwise, so that head / medium / tail means compare across recipes.
    """

    name: str
    classes: tuple[str, ...]
    groups: tuple[int, int]
    zero_shot: tuple[str, ...] = ()
    canonical: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        canonical = tuple(canonical_name(c) for c in self.classes)
        if len({canonical_key(c) for c in self.classes}) != len(canonical):
            raise ValueError(f"label space {self.name!r} has two classes with the same canonical name")
        object.__setattr__(self, "canonical", canonical)

    def __len__(self) -> int:
        return len(self.classes)

    def index(self, name: str) -> int:
        """Position of `name` (any spelling) in this space."""
        keys = [canonical_key(c) for c in self.classes]
        try:
            return keys.index(canonical_key(name))
        except ValueError:
            raise ConfigError(f"class {name!r} is not in label space {self.name!r} ({', '.join(self.classes)})") from None


# Head / tail sizes: CXR-LT 2023 as seed 002 (Table 1: the top 9 and bottom 9 of 26); the others a
# third each (rounded down), the rule for any other class list too (`group_sizes`).
SPACES: dict[str, LabelSpace] = {
    space.name: space
    for space in (
        LabelSpace("nih14", NIH14, groups=(4, 4)),
        LabelSpace("nih15", NIH14 + ("No Finding",), groups=(5, 5)),
        LabelSpace("chexpert14", CHEXPERT14, groups=(4, 4)),
        LabelSpace("cxrlt2023", CXRLT2023, groups=(9, 9)),
        LabelSpace("cxrlt2024", CXRLT2024, groups=(13, 13), zero_shot=CXRLT2024_ZERO_SHOT),
    )
}


def get_space(name: str) -> LabelSpace:
    """A built-in label space by name (nih14, nih15, chexpert14, cxrlt2023, cxrlt2024)."""
    try:
        return SPACES[name]
    except KeyError:
        raise ConfigError(f"unknown label space {name!r}; choose one of: {', '.join(SPACES)}") from None


def a_third(n_classes: int) -> int:
    """A third of `n_classes`, rounded down: at least one with three or more classes, none with fewer."""
    return max(1, n_classes // 3) if n_classes >= 3 else 0


def group_sizes(classes: Sequence[str]) -> tuple[int, int]:
    """Default numbers of head and tail classes for a class list.

    The built-in space with the same classes (any order or spelling) gives
    its `groups`; another list gets `a_third` of its classes each.
    """
    keys = sorted(canonical_key(name) for name in classes)
    for space in SPACES.values():
        if sorted(canonical_key(name) for name in space.classes) == keys:
            return space.groups
    return a_third(len(keys)), a_third(len(keys))


def class_mapping(source: Sequence[str], target: Sequence[str]) -> list[int | None]:
    """For each target class, the index of the same finding in `source` (or None)."""
    positions = {canonical_key(name): i for i, name in enumerate(source)}
    return [positions.get(canonical_key(name)) for name in target]


def map_labels(
    labels: np.ndarray,
    source: Sequence[str],
    target: Sequence[str],
    unannotated: Literal["missing", "zero"] = "missing",
) -> np.ndarray:
    """Re-express a label matrix of `source` classes in `target` classes.

    Findings the source does not annotate become NaN (`missing`, masked in
    losses and metrics: the safer default) or 0 (`zero`, as seed 004 did).
    """
    labels = np.asarray(labels, dtype=np.float32)
    fill = np.nan if unannotated == "missing" else 0.0
    out = np.full((labels.shape[0], len(target)), fill, dtype=np.float32)
    for j, i in enumerate(class_mapping(source, target)):
        if i is not None:
            out[:, j] = labels[:, i]
    return out


def resolve_classes(names: Iterable[str] | str) -> tuple[str, ...]:
    """A class list from a space name or an explicit list of names."""
    if isinstance(names, str):
        return get_space(names).classes
    return tuple(names)
