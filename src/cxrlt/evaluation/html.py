"""A run's report as one self-contained HTML page (`report.html`).

The page reads only what a run folder already holds (config.yaml,
metrics.json, metrics_val.json, model.json, stages/*, plots/) and embeds
every figure as a base64 PNG data URI, with inline CSS and no script, so the
single file can be mailed, archived or opened offline and shows the same
thing everywhere. Every text that comes from a user (class names, config
values, file names) is HTML-escaped.

Sections: summary cards (data, model, loss, training, headline metrics with
their confidence intervals), a per-class table coloured by head / medium /
tail group with the training label distribution as bars, group means, ROC
and precision-recall curves, calibration, training curves, example class
activation maps and the full configuration. A section whose inputs are
absent says so and why instead of disappearing.

Optional inputs and where they come from:

* `metrics.json["intervals"]`: bootstrap confidence intervals
  (`level`, `resamples`, `unit`, `per_class`, `mean`, `groups`).
* `metrics.json["calibration"]` (`ece` per class, `mean_ece`, `pooled_ece`,
  `temperature`) and `plots/reliability.png`.
* `plots/cams/*.png`: class activation map overlays (`cxrlt.explain`).

ROC and PR curves come from `plots/roc.png` / `plots/pr.png`; when those are
missing they are drawn from the predictions and the run's labels.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cxrlt.config import parse_yaml
from cxrlt.data.stats import GROUP_COLOURS, GROUPS
from cxrlt.errors import CxrltError, InputError
from cxrlt.io import read_json, write_text
from cxrlt.layout import ModelFiles, RunFiles
from cxrlt.models.card import ModelCard

_MAX_CAMS = 24  # overlays embedded at most: each is ~100 kB
_BAR_PX = 120  # width of the largest training-positives bar
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Light tints of the plot colours for table rows (text stays black on them).
_GROUP_TINTS = {"head": "#e3f0f9", "medium": "#fdf1dc", "tail": "#f8e9f2"}


@dataclass
class _Figure:
    """An embedded PNG with its caption."""

    title: str
    data: bytes
    caption: str = ""


@dataclass
class _Run:
    """What the report reads from a run folder."""

    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    config_text: str = ""
    metrics_val: dict[str, Any] | None = None
    model: ModelCard | None = None
    environment: dict[str, Any] | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- entry point
def write_html_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's self-contained HTML report (default `RUN_DIR/report.html`) atomically.

    Needs `metrics.json` in `run_dir` (a finished or evaluated run); every
    other input is optional and its section says when it is absent.
    Returns the path written.
    """
    run_dir = Path(run_dir)
    page = render_html_report(run_dir)
    return write_text(Path(out) if out is not None else RunFiles(run_dir).report_html, page)


def render_html_report(run_dir: str | Path) -> str:
    """The report page of `run_dir` as a string (see `write_html_report`)."""
    run = _read_run(Path(run_dir))
    body = [
        _header(run),
        _NAV,
        _cards(run),
        _notes(run),
        _class_table(run),
        _label_distribution(run),
        _curves(run),
        _calibration(run),
        _subgroups(run),
        _training(run),
        _cams(run),
        _configuration(run),
    ]
    title = f"cxrlt run: {run.config.get('name') or run.path.name}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(part for part in body if part)
        + "\n</main>\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- reading
