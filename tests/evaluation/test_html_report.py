"""The HTML run report: its content from hand-made run folders, and how headless Chromium renders it.

Chromium is driven through the DevTools protocol over `--remote-debugging-pipe`
(JSON messages on file descriptors 3 and 4, NUL-terminated), which needs
nothing beyond the standard library. The page itself has no script; the
test's JavaScript runs through the protocol only.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from cxrlt.errors import InputError
from cxrlt.evaluation.html import render_html_report, write_html_report

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if (found := shutil.which(name))), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary on PATH (Debian/Ubuntu: apt-get install chromium)")
# Set to a folder to keep the screenshots the Chromium tests take (to look at them).
SCREENSHOTS = os.environ.get("CXRLT_REPORT_SCREENSHOTS")

HOSTILE = 'Pleural <Effusion> & "fluid"'
CLASSES = ["Atelectasis", HOSTILE, "Hernia"]
TRAIN_POSITIVES = [40, 300, 3]  # sorted order in the table: HOSTILE, Atelectasis, Hernia
GROUPS = ["medium", "head", "tail"]


# --------------------------------------------------------------------------- a hand-made run folder
def _png(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="PNG")
    return path


def _metrics() -> dict[str, Any]:
    per_class = {
        "Atelectasis": {"auc": 0.8125, "ap": 0.41, "f1": 0.3, "f1_tuned": 0.45, "positives": 12, "negatives": 88,
                        "threshold": 0.21, "group": "medium"},
        HOSTILE: {"auc": 0.7, "ap": 0.55, "f1": 0.5, "f1_tuned": 0.6, "positives": 30, "negatives": 70,
                  "threshold": 0.4, "group": "head"},
        "Hernia": {"auc": None, "ap": None, "f1": 0.0, "f1_tuned": 0.0, "positives": 0, "negatives": 100,
                   "threshold": 0.01, "group": "tail"},
    }
    return {
        "split": "test", "n_images": 100, "per_class": per_class,
        "mean": {"auc": 0.75625, "ap": 0.48, "f1": 0.4, "f1_tuned": 0.525, "classes": 3, "evaluated": 2},
        "groups": {"head": {"auc": 0.7, "ap": 0.55, "f1": 0.5, "f1_tuned": 0.6, "classes": 1, "evaluated": 1},
                   "medium": {"auc": 0.8125, "ap": 0.41, "f1": 0.3, "f1_tuned": 0.45, "classes": 1, "evaluated": 1},
                   "tail": {"auc": None, "ap": None, "f1": 0.0, "f1_tuned": 0.0, "classes": 1, "evaluated": 0}},
        "intervals": {
            "level": 0.95, "resamples": 1000, "unit": "patient",
            "per_class": {"Atelectasis": {"auc": [0.7011, 0.9002], "ap": [0.25, 0.6]},
                          HOSTILE: {"auc": [0.61, 0.79], "ap": [0.43, 0.66]},
                          "Hernia": {"auc": [None, None], "ap": [None, None]}},
            "mean": {"auc": [0.69, 0.82], "ap": [0.39, 0.57]},
            "groups": {"head": {"auc": [0.61, 0.79], "ap": [0.43, 0.66]},
                       "medium": {"auc": [0.7011, 0.9002], "ap": [0.25, 0.6]}},
        },
        "calibration": {"ece": {"Atelectasis": 0.031, HOSTILE: 0.0425, "Hernia": 0.002},
                        "mean_ece": 0.0252, "pooled_ece": 0.019, "temperature": 1.37},
    }


def _config(bootstrap: int = 1000) -> dict[str, Any]:
    return {
        "name": "hand <b>made & more",  # markup in a run name (a plain folder name: no "/")
        "data": {"sources": [{"name": "csv", "labels": "labels.csv"}], "split": {"method": "source"},
                 "images": {"size": 64}},
        "model": {"backbone": "resnet10t", "pretrained": True, "pooling": {"name": "avg"},
                  "head": {"name": "linear"}},
        "loss": {"name": "asl", "gamma_neg": 4},
        "train": {"epochs": 5, "batch_size": 16, "sampler": {"name": "instance"},
                  "optimizer": {"name": "adamw", "lr": 0.001}},
        "evaluation": {"bootstrap": bootstrap},
    }


def make_run(folder: Path, bootstrap: int = 1000) -> Path:
    """A run folder with every input the report reads, written by hand."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(_config(bootstrap), sort_keys=False))
    (folder / "metrics.json").write_text(json.dumps(_metrics()))
    val = {"split": "val", "n_images": 80,
           "per_class": {"Atelectasis": {"auc": 0.777}, HOSTILE: {"auc": 0.666}, "Hernia": {"auc": None}}}
    (folder / "metrics_val.json").write_text(json.dumps(val))
    (folder / "model.json").write_text(json.dumps({"model": {"backbone": "resnet10t"}, "classes": CLASSES,
                                                   "image_size": 64, "train_positives": TRAIN_POSITIVES,
                                                   "groups": GROUPS}))
    (folder / "environment.json").write_text(json.dumps({"cxrlt": "0.1.0", "python": "3.11"}))
    stage = folder / "stages" / "01-main"
    stage.mkdir(parents=True)
    (stage / "done.json").write_text(json.dumps({"stage": "main", "epochs_run": 5, "best_score": 0.7712,
                                                 "monitor": "val/auc"}))
    plots = folder / "plots"
    for index, name in enumerate(("roc", "pr", "per_class", "reliability", "training_curves")):
        _png(plots / f"{name}.png", (320 + 10 * index, 200), (30 * index, 90, 160))
    for name in ("label_distribution", "labels_per_image", "cooccurrence"):
        _png(plots / "train_labels" / f"{name}.png", (300, 220), (200, 120, 40))
    _png(plots / "cams" / "00000001_000_Atelectasis.png", (460, 240), (10, 10, 10))
    return folder


