"""The bad-input matrix: every malformed input gives one paragraph naming the
file / line / key and what was expected, a non-zero exit code, no traceback
(unless --debug) and no output file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from bad_inputs import BAD_FILES, make_dataset, png_bytes, write_config, write_good_images, write_labels
from cli_contract import assert_refused, run_cxrlt
from cxrlt.cli import main
from cxrlt.data.cache import read_cache_info
from cxrlt.data.images import crop_and_resize, decode_image
from cxrlt.data.store import CacheStore
from cxrlt.errors import CxrltError
from cxrlt.labels import CHEXPERT14

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Case:
    """A command line on a bad input and what its error must say."""

    argv: list[str]
    says: list[str]  # fragments the message must contain (the file, the line, the expectation)
    outputs: list[Path] = field(default_factory=list)  # must not exist afterwards
    code: int = 2


def run_case(case: Case, capsys) -> str:
    code = main(case.argv)
    captured = capsys.readouterr()
    assert code == case.code, captured.err
    err = captured.err
    assert "Traceback" not in err and "Traceback" not in captured.out
    command = case.argv[0]
    assert err.startswith(f"cxrlt {command}: error: "), err
    for fragment in case.says:
        assert fragment in err, (fragment, err)
    for path in case.outputs:
        assert not path.exists(), path
    return err


# ----------------------------------------------------------------- label files
NIH_HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position"
NIH_ROWS = ["a.png,Atelectasis,0,1,58,M,PA", "b.png,No Finding,0,2,60,F,AP", "c.png,Mass|Nodule,1,2,61,F,PA"]
CHEXPERT_HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT14)
CHEXPERT_ROW = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP," + ",".join(
    ["1.0", ""] + ["0.0"] * 11 + ["-1.0"]
)


def nih_file(tmp_path: Path, header: str = NIH_HEADER, rows: list[str] = NIH_ROWS) -> Path:
    path = tmp_path / "Data_Entry_2017.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def chexpert_file(tmp_path: Path, header: str = CHEXPERT_HEADER, rows: list[str] | None = None) -> Path:
    path = tmp_path / "train.csv"
    rows = rows if rows is not None else [CHEXPERT_ROW, CHEXPERT_ROW.replace("patient00001", "patient00002")]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def generic_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def stats(source: str, labels: Path, tmp_path: Path) -> list[str]:
    return ["stats", "--source", source, "--labels", str(labels), "--json", str(tmp_path / "stats.json")]


def label_cases(tmp_path: Path) -> dict[str, Case]:
    out = [tmp_path / "stats.json"]
    nih_missing = nih_file(tmp_path, NIH_HEADER.replace("Finding Labels,", ""), [r.split(",", 2)[0] + "," + r.split(",", 2)[2] for r in NIH_ROWS])
    cases = {
        "nih missing column": Case(stats("nih", nih_missing, tmp_path), [str(nih_missing), "line 1", "'Finding Labels'"], out),
    }
    (tmp_path / "renamed").mkdir()
    renamed = nih_file(tmp_path / "renamed", NIH_HEADER.replace("Patient ID", "Patient_Nr"))
    cases["nih renamed column"] = Case(stats("nih", renamed, tmp_path), [str(renamed), "line 1", "'Patient ID'", "renamed?"], out)
    (tmp_path / "dup").mkdir()
    duplicated = nih_file(tmp_path / "dup", rows=NIH_ROWS + ["b.png,Mass,1,3,40,M,PA"])
    cases["nih duplicate ids"] = Case(stats("nih", duplicated, tmp_path), [str(duplicated), "must be unique", "'b.png'", "line 3", "line 5"], out)
    (tmp_path / "unknown").mkdir()
    unknown = nih_file(tmp_path / "unknown", rows=NIH_ROWS + ["d.png,Atelectasis|Covid,0,4,40,M,PA"])
    cases["nih unknown finding"] = Case(stats("nih", unknown, tmp_path), [str(unknown), "line 5", "unknown finding 'Covid'"], out)
    chex_missing = chexpert_file(tmp_path, CHEXPERT_HEADER.replace(",Edema", ",Oedema"))
    cases["chexpert renamed class"] = Case(stats("chexpert", chex_missing, tmp_path), [str(chex_missing), "line 1", "'Edema'"], out)
    (tmp_path / "chex2").mkdir()
    bad_value = chexpert_file(tmp_path / "chex2", rows=[CHEXPERT_ROW, CHEXPERT_ROW.replace("patient00001", "patient00003").replace(",-1.0", ",2")])
    cases["chexpert label outside values"] = Case(
        stats("chexpert", bad_value, tmp_path), [str(bad_value), "line 3", "outside 1, 0, -1 or blank", "'Support Devices' is '2"], out)
    empty = generic_file(tmp_path, "")
    cases["csv empty file"] = Case(stats("csv", empty, tmp_path), [str(empty), "is empty", "header line"], out)
    (tmp_path / "h").mkdir()
    header_only = generic_file(tmp_path / "h", "path,Atelectasis\n")
    cases["csv header only"] = Case(stats("csv", header_only, tmp_path), [str(header_only), "no data rows"], out)
    (tmp_path / "d").mkdir()
    dup_paths = generic_file(tmp_path / "d", "path,Atelectasis\nx.png,1\ny.png,0\nx.png,0\n")
    cases["csv duplicate ids"] = Case(stats("csv", dup_paths, tmp_path), [str(dup_paths), "must be unique", "'x.png'", "line 2", "line 4"], out)
    (tmp_path / "v").mkdir()
    outside = generic_file(tmp_path / "v", "path,Atelectasis,Mass\nx.png,1,0\ny.png,-1,1\n")
    cases["csv uncertain label"] = Case(stats("csv", outside, tmp_path), [str(outside), "line 3", "'Atelectasis'", "-1 marks an uncertain label"], out)
    (tmp_path / "w").mkdir()
    no_path = generic_file(tmp_path / "w", "file,Atelectasis\nx.png,1\n")
    cases["csv missing path column"] = Case(stats("csv", no_path, tmp_path), [str(no_path), "line 1", "'path'", "the header has: file, Atelectasis"], out)
    (tmp_path / "f").mkdir()
    short = generic_file(tmp_path / "f", "path,Atelectasis,Mass\nx.png,1,0\ny.png,1\n")
    cases["csv truncated row"] = Case(stats("csv", short, tmp_path), [str(short), "line 3", "wrong number of fields", "2 fields"], out)
    absent = tmp_path / "nowhere.csv"
    cases["missing label file"] = Case(stats("csv", absent, tmp_path), [str(absent), "file not found"], out)
    return cases


LABEL_CASES = [
    "nih missing column", "nih renamed column", "nih duplicate ids", "nih unknown finding", "chexpert renamed class",
    "chexpert label outside values", "csv empty file", "csv header only", "csv duplicate ids", "csv uncertain label",
    "csv missing path column", "csv truncated row", "missing label file",
]


@pytest.mark.parametrize("name", LABEL_CASES)
def test_bad_label_files(tmp_path: Path, capsys, name: str):
    run_case(label_cases(tmp_path)[name], capsys)


# ----------------------------------------------------------------- predictions
def evaluate(tmp_path: Path, predictions: str, labels: str = "image_id,A,B\nx,1,0\ny,0,1\nz,1,1\n") -> Case:
    pred = tmp_path / "pred.csv"
    pred.write_text(predictions)
    label = tmp_path / "labels.csv"
    label.write_text(labels)
    out = tmp_path / "metrics.json"
    plots = tmp_path / "plots"
    return Case(["evaluate", "--predictions", str(pred), "--labels", str(label), "--json", str(out), "--plots", str(plots)],
                [], [out, plots])


PREDICTION_CASES = {
    "NaN probability": ("image_id,A,B\nx,0.1,0.2\ny,nan,0.3\nz,0.5,0.5\n", None, ["pred.csv", "line 3", "'A'", "'y'", "blank or NaN"]),
    "probability above 1": ("image_id,A,B\nx,0.1,0.2\ny,0.2,1.5\nz,0.5,0.5\n", None, ["pred.csv", "line 3", "1.5", "[0, 1]"]),
    "text probability": ("image_id,A,B\nx,0.1,0.2\ny,high,0.3\nz,0.5,0.5\n", None, ["pred.csv", "line 3", "'high'", "numbers"]),
    "ids do not match": ("image_id,A,B\nx,0.1,0.2\ny,0.2,0.3\nw,0.5,0.5\n", None,
                         ["pred.csv", "labels.csv", "1 of the 3 predicted ids have no labels", "'w'", "'z'"]),
    "classes do not match": ("image_id,A,C\nx,0.1,0.2\ny,0.2,0.3\nz,0.5,0.5\n", None,
                             ["labels.csv", "no column for 1 of the 2 classes", "'C'"]),
    "duplicate prediction ids": ("image_id,A,B\nx,0.1,0.2\nx,0.2,0.3\nz,0.5,0.5\n", None, ["pred.csv", "'x'", "lines 2, 3", "unique"]),
    "empty predictions": ("", None, ["pred.csv", "empty", "header line"]),
    "label outside values": ("image_id,A,B\nx,0.1,0.2\ny,0.2,0.3\nz,0.5,0.5\n", "image_id,A,B\nx,1,0\ny,-1,1\nz,1,1\n",
                             ["labels.csv", "line 3", "-1", "uncertainty policy"]),
    "no id column": ("name,A,B\nx,0.1,0.2\n", None, ["pred.csv", "line 1", "no id column", "--id-column"]),
}


@pytest.mark.parametrize("name", list(PREDICTION_CASES))
def test_bad_prediction_tables(tmp_path: Path, capsys, name: str):
    predictions, labels, says = PREDICTION_CASES[name]
    case = evaluate(tmp_path, predictions, *([labels] if labels else []))
    case.says = says
    run_case(case, capsys)


# --------------------------------------------------------------------- configs
def good_config(tmp_path: Path) -> dict:
    config, _, _ = make_dataset(tmp_path / "data", bad=False)
    return yaml.safe_load(config.read_text())


CONFIG_CASES = {
    "unknown key": (lambda c: c["data"]["images"].update(colour="gray"), ["data.images.colour", "unknown key"]),
    "wrong type": (lambda c: c.update(train={"epochs": "many"}), ["train.epochs", "'many'", "integer"]),
    "unknown component": (lambda c: c.update(loss={"name": "hinge"}), ["hinge"]),
    "bad component parameter": (lambda c: c.update(loss={"name": "focal", "gama": 2}), ["gama"]),
}


@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_bad_train_config_names_the_key_and_writes_no_run(tmp_path: Path, capsys, name: str):
    raw = good_config(tmp_path)
    edit, says = CONFIG_CASES[name]
    edit(raw)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    run_case(Case(["train", str(path), "--out", str(run), "--no-progress"], [str(path), *says], [run]), capsys)


@pytest.mark.parametrize("command", ["prepare", "check"])
def test_data_commands_refuse_bad_config_keys(tmp_path: Path, capsys, command: str):
    raw = good_config(tmp_path)
    raw["data"]["images"]["size"] = "large"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / ("cache" if command == "prepare" else "bad.json")
    run_case(Case([command, str(path), "--out", str(out)], [str(path), "data.images.size", "'large'"], [out]), capsys)


def test_yaml_syntax_error_names_the_line(tmp_path: Path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("name: x\ndata:\n  sources: [\n  images: {size: 16\n")
    run_case(Case(["train", str(path), "--out", str(tmp_path / "run")], [str(path), "line", "not valid YAML"],
                  [tmp_path / "run"]), capsys)


# ---------------------------------------------------------------------- images
@pytest.mark.parametrize("bad_name", list(BAD_FILES))
def test_prepare_stops_on_a_bad_image_naming_it_and_leaves_no_usable_cache(tmp_path: Path, capsys, bad_name: str):
    config, good, _ = make_dataset(tmp_path)
    labels = write_labels(tmp_path / "one_bad.csv", good + [bad_name])
    config = write_config(tmp_path / "one_bad.yaml", labels, tmp_path / "images")
    out = tmp_path / "cache"
    err = run_case(Case(["prepare", str(config), "--out", str(out), "--workers", "0", "--quiet"],
                        ["1 of 7 images cannot be decoded", str(tmp_path / "images" / bad_name), BAD_FILES[bad_name],
                         "--skip-bad"]), capsys)
    assert len(err.strip().splitlines()) == 2  # the paragraph, then the one listed file
    info = read_cache_info(out)
    assert not info.complete and info.finished == len(good)
    with pytest.raises(CxrltError, match="incomplete"):
        CacheStore(out, info.image_ids, 16)


def test_16_bit_and_rgba_images_are_read_not_refused(tmp_path: Path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    gray = np.random.default_rng(1).integers(0, 256, (30, 20), dtype=np.uint8)
    gray[0, 0], gray[0, 1] = 0, 255  # full range: 16-bit v * 257 scales back to v exactly
    (images / "deep.png").write_bytes(png_bytes(gray.astype(np.uint16) * 257))
    (images / "alpha.png").write_bytes(png_bytes(np.dstack([gray, gray, gray, np.full_like(gray, 7)]), "RGBA"))
    (images / "plain.png").write_bytes(png_bytes(gray))
    labels = write_labels(tmp_path / "labels.csv", ["deep.png", "alpha.png", "plain.png"])
    config = write_config(tmp_path / "run.yaml", labels, images)
    assert main(["prepare", str(config), "--out", str(tmp_path / "cache"), "--workers", "0", "--quiet"]) == 0
    capsys.readouterr()
    for name in ("deep.png", "alpha.png"):
        np.testing.assert_array_equal(decode_image(images / name), gray)
    store = CacheStore(tmp_path / "cache", ["deep.png", "alpha.png", "plain.png"], 16)
    expected = crop_and_resize(gray, 16)
    for row in range(3):
        np.testing.assert_array_equal(store[row], expected)


# ------------------------------------------------------------ debug, processes
def test_debug_shows_the_traceback(tmp_path: Path):
    absent = tmp_path / "nowhere.csv"
    with pytest.raises(CxrltError, match="file not found"):
        main(["--debug", "stats", "--source", "csv", "--labels", str(absent)])


def test_real_process_exit_code_and_stderr(tmp_path: Path):
    labels = generic_file(tmp_path, "path,Atelectasis\nx.png,1\nx.png,0\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-m", "cxrlt", "stats", "--source", "csv", "--labels", str(labels),
                             "--json", str(tmp_path / "out.json")], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("cxrlt stats: error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(labels) in result.stderr
    assert not (tmp_path / "out.json").exists()


def test_a_reader_that_stops_early_gets_no_traceback():
    # `cxrlt methods | head -1`: the pipe closes before cxrlt has written its table
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen([sys.executable, "-m", "cxrlt", "methods"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait() == 141, stderr
    assert stderr == ""



# ======================================================================================================
# Hostile or odd input that used to hang, dump megabytes, trace back or be silently misread. Every test
# below goes through the contract helper (tests/cli_contract.py).
# ======================================================================================================
def _alias_bomb(levels: int) -> tuple[list[str], str]:
    """YAML lines of nested aliases: level k repeats level k-1 nine times (9**levels values); its last anchor."""
    names = "abcdefghijkl"[:levels]
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['lol'] * 9)}]"]
    lines += [f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]" for prev, name in zip(names, names[1:])]
    return lines, names[-1]


def _bomb_config(tmp_path: Path, levels: int) -> Path:
    lines, last = _alias_bomb(levels)
    path = tmp_path / "bomb.yaml"
    data = f"data: {{sources: [{{name: csv, labels: labels.csv}}], classes: *{last}}}"
    path.write_text("\n".join([*lines, data]) + "\n")
    return path


def test_yaml_alias_bomb_is_refused_at_once(tmp_path: Path):
    # 9**8 = 43 million values: validating (and quoting) them ran for minutes and took gigabytes.
    config = _bomb_config(tmp_path, 8)
    assert_refused(["check", config], [str(config), "line 2", "aliases", "more than 100,000 values"], keep=[tmp_path],
                   process=True, timeout=30, memory=3 * 2**30)


def test_yaml_small_alias_bomb_gives_a_short_message(tmp_path: Path):
    # 9**4 = 6,561 values: under the bound, so validated; the message quotes the bad value cut short.
    config = _bomb_config(tmp_path, 4)
    says = [str(config), "data.classes", "(got [[['lol', 'lol',", "and 2 more problem(s)"]
    message = assert_refused(["check", config], says, keep=[tmp_path])
    assert len(message) < 1500


def test_yaml_long_value_is_cut_in_the_message(tmp_path: Path):
    raw = good_config(tmp_path)
    raw["data"]["images"]["size"] = "x" * 200_000
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    message = assert_refused(["check", path], [str(path), "data.images.size", "'xxxx", "...", "integer"],
                             keep=[tmp_path])
    assert len(message) < 600


def test_yaml_nested_too_deeply_and_self_containing(tmp_path: Path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("data: " + "[" * 20_000 + "]" * 20_000 + "\n")
    assert_refused(["check", deep], [str(deep), "nested too deeply"], keep=[tmp_path])
    loop = tmp_path / "loop.yaml"
    loop.write_text("name: x\ndata:\n  sources: [{name: csv, labels: l.csv}]\n  classes: &c [A, *c]\n")
    assert_refused(["check", loop], [str(loop), "line 4", "contains an alias of itself"], keep=[tmp_path])


def test_yaml_aliases_within_the_bound_still_work(tmp_path: Path):
    from cxrlt.config import load_data_config

    raw = good_config(tmp_path)
    text = yaml.safe_dump(raw).replace("images:\n", "images: &images\n", 1)
    path = tmp_path / "run.yaml"
    path.write_text(text + "extra: *images\n")
    assert load_data_config(path).images.size == 16


# ------------------------------------------------------------------ output paths are checked first
def _tables(tmp_path: Path) -> dict[str, Path]:
    """Prediction tables, their labels and a generic label CSV, for the output-path cases."""
    files = {
        "pred": "image_id,A,B\nx,0.1,0.2\ny,0.7,0.3\nz,0.5,0.9\n",
        "pred2": "image_id,A,B\nx,0.3,0.1\ny,0.6,0.4\nz,0.2,0.8\n",
        "labels": "image_id,A,B\nx,1,0\ny,0,1\nz,1,1\n",
        "generic": "path,Atelectasis,Mass\na.png,1,0\nb.png,0,1\n",
    }
    paths = {}
    for name, text in files.items():
        paths[name] = tmp_path / f"{name}.csv"
        paths[name].write_text(text)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("the user's file\n")
    return paths


def _output_cases(tmp_path: Path) -> dict[str, tuple[list, list[str]]]:
    t = _tables(tmp_path)
    folder, under_file = tmp_path / "taken", t["generic"] / "x.json"
    evaluate = ["evaluate", "--predictions", t["pred"], "--labels", t["labels"]]
    stats = ["stats", "--source", "csv", "--labels", t["generic"]]
    return {
        "evaluate --json a folder": ([*evaluate, "--json", folder], ["--json", str(folder), "is a folder"]),
        "evaluate --json the labels file": ([*evaluate, "--json", t["labels"]], ["--json", "is also an input"]),
        "evaluate --plots a file": ([*evaluate, "--json", tmp_path / "m.json", "--plots", t["pred2"]],
                                    ["--plots", "is a file"]),
        "ensemble --out a folder": (["ensemble", t["pred"], t["pred2"], "--out", folder], ["--out", "is a folder"]),
        "ensemble --out a member": (["ensemble", t["pred"], t["pred2"], "--out", t["pred2"]], ["is also an input"]),
        "compare --out a file": (["compare", t["pred"], t["pred2"], "--labels", t["labels"], "--resamples", "10",
                                  "--out", t["pred"]], ["--out", "is a file"]),
        "stats --json a folder": ([*stats, "--json", folder], ["--json", "is a folder"]),
        "stats --json under a file": ([*stats, "--json", under_file], [str(t["generic"]), "is a file, so no folder"]),
        "stats --label-model a folder": ([*stats, "--label-model", folder], ["--label-model", "is a folder"]),
        # the check comes first: these inputs need not even exist
        "report --out a folder": (["report", tmp_path / "run", "--out", folder], ["--out", "is a folder"]),
        "labels graph --out a folder": (["labels", "graph", "--config", tmp_path / "run.yaml", "--out", folder],
                                        ["--out", "is a folder"]),
        "cam --out a file": (["cam", tmp_path / "run", t["pred"], "--out", t["labels"]], ["--out", "is a file"]),
        "localise --out a file": (["localise", tmp_path / "run", t["pred"], folder, "--out", t["labels"]],
                                  ["--out", "is a file"]),
    }


@pytest.mark.parametrize("name", [
    "evaluate --json a folder", "evaluate --json the labels file", "evaluate --plots a file", "ensemble --out a folder",
    "ensemble --out a member", "compare --out a file", "stats --json a folder", "stats --json under a file",
    "stats --label-model a folder", "report --out a folder", "labels graph --out a folder", "cam --out a file",
    "localise --out a file"])
def test_an_unusable_output_path_is_refused_before_any_work(tmp_path: Path, name: str):
    argv, says = _output_cases(tmp_path)[name]
    assert_refused(argv, says, keep=[tmp_path])


def test_check_refuses_an_output_folder_before_scanning(tmp_path: Path):
    config, _, _ = make_dataset(tmp_path / "data", n_good=3, bad=False)
    (tmp_path / "bad.csv").mkdir()
    assert_refused(["check", config, "--out", tmp_path / "bad.csv", "--no-progress"], ["--out", "is a folder"],
                   keep=[tmp_path])


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    import torch

    from cxrlt.config import ModelConfig
    from cxrlt.models.build import build_model
    from cxrlt.inference.saved_model import export_model
    from cxrlt.models.card import ModelCard

    torch.manual_seed(0)
    config = ModelConfig(backbone="resnet10t")
    export_model(build_model(config, 2).eval(), tmp_path / "run",
                 ModelCard(model=config, classes=list(CLASSES_AB), image_size=32, stored_size=32,
                           thresholds=[0.5, 0.5]))
    return tmp_path / "run"


CLASSES_AB = ("A", "B")


def test_predict_refuses_a_folder_as_out_and_clashing_ids_before_scoring(tmp_path: Path, tiny_model: Path):
    gray = np.zeros((20, 20), dtype=np.uint8)
    for folder in ("day1", "day2"):
        (tmp_path / folder / "ward").mkdir(parents=True)
        (tmp_path / folder / "ward" / "a.png").write_bytes(png_bytes(gray))
        (tmp_path / folder / f"{folder}.png").write_bytes(png_bytes(gray))
    out = tmp_path / "predictions.csv"
    assert_refused(["predict", tiny_model, tmp_path / "day1", tmp_path / "day2", "--out", out, "--no-progress"],
                   ["1 image id(s) name two files", "'ward/a.png'", str(tmp_path / "day1" / "ward" / "a.png"),
                    str(tmp_path / "day2" / "ward" / "a.png"), "common parent folder"], keep=[tmp_path])
    assert_refused(["predict", tiny_model, tmp_path / "day1", "--out", tmp_path / "day2", "--no-progress"],
                   ["--out", str(tmp_path / "day2"), "is a folder"], keep=[tmp_path])
    # their common parent gives distinct ids
    assert run_cxrlt(["predict", tiny_model, tmp_path / "day1", tmp_path / "day2" / "day2.png", "--out", out,
                      "--no-progress"]).code == 0
    ids = out.read_text().splitlines()[1:]
    expected = ["day1.png", "ward/a.png", str(tmp_path / "day2" / "day2.png")]
    assert sorted(row.split(",")[0] for row in ids) == sorted(expected)


# ------------------------------------------------------------------ CSV quotes
def _label_lines(n: int) -> list[str]:
    rows = [f"img{i:06d}.png,p{i // 3},{i % 2},{(i // 2) % 2}" for i in range(2, n + 1)]
    return ["path,patient_id,Atelectasis,Mass", *rows]


def _stats_csv(path: Path) -> list:
    return ["stats", "--source", "csv", "--labels", path, "--classes", "Atelectasis,Mass"]


def test_unclosed_quote_is_reported_where_it_was_opened(tmp_path: Path):
    lines = _label_lines(200_000)
    lines[150_000 - 1] = 'img150000.png,"p5,1,0'  # line 150,000 of the file
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    assert_refused(_stats_csv(path), [f"{path}, line 150000:", "quoted field opened on this line is never closed",
                                      "field size limit"], keep=[tmp_path])


def test_unclosed_quote_running_to_the_end_or_closed_lines_later(tmp_path: Path):
    lines = _label_lines(300)
    to_end = tmp_path / "to_end.csv"
    to_end.write_text("\n".join(lines[:200] + ['a.png,"p1,1,0'] + lines[201:240]) + "\n")
    assert_refused(_stats_csv(to_end), [f"{to_end}, line 201:", "never closed", "end of the file"], keep=[tmp_path])
    # Closed by the quote of a later row: the rows between would silently become one value.
    later = tmp_path / "later.csv"
    closed = lines[:200] + ['a.png,"p1,1,0'] + lines[201:240] + ['b.png,"p2",1,1'] + lines[241:]
    later.write_text("\n".join(closed) + "\n")
    assert_refused(_stats_csv(later), [f"{later}, line 201:", "'patient_id'", "line 241"], keep=[tmp_path])


@pytest.mark.parametrize("last_row", ['a.png,"p1,1,0', 'a.png,p1,1,"0'])
def test_unclosed_quote_on_the_last_line_is_named_as_such(tmp_path: Path, last_row: str):
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(_label_lines(20) + [last_row]) + "\n")  # the last row is line 21
    assert_refused(_stats_csv(path), [f"{path}, line 21:", "never closed", "unbalanced quote"], keep=[tmp_path])


def test_a_quote_inside_an_unquoted_field_is_a_character_not_an_open_quote(tmp_path: Path, capsys):
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(_label_lines(20) + ['a.png,p1 "quoted",1,0']) + "\n")
    assert main([str(arg) for arg in _stats_csv(path)] + ["--json", str(tmp_path / "stats.json")]) == 0
    assert '"' not in capsys.readouterr().err


def test_quoted_line_breaks_in_unread_columns_still_read(tmp_path: Path):
    from cxrlt.registry import SOURCES

    path = tmp_path / "labels.csv"
    path.write_text('path,notes,Mass\na.png,"two\nlines",1\nb.png,plain,0\n')
    table = SOURCES.build("csv", labels=path, classes=["Mass"])
    assert table.meta["image_id"].tolist() == ["a.png", "b.png"]
    np.testing.assert_array_equal(table.labels[:, 0], [1, 0])


# ------------------------------------------------------------------ overrides anywhere on the line
def test_overrides_after_options_reach_the_config(tmp_path: Path):
    raw = good_config(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    # the override comes after --out (it was "unrecognized arguments" before)
    assert_refused(["train", path, "--out", run, "--no-progress", "train.epochs=many"],
                   [str(path), "train.epochs", "'many'"], absent=[run], keep=[tmp_path / "data"])


@pytest.mark.parametrize("argv", [
    ["train", "c.yaml", "--out", "D", "a.b=1", "c=2"],
    ["train", "--out", "D", "c.yaml", "a.b=1", "c=2"],
    ["train", "c.yaml", "a.b=1", "--out", "D", "c=2"],
    ["kfold", "c.yaml", "--folds", "3", "a.b=1", "--out", "D", "c=2"],
    ["demo", "a.b=1", "--out", "D", "c=2"],
])
def test_overrides_parse_before_between_and_after_options(argv: list[str]):
    from cxrlt.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.overrides == ["a.b=1", "c=2"] and args.out == "D"
    assert getattr(args, "config", "c.yaml") == "c.yaml"


def _help_examples() -> list[tuple[str, str]]:
    """(command, example line) for every example printed by `cxrlt COMMAND --help`."""
    import contextlib
    import io

    from cxrlt.cli import build_parser
    from cxrlt.commands import COMMANDS

    examples = []
    for name in COMMANDS:
        text = io.StringIO()
        with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
            build_parser().parse_args([name, "--help"])
        shown = text.getvalue().split("\nexample:\n", 1)[1]
        joined = re.sub(r"\\\n\s*", "", shown)  # continuation lines
        examples += [(name, line.strip()) for line in joined.splitlines() if line.strip()]
    return examples


def test_every_help_example_parses():
    import shlex

    from cxrlt.cli import build_parser

    examples = _help_examples()
    assert {name for name, _ in examples} >= {"train", "kfold", "demo", "predict", "evaluate"}
    for name, line in examples:
        argv = shlex.split(line)
        assert argv[:2] == ["cxrlt", name], line
        args = build_parser().parse_args(argv[1:])  # argparse exits on a line it cannot parse
        settings = [a for a in argv[2:] if re.fullmatch(r"[\w.]+=.*", a)]
        if settings:
            assert args.overrides == settings, line


# ------------------------------------------------------------------ classes: declared, confirmed or refused
def test_a_0_1_metadata_column_of_a_generic_csv_is_not_silently_a_class(tmp_path: Path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,portable,Atelectasis,notes\na.png,1,0,x\nb.png,0,1,y\nc.png,1,1,z\n")
    inferred = run_cxrlt(["stats", "--source", "csv", "--labels", labels, "--json", tmp_path / "s.json"])
    assert inferred.code == 0, inferred.err
    assert "2 column(s) were taken as classes from their 0 / 1 / blank values: portable, Atelectasis (not classes: " \
        "notes). 'portable' is not a finding name" in inferred.err and "--classes" in inferred.err
    declared = run_cxrlt(["stats", "--source", "csv", "--labels", labels, "--classes", "Atelectasis",
                          "--json", tmp_path / "d.json"])
    assert declared.code == 0 and "taken as classes" not in declared.err
    payload = json.loads((tmp_path / "d.json").read_text())
    assert list(payload["classes"]) == ["Atelectasis"] and payload["classes"]["Atelectasis"]["positives"] == 2


def test_a_prediction_table_missing_a_labelled_class_is_refused_unless_allowed(tmp_path: Path):
    from sklearn.metrics import roc_auc_score

    t = _tables(tmp_path)
    labels = tmp_path / "labels_abc.csv"
    labels.write_text("image_id,A,B,Hernia,Patient Age\nx,1,0,1,61\ny,0,1,0,45\nz,1,1,,70\n")
    evaluate = ["evaluate", "--predictions", t["pred"], "--labels", labels, "--json", tmp_path / "m.json"]
    assert_refused(evaluate, [str(labels), "1 class(es) the predictions do not score", "'Hernia'",
                              "--allow-missing-classes"], keep=[tmp_path])
    assert_refused(["compare", t["pred"], t["pred2"], "--labels", labels, "--resamples", "10"],
                   [str(labels), "'Hernia'", "--allow-missing-classes"], keep=[tmp_path])
    allowed = run_cxrlt([*evaluate, "--allow-missing-classes"])
    assert allowed.code == 0, allowed.err
    report = json.loads((tmp_path / "m.json").read_text())
    assert list(report["per_class"]) == ["A", "B"]
    probs = {"A": [0.1, 0.7, 0.5], "B": [0.2, 0.3, 0.9]}
    truth = {"A": [1, 0, 1], "B": [0, 1, 1]}
    expected = np.mean([roc_auc_score(truth[c], probs[c]) for c in "AB"])
    assert report["mean"]["auc"] == pytest.approx(expected)


def test_an_option_value_that_is_not_yaml_is_text_not_a_traceback(tmp_path: Path):
    labels = _tables(tmp_path)["generic"]
    # "[Mass" is not YAML: read as the text it is, which `classes` (a list) then refuses by name
    assert_refused(["stats", "--source", "csv", "--labels", labels, "--option", "classes=[Mass"],
                   ["classes", "'[Mass'", "valid list"], keep=[tmp_path])


# ------------------------------------------- special and private files, early scan
SECRET = "root:$6$SECRETsalt$SECREThash:19000:0:99999:7:::"


def test_check_refuses_fifos_and_devices_without_opening_them(tmp_path: Path):
    config, good, _ = make_dataset(tmp_path, n_good=3, bad=False)
    images = tmp_path / "images"
    os.mkfifo(images / "pipe.png")  # opening it for reading would wait for a writer forever
    (images / "zero.png").symlink_to("/dev/zero")  # endless
    labels = write_labels(tmp_path / "special.csv", good + ["pipe.png", "zero.png"])
    config = write_config(tmp_path / "special.yaml", labels, images)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for workers in ("0", "2"):
        result = subprocess.run([sys.executable, "-m", "cxrlt", "check", str(config), "--workers", workers,
                                 "--no-progress"], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert "2 of 5 images cannot be read (2 distinct reasons)" in result.stdout
        assert "is a named pipe (FIFO), not a regular file; refused without reading it" in result.stdout
        assert "is a character device, not a regular file" in result.stdout
        assert str(images / "pipe.png") in result.stdout and str(images / "zero.png") in result.stdout


def test_messages_never_show_the_content_of_files_that_are_not_images(tmp_path: Path, capsys):
    config, good, _ = make_dataset(tmp_path, n_good=3, bad=False)
    images = tmp_path / "images"
    (images / "shadow.png").write_text(SECRET + "\n")  # a label row naming a private file
    # Read as DICOM for its name alone; pydicom's messages would quote the values it parsed.
    (images / "shadow.dcm").write_bytes(b"\x28\x00\x08\x00IS\x0b\x00SECRETxyzzy"
                                        b"\xe0\x7f\x10\x00OW\x00\x00\x04\x00\x00\x00abcd")
    labels = write_labels(tmp_path / "private.csv", good + ["shadow.png", "shadow.dcm"])
    config = write_config(tmp_path / "private.yaml", labels, images)
    assert main(["check", str(config), "--workers", "0", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "SECRET" not in captured.out + captured.err
    assert f"{images / 'shadow.png'}" in captured.out and "is not an image" in captured.out
    assert "content is not shown" in captured.out
    # The same file given as the label table: its first line is not repeated either.
    secret = tmp_path / "shadow"
    secret.write_text(SECRET + "\ndaemon:*:19000:0:99999:7:::\n")
    for source in ("csv", "nih", "chexpert"):
        err = run_case(Case(stats(source, secret, tmp_path), [str(secret), "line 1", "content is not shown"],
                            [tmp_path / "stats.json"]), capsys)
        assert "SECRET" not in err


def test_a_bad_test_image_is_found_when_the_run_data_is_loaded(tmp_path: Path):
    from cxrlt.config import load_config
    from cxrlt.errors import ImageDecodeError
    from cxrlt.training.data import load_run_data

    images = tmp_path / "images"
    names = write_good_images(images, 8)  # rows 0, 1, 4, 5 train; 2, 6 val; 3, 7 test (write_labels)
    cut = images / names[3]
    cut.write_bytes(cut.read_bytes()[:-40])
    labels = write_labels(tmp_path / "labels.csv", names)
    strict = write_config(tmp_path / "strict.yaml", labels, images)
    with pytest.raises(ImageDecodeError) as info:
        load_run_data(load_config(strict))
    message = str(info.value)
    assert message.startswith("1 of the 8 images of the train, val and test splits cannot be read")
    assert f"{cut}: cannot be decoded as PNG" in message and "data.images.skip_bad: true" in message
    skipping = write_config(tmp_path / "skip.yaml", labels, images, skip_bad=True)
    data = load_run_data(load_config(skipping))
    assert data.part("test").image_ids == [names[7]] and len(data.part("train")) == 4


def test_a_bad_image_recorded_in_the_cache_stops_the_run_before_training(tmp_path: Path, capsys):
    from cxrlt.config import load_config
    from cxrlt.errors import ImageDecodeError
    from cxrlt.training.data import load_run_data

    images = tmp_path / "images"
    names = write_good_images(images, 8)  # rows 0, 1, 4, 5 train; 2, 6 val; 3, 7 test (write_labels)
    (images / names[7]).write_bytes(b"")  # a test image
    labels = write_labels(tmp_path / "labels.csv", names)
    cache = tmp_path / "cache"
    config = write_config(tmp_path / "run.yaml", labels, images, cache=str(cache))
    assert main(["prepare", str(config), "--out", str(cache), "--workers", "0", "--quiet", "--skip-bad"]) == 0
    with pytest.raises(ImageDecodeError, match=rf"(?s)recorded as bad when the cache was prepared; listed in "
                                               rf"{cache / 'bad.json'}.*skip_bad: true.*{names[7]}: is empty"):
        load_run_data(load_config(config))