def _read_run(run_dir: Path) -> _Run:
    if not run_dir.is_dir():
        raise InputError("is not a folder; give a run folder made by `cxrlt train`", run_dir)
    files = RunFiles(run_dir)
    if not files.headline_metrics.is_file():
        raise InputError(
            f"has no {files.headline_metrics.name}, so there is nothing to report; finish the run "
            "(`cxrlt train --resume`) or evaluate it (`cxrlt evaluate RUN_DIR`) first", run_dir)
    metrics = read_json(files.headline_metrics)
    if not isinstance(metrics, dict) or not isinstance(metrics.get("per_class"), dict):
        raise InputError("is not a cxrlt metrics file: expected an object with a `per_class` section",
                         files.headline_metrics)
    run = _Run(path=run_dir, metrics=metrics)
    if files.config.is_file():
        run.config_text = files.config.read_text(encoding="utf-8")
        try:
            loaded = parse_yaml(run.config_text, str(files.config))
        except yaml.YAMLError as exc:
            raise InputError(f"is not valid YAML ({exc})", files.config) from None
        run.config = loaded if isinstance(loaded, dict) else {}
    else:
        run.notes.append(f"{files.config.name} is missing: the setup cards are empty.")
    validation = files.metrics("val", _headline(run))
    if validation != files.headline_metrics and validation.is_file():
        run.metrics_val = read_json(validation)
    if files.environment.is_file():
        run.environment = read_json(files.environment)
    if files.model.card.is_file():
        try:
            run.model = ModelCard.read(files.model.card)
        except InputError as exc:
            run.notes.append(f"the model card could not be read ({exc}); training positives are unknown.")
    for stage in files.stage_folders():
        if stage.done.is_file():
            record = read_json(stage.done)
            if isinstance(record, dict):
                run.stages.append({"folder": stage.folder.name, **record})
    return run


def _headline(run: _Run) -> str:
    """The split whose metrics are `metrics.json` (it says so itself)."""
    return str(run.metrics.get("split", "test"))


def _png(path: Path) -> bytes | None:
    """The bytes of a PNG file, or None when it is absent or not a PNG."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    return data if data.startswith(_PNG_SIGNATURE) else None


def _figure_png(figure: Any) -> bytes:
    """A matplotlib figure rendered to PNG bytes in memory (nothing written to the run folder)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


# --------------------------------------------------------------------------- formatting
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _interval(bounds: Any, digits: int = 3) -> str:
    """`[lo, hi]` as text, or '' when the interval is absent or undefined."""
    if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
        return ""
    lo, hi = bounds
    if _num(lo) == "n/a" or _num(hi) == "n/a":
        return ""
    return f"{lo:.{digits}f}–{hi:.{digits}f}"


def _img(figure: _Figure, css_class: str = "figure") -> str:
    uri = "data:image/png;base64," + base64.b64encode(figure.data).decode("ascii")
    caption = f"<figcaption>{_e(figure.caption)}</figcaption>" if figure.caption else ""
    return (f"<figure class=\"{css_class}\"><img src=\"{uri}\" alt=\"{_e(figure.title)}\">"
            f"{caption}</figure>")


def _section(anchor: str, title: str, content: str) -> str:
    return f"<section id=\"{anchor}\">\n<h2>{_e(title)}</h2>\n{content}\n</section>"


def _absent(text: str) -> str:
    return f"<p class=\"absent\">{_e(text)}</p>"


def _params(component: dict[str, Any]) -> str:
    """The parameters of a config component as `key=value, ...` (unset ones left out)."""
    return ", ".join(f"{k}={v}" for k, v in component.items() if k != "name" and v not in (None, [], {}))


def _component(value: Any) -> str:
    """A config component (`{name: ..., **params}` or a plain value) in one line."""
    if isinstance(value, dict):
        params = _params(value)
        return f"{value.get('name', '?')}" + (f" ({params})" if params else "")
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- sections
def _header(run: _Run) -> str:
    name = run.config.get("name") or run.path.name
    split = run.metrics.get("split", "?")
    version = (run.environment or {}).get("cxrlt")
    meta = [f"run folder {run.path.resolve()}", f"evaluated on the {split} split"]
    if version:
        meta.append(f"cxrlt {version}")
    return (f"<header><h1>cxrlt run: {_e(name)}</h1>"
            f"<p class=\"meta\">{' · '.join(_e(m) for m in meta)}</p></header>")


def _intervals(run: _Run) -> dict[str, Any] | None:
    value = run.metrics.get("intervals")
    return value if isinstance(value, dict) else None


def _calibration_data(run: _Run) -> dict[str, Any] | None:
    value = run.metrics.get("calibration")
    return value if isinstance(value, dict) else None


def _level(intervals: dict[str, Any]) -> str:
    level = intervals.get("level")
    return f"{level:.0%}" if isinstance(level, (int, float)) and not isinstance(level, bool) else "?"