# --------------------------------------------------------------------------- reading the page back
class _Page(HTMLParser):
    """Tags with their attributes, and the text cells of every table row."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data + " ")


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def _row(page: _Page, first_cell: str) -> list[str]:
    matches = [r for r in page.rows if r and r[0] == first_cell]
    assert len(matches) == 1, (first_cell, [r[0] for r in page.rows if r])
    return matches[0]


# --------------------------------------------------------------------------- content
def test_page_is_self_contained_escaped_and_embeds_every_plot(tmp_path):
    run = make_run(tmp_path / "run")
    path = write_html_report(run)
    assert path == run / "report.html"
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    # nothing to fetch: no script, no stylesheet link, no external address anywhere
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object", "embed")]
    assert "http://" not in text and "https://" not in text and "//" not in re.sub(r"data:[^\"]+", "", text)
    assert all(a.get("href", "#").startswith("#") for _, a in page.tags)
    images = [a for t, a in page.tags if t == "img"]
    assert all(a["src"].startswith("data:image/png;base64,") for a in images)
    # every PNG of the folder is embedded byte for byte (plus none invented)
    embedded = sorted(base64.b64decode(a["src"].split(",", 1)[1]) for a in images)
    on_disk = sorted(p.read_bytes() for p in (run / "plots").rglob("*.png"))
    assert embedded == on_disk
    # text from users is escaped, never markup
    assert "<b>made" not in text and "hand &lt;b&gt;made &amp; more" in text
    assert HOSTILE not in text and "Pleural &lt;Effusion&gt; &amp; &quot;fluid&quot;" in text
    assert HOSTILE in [r[0] for r in page.rows if r]


def test_class_table_is_sorted_by_training_positives_with_intervals_and_calibration(tmp_path):
    page = parse(render_html_report(make_run(tmp_path / "run")))
    header = next(r for r in page.rows if r and r[0] == "class")
    assert header == ["class", "group", "train positives ▼", "test positives", "AUC", "AP", "val AUC", "F1@0.5",
                      "F1@tuned", "threshold", "ECE"]
    body = [r for r in page.rows if r and r[0] in CLASSES]
    assert [r[0] for r in body] == [HOSTILE, "Atelectasis", "Hernia"]  # 300, 40, 3 training positives
    assert _row(page, "Atelectasis") == ["Atelectasis", "medium", "40", "12", "0.812 0.701–0.900",
                                         "0.410 0.250–0.600", "0.777", "0.300", "0.450", "0.2100", "0.031"]
    # undefined metrics and intervals read n/a, without an interval
    assert _row(page, "Hernia")[4:7] == ["n/a", "n/a", "n/a"]
    # group means with their intervals; a group without an interval shows the value alone
    assert _row(page, "all classes") == ["all classes", "2 of 3", "0.756 0.690–0.820", "0.480 0.390–0.570", "0.525"]
    assert _row(page, "head")[1:4] == ["1 of 1", "0.700 0.610–0.790", "0.550 0.430–0.660"]
    assert _row(page, "tail")[1:4] == ["0 of 1", "n/a", "n/a"]
    text = " ".join(" ".join(page.text).split())
    assert "under AUC and AP: their 95% bootstrap intervals (1000 resamples by patient)." in text
    assert "mean ECE over classes 0.025 · pooled ECE (all classes' predictions together) 0.019 · temperature 1.37 fitted on validation" in text
    # rows are tinted by group and bars are proportional to training positives (largest 120 px)
    bars = re.findall(r'class="bar" style="width:([0-9.]+)px', render_html_report(tmp_path / "run"))
    assert [float(w) for w in bars] == [120.0, 16.0, 1.2]


def test_summary_cards_show_setup_and_headline_numbers(tmp_path):
    page = parse(render_html_report(make_run(tmp_path / "run")))
    text = " ".join(" ".join(page.text).split())
    assert "Dataset csv 3 classes · test: 100 images; val: 80 images · split source" in text
    assert "Model resnet10t pretrained · pooling avg · head linear · 64 px" in text
    assert "Loss asl gamma_neg=4 · sampler instance" in text
    assert "Training 5 epochs in 1 stage adamw (lr=0.001) · schedule n/a · batch 16" in text
    assert "Mean AUC 0.756 95% CI 0.690–0.820 95% bootstrap intervals (1000 resamples by patient) over 2 of 3 classes" \
        in text
    assert "mAP 0.480 95% CI 0.390–0.570" in text
    assert "Mean F1 0.525 at thresholds tuned on validation" in text
    assert "Mean ECE 0.025 pooled ECE 0.019 (as predicted) · temperature 1.37" in text
    assert "AUC and AP are undefined (no positive or no negative in the test split) and left out of the means " \
           "for: Hernia." in text


@pytest.mark.parametrize("bootstrap, reason", [
    (0, "No confidence intervals: evaluation.bootstrap was 0."),
    (1000, "No confidence intervals: metrics.json has no `intervals` section"),
])
def test_absent_inputs_are_named_not_silently_dropped(tmp_path, bootstrap, reason):
    run = make_run(tmp_path / "run", bootstrap=bootstrap)
    metrics = _metrics()
    del metrics["intervals"], metrics["calibration"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    for name in ("reliability.png", "training_curves.png"):
        (run / "plots" / name).unlink()
    shutil.rmtree(run / "plots" / "cams")
    shutil.rmtree(run / "plots" / "train_labels")
    page = parse(render_html_report(run))
    text = " ".join(" ".join(page.text).split())
    assert reason in text
    for message in ("No calibration measures: metrics.json has no `calibration` section.",
                    "No class activation maps: plots/cams/ holds no PNG overlay for this run.",
                    "No training curves: the run folder holds no stage logs.",
                    "No label plots (plots/train_labels/ is missing)"):
        assert message in text
    header = next(r for r in page.rows if r and r[0] == "class")
    assert "ECE" not in header
    assert _row(page, "Atelectasis")[4:6] == ["0.812", "0.410"]  # values without intervals


def test_class_maps_are_embedded_by_name_up_to_a_cap(tmp_path):
    from cxrlt.evaluation.html import _MAX_CAMS

    run = make_run(tmp_path / "run")
    for index in range(_MAX_CAMS + 5):
        _png(run / "plots" / "cams" / f"img{index:02d}" / "Hernia.png", (40, 20), (index, 0, 0))
    (run / "plots" / "cams" / "not_a_png.png").write_text("<svg/>")
    page = parse(render_html_report(run))
    maps = [a["alt"] for t, a in page.tags if t == "img" and a["alt"].startswith("class map ")]
    assert len(maps) == _MAX_CAMS
    # sorted by path, named by their path under plots/cams
    assert maps[:2] == ["class map 00000001_000_Atelectasis", "class map img00/Hernia"]
    text = " ".join(" ".join(page.text).split())
    assert f"Showing the first {_MAX_CAMS} of {_MAX_CAMS + 6} overlays in plots/cams/." in text


def test_training_curves_are_drawn_from_the_logs_when_the_plot_is_missing(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "plots" / "training_curves.png").unlink()
    log = run / "stages" / "01-main" / "logs" / "metrics.csv"
    log.parent.mkdir(parents=True)
    log.write_text("epoch,step,train/loss_epoch,val/auc,val/map\n0,10,0.9,0.6,0.2\n1,20,0.7,0.7,0.3\n")
    page = parse(render_html_report(run))
    titles = [a["alt"] for t, a in page.tags if t == "img"]
    assert "Training curves" in titles


def test_missing_curves_are_drawn_from_predictions_and_the_runs_labels(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    for name in ("roc.png", "pr.png"):
        (run / "plots" / name).unlink()
    rng = np.random.default_rng(0)
    ids = [f"img{i:03d}.png" for i in range(40)]
    labels = rng.integers(0, 2, size=(40, 3)).astype(float)
    labels[5, 1] = np.nan
    probs = rng.random((40, 3))
    import pandas as pd

    from cxrlt.evaluation.predictions import write_labels

    write_labels(run / "labels.csv", ids[20:], CLASSES, labels[20:])  # the run's saved test labels
    test_rows = np.arange(20, 40)[::-1]  # predictions in another order than the labels
    pd.DataFrame({"image_id": [ids[i] for i in test_rows],
                  **{c: probs[test_rows, j] for j, c in enumerate(CLASSES)}}).to_csv(run / "predictions.csv",
                                                                                     index=False)
    seen: dict[str, Any] = {}

    import cxrlt.evaluation.plots as plots

    def spy(name, real):
        def figure(labels, probs, classes, groups=None):
            seen[name] = (labels, probs, list(classes), groups)
            return real(labels, probs, classes, groups)
        return figure

    monkeypatch.setattr(plots, "roc_figure", spy("roc", plots.roc_figure))
    monkeypatch.setattr(plots, "pr_figure", spy("pr", plots.pr_figure))
    text = render_html_report(run)
    page = parse(text)
    titles = [a["alt"] for t, a in page.tags if t == "img"]
    assert "ROC curves" in titles and "Precision-recall curves" in titles
    assert "the curves below were drawn from predictions.csv and labels.csv" in text
    got_labels, got_probs, classes, groups = seen["roc"]
    assert classes == CLASSES and groups == ["medium", "head", "tail"]
    # rows follow the prediction table, each matched to its labels by image id
    np.testing.assert_array_equal(got_probs, probs[test_rows])
    np.testing.assert_array_equal(got_labels, labels[test_rows].astype(np.float32))


def test_missing_curves_without_labels_say_why(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "plots" / "roc.png").unlink()
    (run / "predictions.csv").write_text("image_id,Atelectasis\nx,0.5\n")
    text = " ".join(render_html_report(run).split())
    assert "ROC and PR curves cannot be drawn: the plots are missing and the labels could not be read or matched" in text
    assert "labels.csv" in text  # the label file that could not be found is named


def test_a_folder_without_metrics_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="has no metrics.json"):
        write_html_report(tmp_path)
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="per_class"):
        write_html_report(tmp_path)


def test_cli_writes_the_report_where_asked(tmp_path):
    run = make_run(tmp_path / "run")
    out = tmp_path / "elsewhere" / "page.html"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "cxrlt", "report", str(run), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == render_html_report(run)
    assert not (run / "report.html").exists()
    bad = subprocess.run([sys.executable, "-m", "cxrlt", "report", str(tmp_path / "nowhere")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "is not a folder" in bad.stderr and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- rendering in Chromium
class DevTools:
    """A headless Chromium driven over the DevTools protocol pipe (fd 3: commands in, fd 4: messages out)."""

    FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-pipe")

    def __init__(self, binary: str, profile: Path) -> None:
        command_read, self._command_write = os.pipe()
        self._message_read, message_write = os.pipe()

        def wire_pipes() -> None:  # in the child, before exec: the protocol's fixed descriptors
            os.dup2(command_read, 3)
            os.dup2(message_write, 4)

        self._stderr = open(profile.parent / "chromium.log", "wb")
        self.process = subprocess.Popen(
            [binary, *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4, command_read, message_write), preexec_fn=wire_pipes,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr)
        os.close(command_read)
        os.close(message_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._message_read], [], [], left)
            if ready:
                chunk = os.read(self._message_read, 1 << 20)
                if not chunk:
                    raise EOFError("Chromium closed the DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept in `events`."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._command_write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict[str, Any]:
        """The first event named `method` (already received or still to come)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self._receive(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (EOFError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._command_write)
        os.close(self._message_read)
        self._stderr.close()


def render_in_chromium(page: Path, tmp_path: Path, width: int = 1280) -> dict[str, Any]:
    """Open `page` in headless Chromium; report its images, problems, network requests and a full-page screenshot."""
    browser = DevTools(CHROMIUM, tmp_path / "chromium-profile")
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        probe = ("JSON.stringify({images: Array.from(document.images).map(i => "
                 "({alt: i.alt, complete: i.complete, width: i.naturalWidth, shown: i.getBoundingClientRect().width})),"
                 " scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,"
                 " title: document.title})")
        found = json.loads(browser.call("Runtime.evaluate", {"expression": probe, "returnByValue": True},
                                        session=session)["result"]["value"])
        size = browser.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = browser.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}}, session=session)
    finally:
        browser.close()
    problems = []
    for event in browser.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
            problems.append(f"console {params['type']}: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            problems.append(f"exception: {params.get('exceptionDetails')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
            problems.append(f"log {params['entry']['level']}: {params['entry'].get('text')}")
        elif method == "Network.loadingFailed":
            problems.append(f"failed to load: {params.get('errorText')}")
    requests = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    return {**found, "problems": problems, "requests": requests, "screenshot": base64.b64decode(shot["data"])}


def _check_rendering(report: Path, tmp_path: Path, name: str) -> dict[str, Any]:
    result = render_in_chromium(report, tmp_path)
    assert result["problems"] == []
    tags = [a for t, a in parse(report.read_text(encoding="utf-8")).tags if t == "img"]
    assert len(result["images"]) == len(tags) > 0
    for image in result["images"]:
        assert image["complete"] and image["width"] > 0 and image["shown"] > 0, image
    # only the page itself and its embedded images: nothing fetched from anywhere
    assert all(url == report.resolve().as_uri() or url.startswith("data:image/png;base64,")
               for url in result["requests"]), [u[:80] for u in result["requests"]]
    assert result["scrollWidth"] <= result["innerWidth"]  # nothing wider than a 1280-px window
    screenshot = Image.open(io.BytesIO(result["screenshot"]))
    assert screenshot.width == result["scrollWidth"] and screenshot.height > 1000
    assert len(screenshot.convert("L").getcolors(1 << 16) or []) > 20  # more than a blank page
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        (Path(SCREENSHOTS) / f"{name}.png").write_bytes(result["screenshot"])
    return result


@needs_chromium
def test_chromium_renders_the_report_with_all_images_and_no_errors(tmp_path):
    report = write_html_report(make_run(tmp_path / "run"))
    result = _check_rendering(report, tmp_path, "hand_made")
    assert result["title"] == "cxrlt run: hand <b>made & more"
    assert len(result["images"]) == 9


@needs_chromium
@pytest.mark.slow
def test_a_real_run_ends_with_a_report_that_chromium_renders(tmp_path, one_thread):
    from cxrlt.config import parse_config
    from cxrlt.runs.train import train

    from tiny_runs import tiny_config

    config = parse_config(tiny_config(tmp_path / "synthetic", epochs=1))
    run = train(config, tmp_path / "run", progress=False).run_dir
    report = run / "report.html"
    assert report.is_file()
    text = report.read_text(encoding="utf-8")
    assert "No confidence intervals: evaluation.bootstrap was 0." in text
    metrics = json.loads((run / "metrics.json").read_text())
    first = next(iter(metrics["per_class"]))
    assert f"{metrics['per_class'][first]['auc']:.3f}" in _row(parse(text), first)[4]
    result = _check_rendering(report, tmp_path, "tiny_run")
    alts = [image["alt"] for image in result["images"]]
    assert {"ROC curves", "Precision-recall curves", "Training curves", "Training label distribution"} <= set(alts)
