"""Pseudo-labels across merged sources: `cxrlt pseudo-label` writes a teacher's probabilities for the classes each
source lacks, and `data.pseudo_labels` fills training rows with them (soft, or hard at a threshold, per source
and class), on two synthetic sources that each lack a class."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlt.cli import main
from cxrlt.config import DataConfig, parse_config
from cxrlt.data.sources import load_table, source_positions
from cxrlt.data.synthetic import generate_dataset
from cxrlt.errors import ConfigError, InputError

CLASSES = ["Atelectasis", "Effusion", "Mass"]


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """Source 0 annotates Atelectasis and Effusion (lacks Mass); source 1 Effusion and Mass (lacks Atelectasis)."""
    folder = tmp_path_factory.mktemp("pseudo")
    generate_dataset(folder / "films", n_images=160, image_size=32, seed=5)
    films = pd.read_csv(folder / "films" / "labels.csv")
    films["path"] = [str(folder / "films" / path) for path in films["path"]]
    keep = ["image_id", "path", "patient_id"]
    films.iloc[:100][keep + ["Atelectasis", "Effusion"]].to_csv(folder / "a.csv", index=False)
    films.iloc[100:][keep + ["Effusion", "Mass"]].to_csv(folder / "b.csv", index=False)
    data = {"sources": [{"name": "csv", "labels": str(folder / "a.csv")},
                        {"name": "csv", "labels": str(folder / "b.csv")}],
            "classes": CLASSES,
            "split": {"method": "random", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
            "images": {"size": 32}}
    return folder, data


def run_config(data: dict, name: str = "teacher") -> dict:
    return {"name": name, "data": data, "model": {"backbone": "resnet10t"},
            "train": {"epochs": 1, "batch_size": 32, "num_workers": 0, "limit_train_batches": 2,
                      "limit_eval_batches": 1, "optimizer": {"name": "adamw", "lr": 0.003}},
            "evaluation": {"bootstrap": 0, "report": False}}


@pytest.fixture(scope="module")
def teacher(merged, tmp_path_factory):
    from cxrlt.runs.train import train

    _, data = merged
    return train(parse_config(run_config(data)), tmp_path_factory.mktemp("teacher") / "run", progress=False).run_dir


@pytest.fixture(scope="module")
def table_file(merged, teacher, tmp_path_factory):
    import yaml

    folder, data = merged
    config = folder / "merged.yaml"
    config.write_text(yaml.safe_dump(run_config(data)))
    out = tmp_path_factory.mktemp("table") / "pseudo.csv"
    assert main(["pseudo-label", str(teacher), str(config), "--out", str(out), "--no-progress"]) == 0
    return out


def test_the_table_holds_the_teachers_probabilities_for_the_missing_classes_only(merged, teacher, table_file, capsys):
    from cxrlt.inference.predict import Predictor

    _, data = merged
    table = load_table(DataConfig.model_validate(data))
    frame = pd.read_csv(table_file, dtype={"image_id": str})
    assert list(frame.columns) == ["image_id", "source", "source_name", "teacher", *CLASSES]
    assert set(frame["teacher"]) == {str(teacher.resolve())} and set(frame["source_name"]) == {"csv"}
    # every image outside the test split, none of the test split
    split = table.meta.set_index("image_id")["split"]
    assert set(frame["image_id"]) == set(split.index[split != "test"])
    a, b = frame[frame["source"] == 0], frame[frame["source"] == 1]
    assert a["Mass"].notna().all() and a[["Atelectasis", "Effusion"]].isna().all().all()
    assert b["Atelectasis"].notna().all() and b[["Effusion", "Mass"]].isna().all().all()
    # the values are the saved teacher's predictions, as `cxrlt predict` makes them
    rows = table.meta.reset_index(drop=True).set_index("image_id").index.get_indexer(a["image_id"][:5])
    expected = Predictor.load(teacher).predict(table.subset(rows).image_paths(), progress=False)
    np.testing.assert_allclose(a["Mass"][:5].to_numpy(), expected[:, CLASSES.index("Mass")], atol=1e-6)


def test_training_rows_are_filled_soft_or_hard_per_source_and_class(merged, table_file):
    _, data = merged
    plain = load_table(DataConfig.model_validate(data))
    frame = pd.read_csv(table_file, dtype={"image_id": str}).set_index("image_id")
    soft = load_table(DataConfig.model_validate({**data, "pseudo_labels": {"table": str(table_file)}}))
    positions = source_positions(soft)
    train = (soft.meta["split"] == "train").to_numpy()
    ids = soft.meta["image_id"].astype(str)
    mass, atelectasis = CLASSES.index("Mass"), CLASSES.index("Atelectasis")
    lacking_mass = train & (positions == 0)
    np.testing.assert_allclose(soft.labels[lacking_mass, mass], frame.loc[ids[lacking_mass], "Mass"], atol=1e-6)
    lacking_atelectasis = train & (positions == 1)
    np.testing.assert_allclose(soft.labels[lacking_atelectasis, atelectasis],
                               frame.loc[ids[lacking_atelectasis], "Atelectasis"], atol=1e-6)
    # annotated labels, validation and test rows are untouched (missing stays missing there)
    annotated = ~np.isnan(plain.labels)
    assert np.array_equal(soft.labels[annotated], plain.labels[annotated])
    assert np.isnan(soft.labels[~train & (positions == 0), mass]).all()
    assert not np.isnan(soft.labels[train]).any()
    # hard at a threshold
    hard = load_table(DataConfig.model_validate(
        {**data, "pseudo_labels": {"table": str(table_file), "mode": "hard", "threshold": 0.3}}))
    expected = (frame.loc[ids[lacking_mass], "Mass"].to_numpy() >= 0.3).astype(np.float32)
    assert np.array_equal(hard.labels[lacking_mass, mass], expected)
    # one source, one class
    only = load_table(DataConfig.model_validate(
        {**data, "pseudo_labels": {"table": str(table_file), "sources": [1], "classes": ["atelectasis"]}}))
    assert np.isnan(only.labels[lacking_mass, mass]).all()
    np.testing.assert_allclose(only.labels[lacking_atelectasis, atelectasis],
                               soft.labels[lacking_atelectasis, atelectasis])


def test_a_student_trains_on_soft_pseudo_labels(merged, table_file, tmp_path, one_thread):
    from cxrlt.runs.train import train

    _, data = merged
    config = run_config({**data, "pseudo_labels": {"table": str(table_file)}}, name="student")
    result = train(parse_config(config), tmp_path / "student", progress=False)
    assert (result.run_dir / "metrics.json").is_file()
    saved = (result.run_dir / "config.yaml").read_text()
    assert "pseudo_labels" in saved and str(table_file) in saved  # the run records where its labels came from


def test_bad_settings_and_tables_are_refused(merged, table_file, tmp_path):
    _, data = merged
    with pytest.raises(ConfigError, match="unannotated: missing"):
        parse_config(run_config({**data, "unannotated": "zero", "pseudo_labels": {"table": str(table_file)}}))
    with pytest.raises(ConfigError, match=r"pseudo_labels.sources \[2\]"):
        parse_config(run_config({**data, "pseudo_labels": {"table": str(table_file), "sources": [2]}}))
    with pytest.raises(ConfigError, match="'Hernia' is not a class of this run"):
        load_table(DataConfig.model_validate({**data, "pseudo_labels": {"table": str(table_file),
                                                                        "classes": ["Hernia"]}}))
    frame = pd.read_csv(table_file, dtype={"image_id": str})
    broken = frame.copy()
    broken.loc[broken["Mass"].notna().idxmax(), "Mass"] = 1.5
    broken.to_csv(tmp_path / "broken.csv", index=False)
    with pytest.raises(InputError, match=r"broken.csv.*column 'Mass': .*1.5.* is not a probability"):
        load_table(DataConfig.model_validate({**data, "pseudo_labels": {"table": str(tmp_path / "broken.csv")}}))
    frame.drop(columns=["teacher"]).to_csv(tmp_path / "bare.csv", index=False)
    with pytest.raises(InputError, match="missing column.*teacher"):
        load_table(DataConfig.model_validate({**data, "pseudo_labels": {"table": str(tmp_path / "bare.csv")}}))
    from cxrlt.runs.pseudo_labels import write_pseudo_labels

    single = {**data, "sources": data["sources"][:1], "classes": ["Atelectasis", "Effusion"]}
    with pytest.raises(ConfigError, match="nothing for pseudo-labels to fill"):
        write_pseudo_labels(tmp_path, DataConfig.model_validate(single), tmp_path / "x.csv")