def _interval_label(intervals: dict[str, Any]) -> str:
    """How the intervals were made, e.g. '95% bootstrap intervals (1000 resamples by patient)'."""
    details = []
    if intervals.get("resamples"):
        details.append(f"{intervals['resamples']} resamples")
    if intervals.get("unit"):
        details.append(f"by {intervals['unit']}")
    return f"{_level(intervals)} bootstrap intervals" + (f" ({' '.join(details)})" if details else "")


def _cards(run: _Run) -> str:
    config, metrics = run.config, run.metrics
    data = config.get("data") or {}
    model = config.get("model") or {}
    train = config.get("train") or {}
    intervals = _intervals(run)
    mean = metrics.get("mean") or {}
    mean_ci = (intervals or {}).get("mean") or {}

    sources = [s for s in data.get("sources") or [] if isinstance(s, dict)]
    source_names = ", ".join(str(s.get("name", "?")) for s in sources) or "n/a"
    images = [f"{metrics.get('split', '?')}: {metrics.get('n_images', '?')} images"]
    if run.metrics_val:
        images.append(f"val: {run.metrics_val.get('n_images', '?')} images")
    classes = len(metrics["per_class"])
    split = data.get("split") or {}
    loss = config.get("loss")
    loss_params = _params(loss) if isinstance(loss, dict) else ""
    cards = [
        ("Dataset", source_names,
         f"{classes} classes · {'; '.join(images)} · split {split.get('method', '?')}"),
        ("Model", f"{model.get('backbone', 'n/a')}",
         f"{'pretrained' if model.get('pretrained') else 'random init'} · pooling {_component(model.get('pooling'))}"
         f" · head {_component(model.get('head'))} · {((data.get('images') or {}).get('size', '?'))} px"),
        ("Loss", loss.get("name", "n/a") if isinstance(loss, dict) else _component(loss) or "n/a",
         f"{loss_params + ' · ' if loss_params else ''}"
         f"sampler {_component(train.get('sampler')) or 'n/a'}"),
        ("Training", _epochs_text(run),
         f"{_short(train.get('optimizer'), 'lr')} · schedule {_short(train.get('schedule'))}"
         f" · batch {train.get('batch_size', '?')}"),
    ]
    out = []
    for title, value, detail in cards:
        out.append(f"<div class=\"card\"><div class=\"card-title\">{_e(title)}</div>"
                   f"<div class=\"card-value small\">{_e(value)}</div><div class=\"card-detail\">{_e(detail)}</div></div>")
    for title, key in (("Mean AUC", "auc"), ("mAP", "ap")):
        ci = _interval(mean_ci.get(key))
        if intervals:
            ci_text = (f"{_level(intervals)} CI {ci}" if ci else "no interval") + f"<br>{_e(_interval_label(intervals))}"
        else:
            ci_text = "no confidence intervals"
        out.append(f"<div class=\"card headline\"><div class=\"card-title\">{_e(title)}</div>"
                   f"<div class=\"card-value\">{_num(mean.get(key))}</div>"
                   f"<div class=\"card-detail\">{ci_text}<br>over {_e(mean.get('evaluated', '?'))} of "
                   f"{_e(mean.get('classes', '?'))} classes</div></div>")
    f1_key = "f1_tuned" if mean.get("f1_tuned") is not None else "f1"
    out.append(f"<div class=\"card headline\"><div class=\"card-title\">Mean F1</div>"
               f"<div class=\"card-value\">{_num(mean.get(f1_key))}</div><div class=\"card-detail\">"
               f"{'at thresholds tuned on validation' if f1_key == 'f1_tuned' else 'at threshold 0.5'}</div></div>")
    calibration = _calibration_data(run)
    if calibration:
        temperature = calibration.get("temperature")
        detail = f"pooled ECE {_num(calibration.get('pooled_ece'))} (as predicted)"
        if temperature is not None:
            scaled = (calibration.get("scaled") or {}).get("pooled_ece")
            detail += (f" · temperature {_num(temperature, 2) if isinstance(temperature, (int, float)) else temperature}"
                       + (f": pooled ECE {_num(scaled)} after scaling" if scaled is not None else ""))
        out.append(f"<div class=\"card headline\"><div class=\"card-title\">Mean ECE</div>"
                   f"<div class=\"card-value\">{_num(calibration.get('mean_ece'))}</div>"
                   f"<div class=\"card-detail\">{_e(detail)}</div></div>")
    return f"<section id=\"summary\" class=\"cards\">{''.join(out)}</section>"


