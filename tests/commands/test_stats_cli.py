"""`cxrlt stats`: JSON contract, printed table, --config, errors."""

from __future__ import annotations

import json

import pytest

from cxrlt.cli import build_parser, main

from nih_files import ROWS, SPEC_TOTALS, write_nih


@pytest.fixture
def nih_files(tmp_path):
    labels = write_nih(tmp_path / "Data_Entry_2017.csv")
    train = tmp_path / "train_val_list.txt"
    test = tmp_path / "test_list.txt"
    train.write_text("\n".join(r[0] for r in ROWS if r[3] != 2) + "\n")
    test.write_text("00000002_000.png\n")
    return labels, train, test


def test_json_contract_with_lists(nih_files, tmp_path, capsys):
    labels, train, test = nih_files
    out = tmp_path / "out" / "stats.json"
    code = main(["stats", "--source", "nih", "--labels", str(labels), "--train-list", str(train),
                 "--test-list", str(test), "--json", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    assert payload["n_images"] == 4
    assert payload["n_patients"] == 3
    assert payload["classes"]["Cardiomegaly"]["positives"] == 2
    assert payload["classes"]["Cardiomegaly"]["negatives"] == 2
    assert payload["classes"]["Hernia"]["positives"] == 1
    assert payload["classes"]["Mass"]["positives"] == 0
    assert payload["splits"] == {"train": 3, "test": 1}
    assert payload["patients_in_both"] == 0
    assert payload["per_split"]["train"]["Cardiomegaly"] == 2
    printed = capsys.readouterr().out
    assert "Cardiomegaly" in printed and "patients in more than one split: 0" in printed


def test_patients_in_both_counts_leaks(nih_files, tmp_path):
    labels, train, test = nih_files
    test.write_text("00000001_001.png\n00000002_000.png\n")  # patient 1 now in both
    train.write_text("00000001_000.png\n00000003_000.png\n")
    out = tmp_path / "s.json"
    assert main(["stats", "--source", "nih", "--labels", str(labels), "--train-list", str(train),
                 "--test-list", str(test), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["patients_in_both"] == 1


def test_plots_and_split_selection(nih_files, tmp_path):
    labels, train, test = nih_files
    out = tmp_path / "s.json"
    assert main(["stats", "--source", "nih", "--labels", str(labels), "--train-list", str(train),
                 "--test-list", str(test), "--split", "train", "--json", str(out),
                 "--plots", str(tmp_path / "plots"), "--no-finding"]) == 0
    payload = json.loads(out.read_text())
    assert payload["split"] == "train" and payload["n_images"] == 3
    assert payload["classes"]["No Finding"]["positives"] == 0
    assert len(list((tmp_path / "plots").glob("*.png"))) == 4


def test_config_data_section(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,patient_id,Mass,Edema\n" + "".join(f"i{i}.png,p{i // 2},{i % 2},{int(i % 3 == 0)}\n" for i in range(40)))
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data:\n  sources:\n    - {{name: csv, labels: {labels}}}\n"
        "  split: {method: random, val_fraction: 0.2, test_fraction: 0.2, seed: 1}\n"
        "model: {backbone: not-checked-here}\n"
    )
    out = tmp_path / "s.json"
    assert main(["stats", "--config", str(config), "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["n_images"] == 40
    assert payload["classes"]["Mass"]["positives"] == 20
    assert payload["classes"]["Edema"]["positives"] == 14
    assert sum(payload["splits"].values()) == 40
    assert payload["patients_in_both"] == 0
    assert main(["stats", "--config", str(config), "--override", "data.split.method=kfold",
                 "--override", "data.split.folds=4", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["patients_in_both"] == 0


def test_config_groups_options_decide_the_groups(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,patient_id,Mass,Edema\n" + "".join(f"i{i}.png,p{i},{i % 2},{int(i % 3 == 0)}\n" for i in range(40)))
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {{sources: [{{name: csv, labels: {labels}}}], split: {{method: random}}}}\n"
                      "evaluation: {groups: {method: count, head_min: 15, tail_max: 15}}\n")
    out = tmp_path / "s.json"
    assert main(["stats", "--config", str(config), "--json", str(out)]) == 0
    classes = json.loads(out.read_text())["classes"]
    assert (classes["Mass"]["group"], classes["Edema"]["group"]) == ("head", "tail")  # 20 and 14 positives
    assert main(["stats", "--config", str(config), "--override", "evaluation.groups.head_min=x"]) == 2
    assert "evaluation.groups.head_min" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["stats", "--source", "nih"], "give --source and --labels"),
        (["stats", "--source", "chexpert", "--labels", "x.csv", "--train-list", "t.txt"],
         "--source chexpert does not take --train-list"),
        (["stats", "--source", "dicomdir", "--labels", "x.csv"], "unknown data source 'dicomdir'"),
        (["stats", "--config", "run.yaml", "--source", "nih"], "leave out --source"),
        (["stats", "--source", "nih", "--labels", "absent.csv"], "absent.csv: file not found"),
    ],
)
def test_errors_are_one_line_without_traceback(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_config_errors_name_the_key(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  sources: [{name: nih, labels: x.csv, uncertain: ones}]\n")
    assert main(["stats", "--config", str(config)]) == 2
    assert "data.sources.0" in capsys.readouterr().err
    config.write_text("model: {}\n")
    assert main(["stats", "--config", str(config)]) == 2
    assert "no `data` section" in capsys.readouterr().err


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stats", "--help"])
    text = capsys.readouterr().out
    assert "example:" in text and "cxrlt stats --source nih" in text and "--json OUT" in text


@pytest.mark.real_data
def test_real_nih_through_the_cli(shared_data, tmp_path):
    nih = shared_data / "nih"
    out = tmp_path / "nih.json"
    assert main(["stats", "--source", "nih", "--labels", str(nih / "Data_Entry_2017_v2020.csv.gz"),
                 "--train-list", str(nih / "train_val_list.txt"), "--test-list", str(nih / "test_list.txt"),
                 "--no-finding", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["n_images"] == 112_120
    assert {name: c["positives"] for name, c in payload["classes"].items()} == SPEC_TOTALS
    assert all(c["positives"] + c["negatives"] == 112_120 for c in payload["classes"].values())
    assert payload["splits"] == {"train": 86_524, "test": 25_596}
    assert payload["patients_in_both"] == 0


def test_sampler_option_prints_natural_expected_and_drawn_frequencies(tmp_path, capsys):
    from cxrlt.cli import main

    labels = tmp_path / "labels.csv"
    # 2 images A only, 1 image A+B, 1 image B only, 1 image without finding
    labels.write_text("path,A,B\na1.png,1,0\na2.png,1,0\nab.png,1,1\nb.png,0,1\nn.png,0,0\n")
    assert main(["stats", "--source", "csv", "--labels", str(labels), "--sampler", "cycle",
                 "--draws", "30000"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith(("A ", "B "))}
    # cycle over {A, B, none}: P(A) = 1/3 * 1 + 1/3 * (1/2) = 0.5 ; natural frequency of A is 3/5
    assert rows["A"][2] == "0.6000" and rows["A"][3] == "0.5000"
    assert abs(float(rows["A"][4]) - 0.5) < 0.01
