"""Rendering of synthetic frontal (PA/AP) chest radiographs with NIH-14 finding signs.

A film is a map of X-ray attenuation ("density": soft-tissue thickness, lung
air subtracted, bone and lesions added) in anatomical coordinates (x, y in
about [-1, 1]; x grows to the image right = the patient's left, y downward),
exposed as brightness = 1 - exp(-k * density), windowed, rotated, given
intensity-dependent noise and a gamma curve. Every structure is a closed-form
function of the coordinates (soft-edged ellipses, curves, periodic rib and
vessel fields). Before rotation the pixel grid is separable (x varies along
columns only, y along rows only), so anything that depends on one axis costs
one row or column, and lung-related work is done on the thorax's bounding
window only: a 128-pixel film takes about 2 ms of numpy. Sizes are in
anatomical units, so a finding covers the same part of the chest at 64 and at
1024 pixels.

Randomness has three layers: `Anatomy` (the patient's body: sizes,
positions, heart, rib spacing, vessel pattern; shared by a patient's films),
the film (position, rotation, inspiration, exposure, noise) and one private
stream per finding (strength, side, position). A finding's stream is derived
from the film's generator whether or not the finding is present, so rendering
the same generator state with and without a finding changes only that
finding's sign.

Signs (strength s drawn in [0.15, 1] unless given; positions and sides vary):
    Atelectasis: plate-like linear opacities in a lower zone, an elevated
        hemidiaphragm and a mediastinal shift toward that side (volume loss),
        in half the cases a wedge of lobar collapse below the hilum.
    Cardiomegaly: a heart 20-50 % wider (cardiothoracic ratio above 0.5).
    Effusion: basal opacity with a meniscus (higher laterally) that blunts the
        costophrenic angle and hides the hemidiaphragm; one side or both.
    Infiltration: diffuse, ill-defined reticulonodular haze over one or both
        lungs across several zones.
    Mass: one round, slightly lobulated opacity 3-6 cm across.
    Nodule: one to three small (1.5-2.5 cm), sharply marginated round opacities.
    Pneumonia: a patchy, mottled cluster of fluffy opacities in one zone.
    Pneumothorax: an apical and lateral rim of air without lung markings,
        bounded by a thin visceral pleural line, over a denser collapsed lung.
    Consolidation: dense, homogeneous lobar opacity with a sharp fissural
        border and air bronchograms.
    Edema: bilateral perihilar ("bat-wing") haze, septal (Kerley B) lines at
        the lateral bases, hazy upper zones.
    Emphysema: hyperlucent, taller lungs with low, flat diaphragms, sparse
        markings, a narrow vertical heart; sometimes an apical bulla.
    Fibrosis: peripheral, basal (or upper-zone) reticular network with
        volume loss.
    Pleural_Thickening: a smooth soft-tissue band along the lateral chest
        wall, or over an apex (apical cap).
    Hernia: a retrocardiac round shadow containing gas with an air-fluid
        level (hiatus hernia).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np
from PIL import Image

from cxrlt.errors import ConfigError
from cxrlt.labels import NIH14

MIN_SIZE = 16
MAX_SIZE = 4096
MAX_ROTATION_DEG = 3.0
# Weakest drawn sign: barely visible at 128 pixels.
MIN_STRENGTH = 0.15
_F = np.float32
# Canvas margin (fraction of the side) so that a rotation never shows a corner.
_MARGIN = math.sin(math.radians(MAX_ROTATION_DEG)) * 0.55


@dataclass(frozen=True)
class Anatomy:
    """A patient's body habitus: what stays the same between their films.

    Lengths are in anatomical units (the film spans about -1..1 in x and y;
    x grows to the image right, i.e. the patient's left; y grows downward).
    Pairs are (patient right = image left, patient left = image right).
    """

    body_half_width: float
    arm_gap: float
    shoulder_y: float
    neck_half_width: float
    soft_tissue: float
    apex_y: float
    apex_span: float
    lung_center: float
    lung_half_width: float
    dome_y: tuple[float, float]
    dome_peak: float
    dome_curvature: float
    mediastinum_half_width: float
    aortic_knob: float
    knob_y: float
    heart_left: float
    heart_right: float
    heart_top: float
    heart_shape: float
    hilum_y: float
    rib_spacing: float
    rib_growth: float
    rib_curvature: float
    rib_peak: float
    clavicle_y: float
    clavicle_slope: float
    breast: float
    gastric_bubble: float
    vessel_gain: float
    vessel_counts: tuple[float, float]
    vessel_phases: tuple[float, float, float, float]


def sample_anatomy(rng: np.random.Generator, sex: str = "M", age: float = 50.0) -> Anatomy:
    """Draw a patient's anatomy; `sex` ("F"/"M") and `age` (years) shape it slightly.

    Women get breast shadows over the lower zones and slightly narrower
    lungs; older patients a more prominent aortic knob; children a larger
    heart relative to the chest.
    """
    female = str(sex).upper().startswith("F")
    u = rng.uniform
    child = min(max((16.0 - float(age)) / 16.0, 0.0), 1.0)
    elderly = min(max((float(age) - 50.0) / 40.0, 0.0), 1.0)
    dome_right = u(0.3, 0.42)
    hilum_y = u(-0.12, -0.02)
    return Anatomy(
        body_half_width=u(0.78, 0.98),
        arm_gap=u(0.02, 0.1),
        shoulder_y=u(-0.86, -0.72),
        neck_half_width=u(0.2, 0.28),
        soft_tissue=u(0.9, 1.1),
        apex_y=u(-0.8, -0.7),
        apex_span=u(0.5, 0.66),
        lung_center=u(0.3, 0.37),
        lung_half_width=u(0.72, 0.82) * (0.97 if female else 1.0),
        dome_y=(dome_right, dome_right + u(0.02, 0.08)),
        dome_peak=u(0.34, 0.44),
        dome_curvature=u(1.0, 1.6),
        mediastinum_half_width=u(0.1, 0.13),
        aortic_knob=u(0.03, 0.05) + 0.03 * elderly,
        knob_y=u(-0.42, -0.34),
        heart_left=u(0.36, 0.47) * (1.0 + 0.1 * child),
        heart_right=u(0.07, 0.13) * (1.0 + 0.2 * child),
        heart_top=hilum_y + u(-0.04, 0.04),
        heart_shape=u(0.55, 0.9),
        hilum_y=hilum_y,
        rib_spacing=u(0.1, 0.118),
        rib_growth=u(0.02, 0.05),
        rib_curvature=u(0.8, 1.2),
        rib_peak=u(0.2, 0.3),
        clavicle_y=u(-0.62, -0.52),
        clavicle_slope=u(-0.28, -0.15),
        breast=u(0.6, 1.0) if female else 0.0,
        gastric_bubble=u(0.05, 0.085) if rng.random() < 0.7 else 0.0,
        vessel_gain=u(0.7, 1.3),
        vessel_counts=(u(17.0, 23.0), u(29.0, 37.0)),
        vessel_phases=tuple(float(v) for v in rng.uniform(0.0, 2 * np.pi, 4)),
    )


@dataclass(frozen=True)
class _Film:
    """Per-film acquisition: position, inspiration, exposure and noise."""

    rotation: float  # degrees
    shift: tuple[float, float]
    scale: float
    inspiration: float
    lucency: float
    exposure: float
    gamma: float
    window: tuple[float, float]
    noise: float
    heel: float


def _sample_film(rng: np.random.Generator) -> _Film:
    clip = lambda value, bound: float(min(max(value, -bound), bound))  # noqa: E731
    return _Film(
        rotation=clip(rng.normal(0.0, 1.2), MAX_ROTATION_DEG),
        shift=(clip(rng.normal(0.0, 0.03), 0.07), clip(rng.normal(0.0, 0.025), 0.06)),
        scale=rng.uniform(0.93, 1.05),
        inspiration=clip(rng.normal(0.0, 0.03), 0.07),
        lucency=rng.uniform(0.72, 0.88),
        exposure=rng.uniform(1.3, 1.8),
        gamma=rng.uniform(0.95, 1.35),
        window=(rng.uniform(0.0, 0.06), rng.uniform(0.95, 1.03)),
        noise=rng.uniform(0.008, 0.03),
        heel=rng.uniform(-0.05, 0.05),
    )


# ------------------------------------------------------------------ helpers
def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """0 -> 1 across a soft edge of `width` centred on d = 0 (d > 0 inside)."""
    out = d * _F(1.0 / width)
    out += _F(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def _line(d: np.ndarray, half_width: float) -> np.ndarray:
    """Soft line profile: 1 on d = 0, falling linearly to 0 at |d| = half_width."""
    out = np.abs(d) * _F(-1.0 / half_width)
    out += _F(1.0)
    return np.maximum(out, 0.0, out=out)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Squared normalised distance from an ellipse's centre (1 on its border)."""
    return ((x - _F(cx)) * _F(1.0 / rx)) ** 2 + ((y - _F(cy)) * _F(1.0 / ry)) ** 2


def _sphere(q: np.ndarray) -> np.ndarray:
    """Projected thickness of a ball from its squared normalised radius (1 at the centre)."""
    return np.sqrt(np.maximum(_F(1.0) - q, 0.0))


def _waves(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, n: int, k_low: float, k_high: float) -> np.ndarray:
    """A smooth random field in [-1, 1]: the mean of `n` plane waves of random direction and phase."""
    total = None
    for _ in range(n):
        angle, k, phase = rng.uniform(0.0, math.pi), rng.uniform(k_low, k_high), rng.uniform(0.0, 2 * math.pi)
        wave = np.cos(x * _F(k * math.cos(angle)) + (y * _F(k * math.sin(angle)) + _F(phase)))
        total = wave if total is None else total + wave
    return total * _F(1.0 / n)


class _Canvas:
    """The film before rotation: separable coordinates and a density map with a rotation margin."""

    def __init__(self, size: int, film: _Film):
        self.size = size
        self.margin = int(math.ceil(size * _MARGIN)) + 1
        n = size + 2 * self.margin
        base = (np.arange(n) - self.margin + 0.5) * (2.0 / size) - 1.0
        self.xs = ((base - film.shift[0]) / film.scale).astype(_F)
        self.ys = ((base - film.shift[1]) / film.scale).astype(_F)
        self.pixel = 2.0 / size / film.scale
        self.edge = max(self.pixel, 0.012)
        self.density = np.zeros((n, n), dtype=_F)

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        """Rows and columns covering [x0, x1] x [y0, y1], with their coordinates (1, w) and (h, 1)."""
        c0, c1 = np.searchsorted(self.xs, x0), np.searchsorted(self.xs, x1)
        r0, r1 = np.searchsorted(self.ys, y0), np.searchsorted(self.ys, y1)
        rows, cols = slice(int(r0), int(max(r1, r0))), slice(int(c0), int(max(c1, c0)))
        return rows, cols, self.xs[cols][None, :], self.ys[rows][:, None]


# ------------------------------------------------------------------ findings
@dataclass
class _Sign:
    """One present finding: its strength, its side and its private random stream."""

    strength: float
    side: int  # -1 image left (patient right), +1 image right (patient left)
    rng: np.random.Generator


def _parse_findings(findings: Iterable[str] | Mapping[str, float] | np.ndarray) -> dict[str, float | None]:
    """Findings as {name: strength or None}: names, a name -> strength map, or a 0/1 NIH-14 vector."""
    if isinstance(findings, np.ndarray) or (
        isinstance(findings, (list, tuple))
        and len(findings) == len(NIH14)
        and all(isinstance(v, (bool, int, float, np.number)) for v in findings)
    ):
        vector = np.asarray(findings)
        if vector.shape != (len(NIH14),):
            raise ConfigError(f"a finding vector must have {len(NIH14)} entries in NIH-14 order; got shape {vector.shape}")
        return {name: None for name, v in zip(NIH14, vector.tolist()) if v}
    if isinstance(findings, str):
        findings = [findings]
    if isinstance(findings, Mapping):
        items = {str(k): (None if v is None else float(v)) for k, v in findings.items()}
    else:
        items = {str(k): None for k in findings}
    unknown = sorted(set(items) - set(NIH14))
    if unknown:
        raise ConfigError(f"unknown finding(s) {unknown}; expected NIH-14 names: {', '.join(NIH14)}")
    for name, value in items.items():
        if value is not None and not 0.0 <= value <= 1.5:
            raise ConfigError(f"strength of {name} must lie in [0, 1.5]; got {value}")
    return items


@dataclass
class _Geometry:
    """Final shape parameters of one film: anatomy, view and volume-changing findings."""

    dome: tuple[float, float]
    dome_curvature: float
    apex_y: float
    lung_half_width: float
    mid_shift: float
    heart_left: float
    heart_right: float
    heart_top: float
    air_depth: float
    marking_gain: float
    clavicle_y: float

    def costophrenic_y(self, a: Anatomy) -> float:
        """Level of the lowest point of the lungs (the lateral costophrenic angles)."""
        return max(self.dome) + self.dome_curvature * (self.lung_half_width - a.dome_peak) ** 2


def _geometry(a: Anatomy, film: _Film, signs: Mapping[str, _Sign], view: str) -> _Geometry:
    dome = [a.dome_y[0] + film.inspiration, a.dome_y[1] + film.inspiration]
    g = _Geometry(
        dome=(0.0, 0.0), dome_curvature=a.dome_curvature, apex_y=a.apex_y, lung_half_width=a.lung_half_width,
        mid_shift=0.0, heart_left=a.heart_left, heart_right=a.heart_right, heart_top=a.heart_top,
        air_depth=film.lucency, marking_gain=a.vessel_gain, clavicle_y=a.clavicle_y,
    )
    if view == "AP":
        # AP films magnify the heart, are taken in shallower inspiration, and project the clavicles higher
        g.heart_left *= 1.08
        g.heart_right *= 1.15
        dome = [d - 0.04 for d in dome]
        g.clavicle_y -= 0.06
    if "Cardiomegaly" in signs:
        s = signs["Cardiomegaly"].strength
        g.heart_left *= 1.08 + 0.38 * s
        g.heart_right *= 1.15 + 0.8 * s
        g.heart_top -= 0.05 * s
    if "Emphysema" in signs:
        s = signs["Emphysema"].strength
        dome = [d + 0.02 + 0.12 * s for d in dome]
        g.dome_curvature *= 1.0 - 0.6 * s
        g.apex_y -= 0.03 * s
        g.lung_half_width *= 1.0 + 0.04 * s
        g.heart_left *= 1.0 - 0.16 * s
        g.heart_right *= 1.0 - 0.4 * s
        g.heart_top += 0.06 * s
        g.air_depth *= 1.03 + 0.25 * s
        g.marking_gain *= 1.0 - 0.55 * s
    if "Fibrosis" in signs:
        s = signs["Fibrosis"].strength
        dome = [d - 0.05 * s for d in dome]
        g.lung_half_width *= 1.0 - 0.04 * s
    if "Atelectasis" in signs:
        sign = signs["Atelectasis"]
        s = sign.strength
        dome[0 if sign.side < 0 else 1] -= 0.02 + 0.1 * s
        g.mid_shift += sign.side * (0.01 + 0.04 * s)
    if "Edema" in signs:
        g.marking_gain *= 1.0 + 0.5 * signs["Edema"].strength
    g.dome = (dome[0], dome[1])
    return g


def _heart_borders(a: Anatomy, g: _Geometry, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x of the right (image left) and left (image right) heart borders at heights `y`.

    The right border is the right atrium's gentle bulge beyond the
    mediastinum, back to it at the right dome; the left border sweeps out
    from below the hilum to the apex on the left dome.
    """
    y = np.asarray(y, dtype=_F)
    s_left = np.clip((y - _F(g.heart_top)) * _F(1.0 / max(g.dome[1] - 0.02 - g.heart_top, 0.05)), 0.0, 1.0)
    s_right = np.clip((y - _F(g.heart_top)) * _F(1.0 / max(g.dome[0] + 0.06 - g.heart_top, 0.05)), 0.0, 1.0)
    left = _F(g.mid_shift + a.mediastinum_half_width) + _F(g.heart_left - a.mediastinum_half_width) * np.sin(s_left * _F(math.pi / 2)) ** _F(a.heart_shape)
    right = _F(g.mid_shift - a.mediastinum_half_width) - _F(g.heart_right) * np.sqrt(np.maximum(np.sin(s_right * _F(math.pi)), 0.0))
    return right, left


# ------------------------------------------------------------------ renderer
def render_image(
    rng: np.random.Generator,
    findings: Iterable[str] | Mapping[str, float] | np.ndarray,
    size: int,
    *,
    anatomy: Anatomy | None = None,
    view: str = "PA",
) -> np.ndarray:
    """Render one synthetic chest film as a (size, size) uint8 array.

    Args:
        rng: source of the film's randomness (position, exposure, noise and
            each finding's strength and position); the same state gives the
            same pixels.
        findings: the NIH-14 findings to show: names, a {name: strength} map
            (strength in [0, 1.5]; 1 is a clear sign, 0.3 a subtle one) or a
            0/1 vector in NIH-14 order. Strengths not given are drawn
            uniformly in [0.15, 1].
        size: image side in pixels (16 to 4096).
        anatomy: the patient's body (`sample_anatomy`); drawn from `rng`
            when omitted.
        view: "PA" or "AP"; AP films show a magnified heart, a higher
            diaphragm and higher clavicles.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ConfigError(f"image size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels; got {size!r}")
    size = int(size)
    view = str(view).upper()
    if view not in ("PA", "AP"):
        raise ConfigError(f"view must be 'PA' or 'AP'; got {view!r}")
    present = _parse_findings(findings)
    # One key per NIH-14 finding, drawn whether or not it is present.
    keys = rng.integers(0, 2**63 - 1, size=len(NIH14), dtype=np.int64)
    signs: dict[str, _Sign] = {}
    for name, key in zip(NIH14, keys.tolist()):
        if name in present:
            stream = np.random.default_rng(key)
            strength, side = stream.uniform(MIN_STRENGTH, 1.0), (-1 if stream.random() < 0.5 else 1)
            given = present[name]
            signs[name] = _Sign(strength if given is None else given, side, stream)
    if anatomy is None:
        anatomy = sample_anatomy(rng)
    film = _sample_film(rng)
    canvas = _Canvas(size, film)
    _draw(canvas, anatomy, _geometry(anatomy, film, signs, view), signs)
    return _expose(canvas, film, rng)


def _draw(c: _Canvas, a: Anatomy, g: _Geometry, signs: Mapping[str, _Sign]) -> None:
    """Fill the canvas's density map."""
    d = c.density
    x, y = c.xs[None, :], c.ys[:, None]

    # ---- body: soft tissue of a rounded cylinder, narrowing to the neck
    shoulder = np.clip((y + _F(1.05)) * _F(1.0 / (a.shoulder_y + 1.05)), 0.0, 1.0)
    half = _F(a.neck_half_width) + _F(a.body_half_width - a.neck_half_width) * np.sqrt(shoulder)
    half *= _F(0.93) + _F(0.07) * np.clip((y + _F(0.6)) * _F(1.0 / 0.9), 0.0, 1.0)  # narrower at the axillae
    body = _ramp(half - np.abs(x), 0.04)
    # chord of a cylinder of radius `half`: sqrt(half^2 - x^2) / half
    thickness = np.sqrt(np.maximum(half * half - x * x, 0.0))
    thickness *= _F(0.72 * a.soft_tissue) / half
    thickness += _F(0.26 * a.soft_tissue)
    np.multiply(body, thickness, out=d)

    # ---- arms beside the chest (beyond a gap of air), humeral heads at the shoulders
    arm_inner = a.body_half_width + a.arm_gap
    for side in (-1.0, 1.0):
        lo, hi = sorted((side * arm_inner, side * (arm_inner + 0.4)))
        rows, cols, xw, yw = c.window(lo, hi, a.shoulder_y - 0.25, 1.2)
        if cols.stop > cols.start:
            inner = _F(arm_inner) + _F(0.05) * (yw - _F(a.shoulder_y))
            across = (xw * _F(side) - inner) * _F(1.0 / 0.34)
            arm = np.sqrt(np.maximum(across * (_F(1.0) - across), 0.0))
            shaft = _line(across - _F(0.45), 0.15)
            shaft *= _F(0.25)
            arm *= _F(0.65 * a.soft_tissue)
            arm += shaft
            arm *= _ramp(yw - _F(a.shoulder_y - 0.12), 0.16)
            d[rows, cols] += arm
        hx, hy = side * (arm_inner + 0.15), a.shoulder_y + 0.02
        rows, cols, xw, yw = c.window(hx - 0.13, hx + 0.13, hy - 0.13, hy + 0.13)
        if cols.stop > cols.start:
            d[rows, cols] += _F(0.2) * _sphere(_ellipse(xw, yw, hx, hy, 0.12, 0.12))

    # ---- spine: vertebral bodies with end plates, behind everything
    spine_cols = _line(x - _F(g.mid_shift * 0.3), 0.075) ** 0.5
    vertebrae = _F(0.78) + _F(0.22) * np.cos((y - _F(a.apex_y)) * _F(2 * math.pi / 0.105))
    d += _F(0.16) * spine_cols * vertebrae

    # ---- abdomen below the domes (liver, spleen), fading toward the flanks
    u = np.abs(x)
    diaphragm = np.where(x < _F(g.mid_shift), _F(g.dome[0]), _F(g.dome[1])) + _F(g.dome_curvature) * (u - _F(a.dome_peak)) ** 2
    flank = _ramp(_F(g.lung_half_width + 0.06) - u, 0.3)
    d += _F(0.13) * _ramp(y - diaphragm, c.edge * 2) * flank * body

    # ---- thorax window: lungs, heart, ribs, vessels and findings
    cp = g.costophrenic_y(a)
    rows, cols, xw, yw = c.window(-g.lung_half_width - 0.12, g.lung_half_width + 0.12, g.apex_y - 0.06, cp + 0.14)
    if rows.stop > rows.start and cols.stop > cols.start:
        d[rows, cols] += _thorax(c, a, g, signs, xw, yw, body[rows, cols])

    # ---- trachea and main bronchi: air columns in the upper mediastinum
    carina = a.hilum_y - 0.14
    low, high = sorted((g.mid_shift * 0.5, g.mid_shift * (0.5 + 0.4 * (carina + 1.0))))
    rows, cols, xw, yw = c.window(low - 0.05, high + 0.05, -1.2, carina + 0.03)
    tx = _F(g.mid_shift * 0.5) + (yw + _F(1.0)) * _F(g.mid_shift * 0.4)
    d[rows, cols] -= _F(0.22) * np.sqrt(_line(xw - tx, 0.04) * _ramp(_F(carina) - yw, 0.03))
    bx0 = g.mid_shift * 0.9
    rows, cols, xw, yw = c.window(bx0 - 0.16, bx0 + 0.16, carina - 0.03, carina + 0.16)
    bx, by = xw - _F(bx0), yw - _F(carina)
    bronchi = None
    for side in (-1.0, 1.0):
        along = bx * _F(side * 0.6) + by * _F(0.8)
        across = bx * _F(0.8) - by * _F(side * 0.6)
        bronchus = _line(across, 0.03) * _ramp(along, 0.02) * _ramp(_F(0.15) - along, 0.04)
        bronchi = bronchus if bronchi is None else np.maximum(bronchi, bronchus)
    d[rows, cols] -= _F(0.22) * np.sqrt(bronchi)

    # ---- clavicles: from the sternal notch laterally and upward to the shoulders
    rows, cols, xw, yw = c.window(-0.9, 0.9, g.clavicle_y - 0.4, g.clavicle_y + 0.12)
    cu = np.abs(xw) - _F(0.07)
    # gently S-shaped, thicker medially, ending at the acromion
    curve = _F(g.clavicle_y) + _F(a.clavicle_slope) * cu - _F(0.02) * np.sin(cu * _F(math.pi / 0.32))
    half = _F(0.045) - _F(0.02) * np.clip(cu * _F(1.0 / 0.62), 0.0, 1.0)
    clavicle = np.sqrt(np.maximum(_F(1.0) - np.abs(yw - curve) / half, 0.0)) * (_ramp(cu, 0.03) * _ramp(_F(0.62) - cu, 0.05))
    d[rows, cols] += _F(0.26) * clavicle

    # ---- abdomen: gastric bubble under the left dome; breast shadows
    if a.gastric_bubble > 0:
        r = a.gastric_bubble
        bx = 0.34 + g.mid_shift
        by = g.dome[1] + g.dome_curvature * (0.34 - a.dome_peak) ** 2 + r + 0.04
        rows, cols, xw, yw = c.window(bx - 1.5 * r, bx + 1.5 * r, by - 1.2 * r, by + 1.2 * r)
        q = _ellipse(xw, yw, bx, by, r * 1.35, r)
        d[rows, cols] -= _F(0.3) * _ramp(_F(1.0) - q, 0.3) * _ramp(_F(by + 0.25 * r) - yw, c.edge)
    if a.breast > 0:
        for side in (-1.0, 1.0):
            bx, by = side * 0.5, g.costophrenic_y(a) - 0.12
            rows, cols, xw, yw = c.window(bx - 0.45, bx + 0.45, by - 0.4, by + 0.36)
            q = _ellipse(xw, yw, bx, by, 0.42, 0.34)
            # a sharp inferolateral margin, fading upward into the chest wall
            shadow = _ramp(_F(1.0) - q, 0.08) * _ramp(yw - _F(by - 0.12), 0.3)
            d[rows, cols] += _F(0.1 * a.breast) * shadow


@dataclass
class _Lungs:
    """Lung fields and frame of the thorax window, shared by the finding painters."""

    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    sgn: np.ndarray
    t: np.ndarray
    lateral: np.ndarray
    medial: np.ndarray
    diaphragm: np.ndarray
    inside: np.ndarray
    anatomy: Anatomy
    geometry: _Geometry
    hila: tuple[float, float]
    edge: float
    pixel: float

    def zeros(self) -> np.ndarray:
        """A zero map of the window's shape."""
        return np.zeros(self.inside.shape, dtype=_F)

    def side(self, side: int) -> np.ndarray | float:
        """1 on one side (-1 image left, +1 image right), everywhere for side 0."""
        return (self.sgn == _F(side)).astype(_F) if side else 1.0

    def point(self, rng: np.random.Generator, side: int, margin: float, low: float | None = None, high: float | None = None) -> tuple[float, float]:
        """A random point well inside one lung, clear of the heart, between heights `low` and `high`."""
        a, g = self.anatomy, self.geometry
        top = g.apex_y + 0.22 + margin
        bottom = min(g.dome) - 0.04 - margin
        low = top if low is None else max(low, top)
        high = bottom if high is None else min(high, bottom)
        yy = rng.uniform(low, high) if high > low else 0.5 * (top + bottom)
        t = min(max((yy - g.apex_y) / a.apex_span, 0.0), 1.0)
        lateral = a.lung_center + (g.lung_half_width - a.lung_center) * math.sqrt(t)
        medial = max(a.mediastinum_half_width + side * g.mid_shift + 0.03,
                     a.lung_center - (a.lung_center - a.mediastinum_half_width) * math.sqrt(min(1.8 * t, 1.0)))
        # clear of the heart's border at this height
        if yy > g.heart_top:
            right, left = _heart_borders(a, g, np.array([yy]))
            medial = max(medial, float(left[0]) + 0.02 if side > 0 else -float(right[0]) + 0.02)
        lo, hi = medial + margin, lateral - margin
        uu = rng.uniform(lo, hi) if hi > lo else 0.5 * (medial + lateral)
        return side * uu, yy


def _thorax(c: _Canvas, a: Anatomy, g: _Geometry, signs: Mapping[str, _Sign], x, y, body) -> np.ndarray:
    """Density change of the thorax window: lungs (with findings), heart, hila, vessels, ribs."""
    edge, pixel = c.edge, c.pixel
    u = np.abs(x)
    right = x < _F(g.mid_shift)
    sgn = np.where(right, _F(-1.0), _F(1.0))
    t = np.clip((y - _F(g.apex_y)) * _F(1.0 / a.apex_span), 0.0, 1.0)
    lateral = _F(a.lung_center) + _F(g.lung_half_width - a.lung_center) * np.sqrt(t)
    medial_apex = _F(a.lung_center) - _F(a.lung_center - a.mediastinum_half_width) * np.sqrt(np.minimum(t * _F(1.8), 1.0))
    knob = _F(a.aortic_knob) * np.exp(-(((y - _F(a.knob_y)) * _F(1.0 / 0.07)) ** 2))
    medial = np.where(
        right,
        np.maximum(medial_apex, _F(a.mediastinum_half_width - g.mid_shift)),
        np.maximum(medial_apex, _F(a.mediastinum_half_width + g.mid_shift) + knob),
    )
    diaphragm = np.where(right, _F(g.dome[0]), _F(g.dome[1])) + _F(g.dome_curvature) * (u - _F(a.dome_peak)) ** 2
    to_wall = lateral - u
    above = _ramp(diaphragm - y, edge)
    inside = _ramp(to_wall, edge * 2.5)
    inside *= _ramp(u - medial, edge * 1.5)
    inside *= above
    inside *= _ramp(y - _F(g.apex_y), edge * 2)

    # heart: in front of the lungs, between its borders, merging with the abdomen below
    heart_right, heart_left = _heart_borders(a, g, y)
    heart = _ramp(x - heart_right, edge * 1.5) * _ramp(heart_left - x, edge * 1.5) * _ramp(y - _F(g.heart_top), 0.08)

    hila = (-0.17 + g.mid_shift, 0.17 + g.mid_shift)
    lungs = _Lungs(x, y, u, sgn, t, lateral, medial, diaphragm, inside, a, g, hila, edge, pixel)
    fill = None
    extra = None
    rim = None
    for name, sign in signs.items():
        if name not in _PAINTERS:
            continue
        paint = _PAINTERS[name](lungs, sign)
        if paint.fill is not None:
            fill = paint.fill if fill is None else np.maximum(fill, paint.fill)
        if paint.extra is not None:
            extra = paint.extra if extra is None else extra + paint.extra
        if paint.rim is not None:
            rim = paint.rim if rim is None else np.maximum(rim, paint.rim)

    # air: thinner toward the chest wall and the apex; the heart displaces most of it
    depth = np.clip(to_wall * _F(1.0 / 0.22), 0.35, 1.0)
    depth *= np.clip(t * _F(2.5), 0.3, 1.0)
    air = inside * depth
    air *= _F(1.0) - _F(0.82) * heart
    markings = _vessels(lungs, g.marking_gain)
    tissue = _F(0.05) + markings
    if rim is not None:
        tissue *= _F(1.0) - rim
        air += _F(0.12) * rim
    if fill is not None:
        air *= _F(1.0) - fill
        tissue *= _F(1.0) - _F(0.7) * fill
    out = tissue * inside - _F(g.air_depth) * air
    if extra is not None:
        out += extra

    # the heart is as dense as the abdomen it merges with below the diaphragm
    out += _F(0.13) * np.maximum(heart + above - _F(1.0), 0.0)
    # hila: the pulmonary arteries, separable Gaussian blobs
    hilum_rows = _F(0.09) * np.exp(-(((y - _F(a.hilum_y + 0.02)) * _F(1.0 / 0.09)) ** 2))
    hilum_cols = np.exp(-(((u - _F(0.2)) - sgn * _F(g.mid_shift)) * _F(1.0 / 0.05)) ** 2)
    out += hilum_rows * hilum_cols
    out += _ribs(a, g, y, u, to_wall, diaphragm, inside) * body
    return out


def _vessels(lungs: _Lungs, gain: float) -> np.ndarray:
    """Branching vascular markings: angular streaks around each hilum, fading with distance."""
    a = lungs.anatomy
    hx = np.where(lungs.sgn < 0, _F(lungs.hila[0]), _F(lungs.hila[1]))
    dx = (lungs.x - hx) * lungs.sgn
    dy = lungs.y - _F(a.hilum_y)
    r = np.sqrt(dx * dx + dy * dy)
    r += _F(1e-3)
    theta = np.arctan2(dy, dx)
    p = a.vessel_phases
    wobble = _F(0.08) * np.sin(r * _F(9.0) + _F(p[0]))
    n1, n2 = a.vessel_counts
    v = np.maximum(np.cos((theta + wobble) * _F(n1) + _F(p[2])), np.cos((theta - wobble) * _F(n2) + _F(p[3])))
    # a vessel of width w at radius r spans n w / r radians of the cosine's period:
    # w tapers from the hilum outward but stays about a pixel wide
    decay = np.exp(-r)
    decay2 = decay * decay
    spread = (decay2 * _F(0.016 * n1) + _F(max(lungs.pixel * 0.7, 0.003) * n1)) / r
    v -= _F(1.0)
    v /= np.minimum(spread * spread * _F(0.5), 1.0)
    v += _F(1.0)
    vessel = np.maximum(v, 0.0)
    # vessels differ in calibre and break up along their course; they fade toward the periphery
    vessel *= _F(0.6) + _F(0.4) * np.cos(theta * _F(5.0) + r * _F(14.0) + _F(p[1]))
    vessel *= decay2 * decay * np.minimum(r * _F(6.0), 1.0)
    vessel *= _F(0.2 * gain)
    return vessel


def _ribs(a: Anatomy, g: _Geometry, y, u, to_wall, diaphragm, inside) -> np.ndarray:
    """Posterior ribs (arching laterally and down) and fainter anterior ribs, as periodic fields."""
    du = u - _F(a.rib_peak)
    curve = _F(a.rib_curvature) * du * du + _F(1.6) * np.maximum(du, 0.0) ** 3
    v = y - curve - _F(g.apex_y - 0.03)
    s, growth = a.rib_spacing, a.rib_growth
    # rib k lies at v = s k (1 + growth k): invert for a continuous rib index
    k = (np.sqrt(np.maximum(v, 0.0) * _F(4 * s * growth) + _F(s * s)) - _F(s)) * _F(1.0 / (2 * s * growth))
    frac = k - np.floor(k)
    band = np.sqrt(np.maximum(_F(1.0) - ((frac - _F(0.3)) * _F(1.0 / 0.24)) ** 2, 0.0))
    cp = g.costophrenic_y(a)
    posterior = band * _ramp(to_wall + _F(0.06), 0.05)
    posterior *= _ramp(u - _F(0.07), 0.04) * _F(0.08)
    posterior *= _ramp(_F(10.5) - k, 0.6)
    posterior *= _F(0.55) + _F(0.45) * inside
    posterior *= _F(0.6) + _F(1.0) * _ramp(diaphragm + _F(0.05) - y, 0.15)
    posterior *= _ramp(_F(cp + 0.06) - y, 0.08)
    # anterior ribs: fainter bands running down toward the sternum, lateral half only
    ka = (y + _F(0.5) * u - _F(g.apex_y + 0.25)) * _F(1.0 / (s * 1.3))
    fa = ka - np.floor(ka)
    anterior = np.maximum(_F(1.0) - ((fa - _F(0.3)) * _F(1.0 / 0.26)) ** 2, 0.0)
    anterior *= _ramp(u - _F(0.3), 0.12) * _F(0.04)
    anterior *= _ramp(y - _F(g.apex_y + 0.3), 0.1) * _ramp(_F(cp - 0.1) - y, 0.1)
    anterior *= _ramp(to_wall + _F(0.04), 0.05)
    posterior += anterior
    return posterior


def _expose(c: _Canvas, film: _Film, rng: np.random.Generator) -> np.ndarray:
    """Film response, window, gamma, heel-effect shading, rotation and noise -> uint8."""
    k = film.exposure
    lo, hi = film.window
    # windowed brightness = (s (1 - exp(-k D)) (1 + heel y) - lo) / (hi - lo) = beta(y) - alpha(y) exp(-k D)
    # (in 8-bit units)
    alpha = 255.0 * (1.0 + film.heel * c.ys.astype(np.float64)) / (1.0 - math.exp(-1.5 * k)) / (hi - lo)
    beta = (alpha - 255.0 * lo / (hi - lo)).astype(_F)[:, None]
    bright = np.exp(c.density * _F(-k))
    bright *= -alpha.astype(_F)[:, None]
    bright += beta
    np.clip(bright, 0.0, 255.0, out=bright)
    rotated = np.asarray(Image.fromarray(bright).rotate(film.rotation, resample=Image.Resampling.BILINEAR))
    m, size = c.margin, c.size
    out = rotated[m : m + size, m : m + size].copy()
    # quantum noise grows with the signal
    noise = rng.standard_normal((size, size), dtype=_F)
    noise *= out + _F(0.4 * 255.0)
    noise *= _F(film.noise)
    out += noise
    out += _F(0.5)
    np.clip(out, 0.0, 255.0, out=out)
    # the film's gamma, applied to the 8-bit values through a lookup table
    table = np.round((np.arange(256) / 255.0) ** film.gamma * 255.0).astype(np.uint8)
    return table[out.astype(np.uint8)]


# --------------------------------------------------------------- sign painters
@dataclass
class _Paint:
    fill: np.ndarray | None = None  # fraction of lung air replaced by fluid or tissue
    extra: np.ndarray | None = None  # density added on top (solid lesions, gas)
    rim: np.ndarray | None = None  # pleural air: lung markings removed, more air


def _paint_atelectasis(L: _Lungs, sign: _Sign) -> _Paint:
    s, side, rng = sign.strength, sign.side, sign.rng
    g = L.geometry
    opacity = L.zeros()
    base = g.dome[0 if side < 0 else 1] - 0.06
    for _ in range(1 + int(rng.integers(0, 3))):
        cy = rng.uniform(base - 0.22, base)
        cu = rng.uniform(0.32, 0.52)
        tilt = rng.uniform(-0.25, 0.1)
        length = rng.uniform(0.18, 0.3)
        dist = (L.y - _F(cy)) - _F(tilt) * (L.u - _F(cu))
        band = _line(dist, max(0.028 + 0.022 * s, L.pixel * 1.2)) * _ramp(_F(length) - np.abs(L.u - _F(cu)), 0.06)
        opacity = np.maximum(opacity, band * _F(0.25 + 0.6 * s))
    if rng.random() < 0.35:
        # lobar collapse: a wedge from the hilum down to the medial diaphragm
        hx = L.hila[0] if side < 0 else L.hila[1]
        angle = np.arctan2(L.y - _F(L.anatomy.hilum_y), (L.x - _F(hx)) * _F(side))
        wedge = _ramp(_F(0.22 + 0.25 * s) - np.abs(angle - _F(1.7)), 0.1) * (L.y > _F(L.anatomy.hilum_y))
        opacity = np.maximum(opacity, wedge * _F(0.2 + 0.5 * s))
    return _Paint(fill=opacity * L.side(side) * L.inside)


def _paint_effusion(L: _Lungs, sign: _Sign) -> _Paint:
    s, rng = sign.strength, sign.rng
    side = 0 if rng.random() < 0.3 else sign.side
    height = 0.05 + 0.33 * s
    span = np.clip((L.u - L.medial) / np.maximum(L.lateral - L.medial, _F(0.05)), 0.0, 1.0)
    cp = _F(L.geometry.costophrenic_y(L.anatomy))
    level = cp - _F(height) * (_F(0.4) + _F(0.6) * span ** 2.5)
    fluid = _ramp(L.y - level, 0.04 + 0.03 * s) * np.clip(_F(0.8) + (L.y - level) * _F(2.0), 0.0, 1.0)
    fluid *= L.side(side) * L.inside
    # a fluid layer is thicker than the chest wall it replaces: as white as the liver
    return _Paint(fill=fluid, extra=_F(0.16) * fluid)


def _paint_infiltration(L: _Lungs, sign: _Sign) -> _Paint:
    s, rng = sign.strength, sign.rng
    side = 0 if rng.random() < 0.55 else sign.side
    centre, extent = rng.uniform(-0.35, 0.2), rng.uniform(0.35, 0.6)
    zone = np.exp(-(((L.y - _F(centre)) * _F(1.0 / extent)) ** 2))
    mottle = _waves(L.x, L.y, rng, 4, 28.0, 45.0)
    coarse = _waves(L.x, L.y, rng, 3, 10.0, 18.0)
    pattern = np.clip(_F(0.35) + _F(0.5) * mottle + _F(0.35) * coarse, 0.0, 1.0)
    return _Paint(fill=_F(0.12 + 0.45 * s) * pattern * zone * L.side(side) * L.inside)


def _paint_mass(L: _Lungs, sign: _Sign) -> _Paint:
    s, rng = sign.strength, sign.rng
    radius = 0.09 + 0.07 * s * rng.uniform(0.7, 1.0)
    cx, cy = L.point(rng, sign.side, radius * 0.5)
    dx, dy = L.x - _F(cx), L.y - _F(cy)
    angle = np.arctan2(dy, dx)
    lobes = _F(1.0) + _F(0.1) * np.cos(angle * _F(3.0) + _F(rng.uniform(0, 6.3))) + _F(0.05) * np.cos(angle * _F(5.0) + _F(rng.uniform(0, 6.3)))
    q = (dx * dx + dy * dy) * _F(1.0 / radius**2) / (lobes * lobes)
    return _Paint(fill=_ramp(_F(1.0) - q, 0.15) * _F(0.4 + 0.6 * s), extra=_F(0.04 + 0.14 * s) * _sphere(q))


def _paint_nodule(L: _Lungs, sign: _Sign) -> _Paint:
    s, rng = sign.strength, sign.rng
    fill, extra = L.zeros(), L.zeros()
    count = 1 + int(rng.random() < 0.3) + int(rng.random() < 0.15)
    for i in range(count):
        radius = max(0.04 + 0.025 * s * rng.uniform(0.6, 1.0), L.pixel * 0.9)
        side = sign.side if i == 0 else (-1 if rng.random() < 0.5 else 1)
        cx, cy = L.point(rng, side, radius)
        q = _ellipse(L.x, L.y, cx, cy, radius, radius)
        fill = np.maximum(fill, _ramp(_F(1.0) - q, 0.3) * _F(0.4 + 0.6 * s))
        extra += _F(0.05 + 0.16 * s) * _sphere(q)
    return _Paint(fill=fill, extra=extra)


def _paint_pneumonia(L: _Lungs, sign: _Sign) -> _Paint:
    s, side, rng = sign.strength, sign.side, sign.rng
    cx, cy = L.point(rng, side, 0.1, low=-0.25)
    cluster = L.zeros()
    spread = 0.1 + 0.08 * s
    for _ in range(5 + int(rng.integers(0, 5))):
        bx, by = cx + rng.normal(0, spread), cy + rng.normal(0, spread * 0.8)
        r = rng.uniform(0.06, 0.11)
        cluster = np.maximum(cluster, np.exp(-_ellipse(L.x, L.y, bx, by, r, r)))
    mottle = _waves(L.x, L.y, rng, 3, 20.0, 30.0)
    pattern = cluster * (_F(0.75) + _F(0.25) * mottle)
    fill = np.minimum(pattern * _F(0.25 + 0.6 * s), 0.95) * L.inside * L.side(side)
    return _Paint(fill=fill, extra=_F(0.05) * fill)


def _paint_pneumothorax(L: _Lungs, sign: _Sign) -> _Paint:
    s, side = sign.strength, sign.side
    g = L.geometry
    width = 0.025 + 0.15 * s
    # the collapsed lung's edge: pulled in from the lateral wall, most at the apex
    taper = _F(1.0) - _F(0.7) * np.minimum(L.t * _F(0.45), 1.0)
    edge_u = L.lateral - _F(width) * taper
    apex_drop = _F(g.apex_y + width * 1.3)
    outside = np.maximum(_ramp(L.u - edge_u, L.edge), _ramp(apex_drop - L.y, L.edge))
    mask = L.side(side) * L.inside
    half = max(0.012, L.pixel * 0.8)
    pleural = np.maximum(_line(L.u - edge_u, half) * (L.y > apex_drop), _line(L.y - apex_drop, half) * (L.u < edge_u))
    collapsed = (_F(1.0) - outside) * _F(0.08 + 0.14 * s)
    return _Paint(fill=collapsed * mask, extra=_F(0.1) * pleural * mask, rim=outside * mask)


def _paint_consolidation(L: _Lungs, sign: _Sign) -> _Paint:
    s, side, rng = sign.strength, sign.side, sign.rng
    a, g = L.anatomy, L.geometry
    lobe = int(rng.integers(0, 3))  # upper lobe, middle lobe / lingula, lower lobe
    fissure = a.hilum_y + rng.uniform(-0.04, 0.04)
    if lobe == 0:
        region = _ramp(_F(fissure) - L.y, L.edge)
        centre = (g.apex_y + fissure) / 2
    elif lobe == 1:
        region = _ramp(L.y - _F(fissure), L.edge) * _ramp(_F(0.4) - (L.u - L.medial), 0.1)
        centre = fissure + 0.2
    else:
        oblique = _F(fissure - 0.05) + (L.u - L.medial) * _F(0.45)
        region = _ramp(L.y - oblique, L.edge)
        centre = min(g.dome) - 0.1
    reach = 0.15 + 0.35 * s
    extent = np.minimum(np.exp(-(((L.y - _F(centre)) * _F(1.0 / reach)) ** 2)) * _F(1.6), 1.0)
    # air bronchograms: dark lines running toward the hilum inside the opacity
    hx = L.hila[0] if side < 0 else L.hila[1]
    angle = np.arctan2(L.y - _F(a.hilum_y), (L.x - _F(hx)) * _F(side))
    bronchi = _line(np.sin(angle * _F(14.0) + _F(rng.uniform(0, 6.3))), max(0.12, L.pixel * 4))
    dense = extent * _F(0.3 + 0.6 * s) * (_F(1.0) - _F(0.3) * bronchi) * region * L.inside * L.side(side)
    return _Paint(fill=dense, extra=_F(0.08) * dense)


def _paint_edema(L: _Lungs, sign: _Sign) -> _Paint:
    s, rng = sign.strength, sign.rng
    a = L.anatomy
    reach = 0.22 + 0.14 * s
    haze = L.zeros()
    for hx in L.hila:
        haze = np.maximum(haze, np.exp(-_ellipse(L.x, L.y, hx * 1.3, a.hilum_y + 0.05, reach * 1.2, reach * 1.4)))
    texture = _waves(L.x, L.y, rng, 3, 15.0, 25.0)
    fill = haze * _F(0.1 + 0.45 * s) * (_F(0.85) + _F(0.15) * texture)
    # Kerley B lines: short horizontal septal lines at the lateral bases
    period = 0.05
    ky = (L.y * _F(1.0 / period) + _F(rng.uniform(0, 1))) % _F(1.0)
    kerley = _line(ky - _F(0.5), max(0.18, L.pixel / period)) * _ramp(L.u - (L.lateral - _F(0.1)), 0.04) * _ramp(L.y - _F(0.0), 0.1)
    fill = np.maximum(fill, kerley * _F(0.2 + 0.5 * s))
    fill += _ramp(_F(a.hilum_y - 0.05) - L.y, 0.2) * _F(0.15 * s)
    return _Paint(fill=np.minimum(fill, 0.9) * L.inside)


def _paint_emphysema(L: _Lungs, sign: _Sign) -> _Paint:
    s, rng = sign.strength, sign.rng
    if rng.random() >= 0.4:
        return _Paint()
    # an apical bulla: a thin-walled lucent space
    cx, cy = L.point(rng, sign.side, 0.1, high=L.geometry.apex_y + 0.5)
    r = 0.08 + 0.06 * s
    q = _ellipse(L.x, L.y, cx, cy, r, r * 0.85)
    wall = _line(np.sqrt(q) - _F(1.0), 0.1)
    return _Paint(extra=(_F(0.05) * wall - _F(0.07) * _ramp(_F(1.0) - q, 0.1)) * L.inside)


def _paint_fibrosis(L: _Lungs, sign: _Sign) -> _Paint:
    s, rng = sign.strength, sign.rng
    upper = rng.random() < 0.3
    side = 0 if rng.random() < 0.7 else sign.side
    # a network of irregular lines: three warped line families at random angles
    width = max(0.25, L.pixel * 42.0 * 0.4)
    warp = _waves(L.x, L.y, rng, 3, 9.0, 16.0) * _F(3.0)
    net = None
    for turn in (1.0, -1.0, 0.5):
        k, angle = rng.uniform(30, 42), rng.uniform(0, math.pi)
        phase = L.x * _F(k * math.cos(angle)) + L.y * _F(k * math.sin(angle)) + warp * _F(turn)
        lines = _line(np.sin(phase), width)
        net = lines if net is None else np.maximum(net, lines)
    periphery = _ramp(L.u - (L.lateral - _F(0.24 + 0.1 * s)), 0.12)
    if upper:
        zone = _ramp(_F(L.geometry.apex_y + 0.55) - L.y, 0.15)
    else:
        zone = _ramp(L.y - _F(-0.15), 0.2)
    fill = (net * _F(0.25 + 0.55 * s) + _F(0.12 * s)) * periphery * zone
    return _Paint(fill=np.minimum(fill, 0.95) * L.inside * L.side(side))


def _paint_pleural_thickening(L: _Lungs, sign: _Sign) -> _Paint:
    s, rng = sign.strength, sign.rng
    g = L.geometry
    side = 0 if rng.random() < 0.3 else sign.side
    thickness = max(0.03 + 0.07 * s, L.pixel * 1.5)
    lump = _F(1.0) + _F(0.25) * _waves(L.x, L.y, rng, 2, 6.0, 12.0)
    if rng.random() < 0.4:
        # apical cap
        band = _ramp(_F(g.apex_y) + _F(thickness * 1.8) * lump - L.y, L.edge * 2)
    else:
        top = rng.uniform(g.apex_y + 0.2, -0.15)
        length = rng.uniform(0.3, 0.6)
        band = _ramp(L.u - (L.lateral - _F(thickness) * lump), L.edge * 2)
        band *= _ramp(L.y - _F(top), 0.08) * _ramp(_F(top + length) - L.y, 0.08)
    band *= L.inside * L.side(side)
    return _Paint(fill=band * _F(0.8 + 0.2 * s), extra=_F(0.1) * band)


def _paint_hernia(L: _Lungs, sign: _Sign) -> _Paint:
    s, rng = sign.strength, sign.rng
    g = L.geometry
    r = 0.1 + 0.05 * s
    cx = g.mid_shift + 0.05 + rng.uniform(-0.05, 0.05)
    cy = min(g.dome) - r * 0.8 + rng.uniform(-0.08, 0.0)
    q = _ellipse(L.x, L.y, cx, cy, r * 1.15, r)
    sac = _ramp(_F(1.0) - q, 0.15)
    level = cy - r * rng.uniform(0.0, 0.35)
    gas = sac * _ramp(_F(level) - L.y, L.edge) * _ramp(_F(0.8) - q, 0.15)
    wall = _line(np.sqrt(q) - _F(1.0), 0.12)
    return _Paint(extra=_F(0.12) * wall + _F(0.06) * sac - _F(0.25 + 0.25 * s) * gas)


_PAINTERS: dict[str, Callable[[_Lungs, _Sign], _Paint]] = {
    "Atelectasis": _paint_atelectasis,
    "Effusion": _paint_effusion,
    "Infiltration": _paint_infiltration,
    "Mass": _paint_mass,
    "Nodule": _paint_nodule,
    "Pneumonia": _paint_pneumonia,
    "Pneumothorax": _paint_pneumothorax,
    "Consolidation": _paint_consolidation,
    "Edema": _paint_edema,
    "Emphysema": _paint_emphysema,
    "Fibrosis": _paint_fibrosis,
    "Pleural_Thickening": _paint_pleural_thickening,
    "Hernia": _paint_hernia,
}