def _short(component: Any, *keys: str) -> str:
    """A component's name with only the named parameters (the card has no room for all of them)."""
    if not isinstance(component, dict):
        return "n/a" if component is None else str(component)
    params = _params({k: component[k] for k in keys if k in component})
    return f"{component.get('name', '?')}" + (f" ({params})" if params else "")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _epochs_text(run: _Run) -> str:
    if run.stages:
        total = sum(int(s.get("epochs_run") or 0) for s in run.stages)
        return f"{_plural(total, 'epoch')} in {_plural(len(run.stages), 'stage')}"
    epochs = (run.config.get("train") or {}).get("epochs")
    return f"{epochs} epochs (configured)" if epochs is not None else "n/a"


def _notes(run: _Run) -> str:
    notes = list(run.notes)
    if _intervals(run) is None:
        bootstrap = (run.config.get("evaluation") or {}).get("bootstrap")
        if bootstrap == 0:
            notes.append("No confidence intervals: evaluation.bootstrap was 0.")
        else:
            notes.append("No confidence intervals: metrics.json has no `intervals` section "
                         "(it was written by a cxrlt version that did not compute them).")
    if _calibration_data(run) is None:
        notes.append("No calibration measures: metrics.json has no `calibration` section.")
    undefined = [name for name, entry in run.metrics["per_class"].items()
                 if isinstance(entry, dict) and entry.get("auc") is None]
    if undefined:
        notes.append(f"AUC and AP are undefined (no positive or no negative in the {run.metrics.get('split', '?')} "
                     f"split) and left out of the means for: {', '.join(undefined)}.")
    if not notes:
        return ""
    return "<section id=\"notes\" class=\"notes\"><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul></section>"


def _class_table(run: _Run) -> str:
    per_class: dict[str, Any] = run.metrics["per_class"]
    classes = list(per_class)
    intervals = _intervals(run) or {}
    class_ci = intervals.get("per_class") or {}
    calibration = _calibration_data(run) or {}
    ece = calibration.get("ece") or {}
    train_positives = _train_positives(run, classes)
    val_classes = (run.metrics_val or {}).get("per_class") or {}
    has_tuned = any(isinstance(e, dict) and "f1_tuned" in e for e in per_class.values())

    order = list(range(len(classes)))
    if train_positives is not None:
        order.sort(key=lambda j: -train_positives[j])
    largest = max(train_positives) if train_positives else 0

    sort_mark = " <span class=\"sorted\">▼</span>" if train_positives is not None else ""
    header = ["class", "group", f"train positives{sort_mark}", f"{_e(run.metrics.get('split', 'eval'))} positives",
              "AUC", "AP"]
    if val_classes:
        header.append("val AUC")
    header.append("F1@0.5")
    if has_tuned:
        header += ["F1@tuned", "threshold"]
    if ece:
        header.append("ECE")
    rows = []
    for j in order:
        name = classes[j]
        entry = per_class[name] if isinstance(per_class[name], dict) else {}
        group = str(entry.get("group", ""))
        ci = class_ci.get(name) or {}
        tint = _GROUP_TINTS.get(group, "#ffffff")
        cells = [f"<th scope=\"row\">{_e(name)}</th>", f"<td>{_chip(group)}</td>"]
        if train_positives is not None:
            width = _BAR_PX * train_positives[j] / largest if largest else 0.0
            colour = GROUP_COLOURS.get(group, "#777777")
            cells.append(f"<td class=\"bar-cell\"><span class=\"bar\" style=\"width:{width:.1f}px;"
                         f"background:{colour}\"></span><span class=\"bar-n\">{int(train_positives[j])}</span></td>")
        else:
            cells.append("<td class=\"num\">n/a</td>")
        cells.append(f"<td class=\"num\">{_e(entry.get('positives', 'n/a'))}</td>")
        for key in ("auc", "ap"):
            cells.append(_metric_cell(entry.get(key), ci.get(key)))
        if val_classes:
            cells.append(f"<td class=\"num\">{_num((val_classes.get(name) or {}).get('auc'))}</td>")
        cells.append(f"<td class=\"num\">{_num(entry.get('f1'))}</td>")
        if has_tuned:
            cells.append(f"<td class=\"num\">{_num(entry.get('f1_tuned'))}</td>")
            cells.append(f"<td class=\"num\">{_num(entry.get('threshold'), 4)}</td>")
        if ece:
            cells.append(f"<td class=\"num\">{_num(ece.get(name))}</td>")
        rows.append(f"<tr style=\"background:{tint}\">{''.join(cells)}</tr>")
    heads = "".join(f"<th scope=col{'' if i < 3 else ' class=num'}>{h}</th>" for i, h in enumerate(header))
    table = (f"<table class=\"classes\"><thead><tr>{heads}</tr>"
             f"</thead><tbody>{''.join(rows)}</tbody></table>")
    caption = ("Rows are sorted by training positives (most frequent first) and coloured by group; "
               if train_positives is not None else f"Training positives are unknown (no {ModelFiles.CARD}); ")
    caption += ("under AUC and AP: their " + _interval_label(intervals) + "."
                if intervals else "no confidence intervals.")
    return _section("classes", "Per-class results",
                    f"<p class=\"caption\">{_e(caption)}</p><div class=\"scroll\">{table}</div>" + _group_table(run))


def _train_positives(run: _Run, classes: list[str]) -> list[float] | None:
    counts = None if run.model is None else run.model.per_class("train_positives", classes)
    return None if counts is None else counts.tolist()


def _chip(group: str) -> str:
    if not group:
        return ""
    colour = GROUP_COLOURS.get(group, "#777777")
    return f"<span class=\"chip\" style=\"border-color:{colour};color:{colour}\">{_e(group)}</span>"


def _metric_cell(value: Any, bounds: Any) -> str:
    ci = _interval(bounds)
    below = f"<span class=\"ci\">{_e(ci)}</span>" if ci else ""
    return f"<td class=\"num\">{_num(value)}{below}</td>"


def _group_table(run: _Run) -> str:
    intervals = _intervals(run) or {}
    rows = [("all classes", "", run.metrics.get("mean") or {}, intervals.get("mean") or {})]
    groups = run.metrics.get("groups") or {}
    group_ci = intervals.get("groups") or {}
    names = [g for g in GROUPS if g in groups] + [g for g in groups if g not in GROUPS]
    rows += [(name, name, groups[name] or {}, group_ci.get(name) or {}) for name in names]
    body = []
    for label, group, means, ci in rows:
        tint = _GROUP_TINTS.get(group, "#f4f4f4")
        f1 = means.get("f1_tuned", means.get("f1"))
        body.append(f"<tr style=\"background:{tint}\"><th scope=\"row\">{_chip(group) if group else _e(label)}</th>"
                    f"<td class=\"num\">{_e(means.get('evaluated', '?'))} of {_e(means.get('classes', '?'))}</td>"
                    f"{_metric_cell(means.get('auc'), ci.get('auc'))}{_metric_cell(means.get('ap'), ci.get('ap'))}"
                    f"<td class=\"num\">{_num(f1)}</td></tr>")
    f1_name = "F1@tuned" if (run.metrics.get("mean") or {}).get("f1_tuned") is not None else "F1@0.5"
    return ("<h3>Means by group</h3><table class=\"groups\"><thead><tr><th scope=col>classes</th>"
            "<th scope=col class=num>evaluated</th><th scope=col class=num>mean AUC</th><th scope=col class=num>mAP</th>"
            f"<th scope=col class=num>mean {f1_name}</th></tr></thead><tbody>{''.join(body)}</tbody></table>")


def _curves(run: _Run) -> str:
    files = RunFiles(run.path)
    roc, pr = _png(files.plot("roc")), _png(files.plot("pr"))
    note = ""
    if roc is None or pr is None:
        drawn, note = _draw_curves(run)
        roc = roc or drawn.get("roc")
        pr = pr or drawn.get("pr")
    figures = []
    if roc is not None:
        figures.append(_img(_Figure("ROC curves", roc, "One panel per class, coloured by group; dashed: chance.")))
    if pr is not None:
        figures.append(_img(_Figure("Precision-recall curves", pr,
                                    "One panel per class, coloured by group; dotted: prevalence.")))
    bars = _png(files.plot("per_class"))
    if bars is not None:
        figures.append(_img(_Figure("Per-class AUC and AP", bars)))
    content = (_absent(note) if note else "") + "".join(figures)
    return _section("curves", "ROC and precision-recall curves", content or _absent("No curves: plots are missing."))


def _draw_curves(run: _Run) -> tuple[dict[str, bytes], str]:
    """ROC / PR figures from the saved predictions and labels of the headline split, when the PNGs are missing."""
    files = RunFiles(run.path)
    predictions, labels = files.headline_predictions, files.headline_labels
    if not predictions.is_file():
        return {}, (f"ROC and PR curves cannot be drawn: {files.plot('roc').name}, {files.plot('pr').name} and "
                    f"{predictions.name} are missing.")
    try:
        from cxrlt.evaluation.plots import pr_figure, roc_figure
        from cxrlt.evaluation.predictions import align, read_label_csv, read_predictions

        table = read_predictions(predictions)
        aligned = align(table, read_label_csv(labels, classes=table.classes))
    except CxrltError as exc:
        return {}, f"ROC and PR curves cannot be drawn: the plots are missing and the labels could not be read or matched ({exc})."
    per_class = run.metrics["per_class"]
    groups = [str((per_class.get(c) or {}).get("group", "")) or None for c in aligned.classes]
    group_list = None if any(g is None for g in groups) else groups
    return ({"roc": _figure_png(roc_figure(aligned.labels, aligned.probs, aligned.classes, group_list)),
             "pr": _figure_png(pr_figure(aligned.labels, aligned.probs, aligned.classes, group_list))},
            f"{files.plot('roc').name} or {files.plot('pr').name} was missing: the curves below were drawn from "
            f"{predictions.name} and {labels.name}.")


def _calibration(run: _Run) -> str:
    calibration = _calibration_data(run)
    figure = _png(RunFiles(run.path).plot("reliability"))
    parts = []
    if calibration is None:
        parts.append(_absent("No calibration measures: metrics.json has no `calibration` section."))
    else:
        temperature = calibration.get("temperature")
        facts = [f"mean ECE over classes {_num(calibration.get('mean_ece'))}",
                 f"pooled ECE (all classes' predictions together) {_num(calibration.get('pooled_ece'))}"]
        scaled = (calibration.get("scaled") or {}).get("pooled_ece")
        facts.append(f"temperature {temperature} fitted on validation"
                     + (f" (pooled ECE {_num(scaled)} after scaling)" if scaled is not None else "")
                     if temperature is not None else "no temperature scaling (evaluation.temperature)")
        parts.append("<p>" + " · ".join(_e(f) for f in facts) + ". Per-class ECE is in the table above.</p>")
    if figure is not None:
        parts.append(_img(_Figure("Reliability diagram", figure)))
    elif calibration is not None:
        parts.append(_absent(f"{RunFiles(run.path).plot('reliability').name} is missing."))
    return _section("calibration", "Calibration", "".join(parts))


def _subgroups(run: _Run) -> str:
    """Scores per sex / age band / view / source subgroup, their plot and the largest TPR gaps (when scored)."""
    sections, summary = run.metrics.get("subgroups"), run.metrics.get("subgroup_summary")
    if not sections or not summary:
        return ""
    from cxrlt.evaluation.plots import subgroup_figure

    rows = []
    for attribute, groups in sections.items():
        for name, entry in groups.items():
            if entry["too_small"]:
                cells = f"<td colspan=\"3\">too small to score (under {summary['settings']['min_images']} images)</td>"
            else:
                bounds = (entry.get("intervals") or {})
                cells = "".join(f"<td>{_num(entry[key])}<br><small>{_interval(bounds.get(key))}</small></td>"
                                for key in ("auc", "map")) + f"<td>{_num(entry['f1'])}</td>"
            rows.append(f"<tr><td>{_e(attribute)}</td><td>{_e(name)}</td><td>{entry['n_images']}</td>{cells}</tr>")
    table = ("<table><thead><tr><th>attribute</th><th>subgroup</th><th>images</th><th>mean AUC</th><th>mAP</th>"
             f"<th>mean F1 ({_e(summary['settings']['thresholds'])} thresholds)</th></tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    gaps = []
    for attribute, groups in sections.items():
        info = summary[attribute]
        ranked = sorted(((v["gap"], c, v) for c, v in info["tpr_gap"].items() if v["gap"] is not None), reverse=True)
        for gap, cls, v in ranked[:3]:
            gaps.append(f"<li>{_e(attribute)}, {_e(cls)}: TPR gap {_num(gap)} {_interval(v.get('interval'))} "
                        f"({_e(v['highest'])} highest, {_e(v['lowest'])} lowest)</li>")
        if info["excluded"]:
            gaps.append(f"<li>{_e(attribute)}: {info['excluded']} image(s) without a value left out</li>")
    figure = _Figure("Subgroups", _figure_png(subgroup_figure(sections, run.metrics.get("mean", {}).get("auc"))),
                     "Mean AUC per subgroup with its bootstrap interval; dashed: all images.")
    intro = ("<p>True-positive-rate gap: the largest minus the smallest sensitivity over a class's subgroups at "
             "the decision thresholds (CheXclusion's under-diagnosis measure).</p>")
    return _section("subgroups", "Subgroups", intro + table + _img(figure) + (f"<ul>{''.join(gaps)}</ul>" if gaps else ""))


def _label_distribution(run: _Run) -> str:
    files = RunFiles(run.path)
    pair = [_img(_Figure(title, data), "figure") for data, title in (
        (_png(files.label_plot("distribution")), "Training label distribution"),
        (_png(files.label_plot("labels_per_image")), "Labels per image")) if data is not None]
    cooccurrence = _png(files.label_plot("cooccurrence"))
    if not pair and cooccurrence is None:
        return _section("labels", "Training labels",
                        _absent(f"No label plots ({files.label_plots.relative_to(run.path)}/ is missing); "
                                "training positives per class are the bars in the per-class table."))
    content = f"<div class=\"pair\">{''.join(pair)}</div>" if pair else ""
    if cooccurrence is not None:
        content += _img(_Figure("Label co-occurrence", cooccurrence), "figure wide")
    return _section("labels", "Training labels", content)


def _training(run: _Run) -> str:
    parts = []
    curves = _png(RunFiles(run.path).plot("training_curves"))
    if curves is None:
        curves = _draw_training_curves(run.path)
    if curves is not None:
        parts.append(_img(_Figure("Training curves", curves,
                                  "Training loss and validation metrics per epoch; dashed lines separate stages.")))
    else:
        parts.append(_absent("No training curves: the run folder holds no stage logs."))
    if run.stages:
        rows = "".join(
            f"<tr><th scope=\"row\">{_e(s.get('stage', s['folder']))}</th><td class=\"num\">{_e(s.get('epochs_run', '?'))}</td>"
            f"<td>{_e(s.get('monitor', '?'))}</td><td class=\"num\">{_num(s.get('best_score'), 4)}</td></tr>"
            for s in run.stages)
        parts.append("<table class=\"stages\"><thead><tr><th scope=col>stage</th><th scope=col class=num>epochs</th>"
                     f"<th scope=col>monitor</th><th scope=col class=num>best</th></tr></thead><tbody>{rows}</tbody></table>")
    return _section("training", "Training", "".join(parts))


def _draw_training_curves(run_dir: Path) -> bytes | None:
    import tempfile

    from cxrlt.evaluation.report import plot_training_curves, read_learning_rates, read_training_logs

    logs = read_training_logs(run_dir)
    if logs.empty:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_training_curves(logs, Path(tmp) / "curves.png", read_learning_rates(run_dir))
        return path.read_bytes() if path is not None else None


def _cams(run: _Run) -> str:
    folder = RunFiles(run.path).cams
    shown_name = folder.relative_to(run.path)
    files = [p for p in sorted(folder.rglob("*.png")) if _png(p) is not None] if folder.is_dir() else []
    if not files:
        return _section("cams", "Example class activation maps",
                        _absent(f"No class activation maps: {shown_name}/ holds no PNG overlay for this run."))
    names = [str(p.relative_to(folder).with_suffix("")) for p in files[:_MAX_CAMS]]
    shown = [_img(_Figure(f"class map {name}", p.read_bytes(), name)) for name, p in zip(names, files)]
    note = (_absent(f"Showing the first {_MAX_CAMS} of {len(files)} overlays in {shown_name}/.")
            if len(files) > _MAX_CAMS else "")
    return _section("cams", "Example class activation maps", f"{note}<div class=\"pair\">{''.join(shown)}</div>")


def _configuration(run: _Run) -> str:
    parts = []
    if run.config_text:
        parts.append(f"<details><summary>{RunFiles.CONFIG}</summary><pre>{_e(run.config_text)}</pre></details>")
    if run.environment:
        lines = "\n".join(f"{k}: {v}" for k, v in run.environment.items())
        parts.append(f"<details><summary>{RunFiles(run.path).environment.name}</summary><pre>{_e(lines)}</pre></details>")
    return _section("configuration", "Configuration", "".join(parts) or _absent(f"{RunFiles.CONFIG} is missing."))


_NAV = "<nav>" + "".join(f"<a href=\"#{anchor}\">{title}</a>" for anchor, title in (
    ("classes", "Per-class results"), ("labels", "Training labels"), ("curves", "ROC / PR"),
    ("calibration", "Calibration"), ("training", "Training"), ("cams", "Class maps"),
    ("configuration", "Configuration"))) + "</nav>"

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f5f6f8; color: #1a1a1a;
  font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 28px 48px; }
nav { margin: 0 0 14px; font-size: 13px; }
nav a { color: #0b5cad; text-decoration: none; margin-right: 14px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
.meta { margin: 0 0 18px; color: #555; font-size: 13px; overflow-wrap: anywhere; }
h2 { font-size: 19px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 1px solid #e2e4e8; }
h3 { font-size: 15px; margin: 20px 0 8px; }
section { background: #fff; border: 1px solid #e2e4e8; border-radius: 8px; padding: 18px 20px; margin: 0 0 18px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 12px;
  background: none; border: none; padding: 0; }
.card { background: #fff; border: 1px solid #e2e4e8; border-radius: 8px; padding: 12px 14px; }
.card.headline { border-top: 3px solid #0072B2; }
.card-title { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: #666; }
.card-value { font-size: 26px; font-weight: 600; margin: 2px 0; font-variant-numeric: tabular-nums; }
.card-value.small { font-size: 17px; overflow-wrap: anywhere; }
.card-detail { font-size: 12px; color: #555; overflow-wrap: anywhere; }
.notes { background: #fff8e6; border-color: #f0d68a; }
.notes ul { margin: 0; padding-left: 20px; }
.absent { color: #8a5a00; background: #fff8e6; border-left: 3px solid #f0b429; padding: 8px 12px; margin: 0 0 12px; }
.caption { color: #555; font-size: 13px; margin: 0 0 10px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 8px; border-bottom: 1px solid #e6e6e6; text-align: left; vertical-align: top; }
thead th.num { text-align: right; }
thead th { background: #fafafa; font-weight: 600; border-bottom: 2px solid #ccc; white-space: nowrap; }
tbody th { font-weight: 500; overflow-wrap: anywhere; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.sorted { color: #0072B2; font-size: 10px; }
.ci { display: block; font-size: 11px; color: #666; }
.chip { display: inline-block; border: 1px solid; border-radius: 10px; padding: 0 8px; font-size: 12px;
  background: #fff; font-weight: 600; }
.bar-cell { min-width: 160px; white-space: nowrap; }
.bar { display: inline-block; height: 10px; border-radius: 2px; vertical-align: middle; min-width: 1px; }
.bar-n { margin-left: 6px; font-variant-numeric: tabular-nums; }
table.groups, table.stages { width: auto; min-width: 420px; }
figure { margin: 0 0 16px; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid #eee; }
figure.wide img { max-width: min(100%, 900px); }
figcaption { font-size: 12px; color: #555; margin-top: 4px; }
.pair { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 16px; align-items: start; }
details { margin: 0 0 8px; }
summary { cursor: pointer; font-weight: 600; }
pre { background: #f7f7f7; border: 1px solid #e6e6e6; padding: 10px; overflow-x: auto; font-size: 12px; }
"""
