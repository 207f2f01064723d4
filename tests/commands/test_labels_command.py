"""`cxrlt labels graph`: the run's training split -> one .npz of graph and label vectors."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest

from cxrlt.cli import main
from cxrlt.data.table import LabelTable
from cxrlt.models.graph import gcn_adjacency
from cxrlt.models.label_graph import GraphFile
from cxrlt.registry import KINDS, Registry

CLASSES = ["Atelectasis", "Cardiomegaly", "Edema", "Mass"]


@pytest.fixture()
def fake_source(monkeypatch):
    """A data source returning a fixed table with splits (the real readers live in cxrlt.data.sources)."""
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 4)) < [0.5, 0.3, 0.2, 0.1]).astype(np.float32)
    labels[:50, 1] = labels[:50, 0]
    split = np.where(np.arange(200) < 150, "train", "test")
    table = LabelTable(pd.DataFrame({"image_id": [f"i{i}" for i in range(200)], "split": split}), labels, CLASSES)
    sources = Registry("data source")
    sources.register("fake")(lambda: table)
    monkeypatch.setitem(KINDS, "source", sources)
    module = types.SimpleNamespace(load_table=lambda data: table)
    monkeypatch.setitem(sys.modules, "cxrlt.data.sources", module)
    return labels[:150]


def test_labels_graph_command_writes_the_run_heads_graph(tmp_path, fake_source, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("data: {sources: [{name: fake}]}\nmodel: {head: {name: gcn, tau: 0.5, embeddings: {dim: 20}}}\n")
    out = tmp_path / "graphs" / "graph.npz"
    assert main(["labels", "graph", "--config", str(config), "--out", str(out)]) == 0
    graph = GraphFile.load(out)
    assert graph.classes == CLASSES and graph.images == 150 and graph.tau == 0.5 and graph.p == 0.2
    np.testing.assert_allclose(graph.adjacency, gcn_adjacency(fake_source, tau=0.5), atol=1e-7)
    assert graph.embeddings.shape == (4, 20) and graph.method == "glove (dim 20, seed 0)"
    printed = capsys.readouterr().out
    assert "label graph of 150 training images, 4 classes (tau 0.5, p 0.2)" in printed
    assert f"wrote {out}" in printed
    p_ca = graph.conditional[1, 0]
    assert p_ca >= 0.5 and f"Atelectasis {p_ca:.2f}" in printed.splitlines()[5]  # Cardiomegaly's neighbour

    vectors = tmp_path / "v.csv"
    vectors.write_text("".join(f"{name},{i},1\n" for i, name in enumerate(CLASSES)))
    assert main(["labels", "graph", "--config", str(config), "--out", str(out), "--tau", "0.3",
                 "--embeddings", str(vectors)]) == 0
    graph = GraphFile.load(out)
    assert graph.tau == 0.3 and graph.embeddings.shape == (4, 2)
    np.testing.assert_allclose(graph.adjacency, gcn_adjacency(fake_source, tau=0.3), atol=1e-7)


def test_labels_graph_command_errors_are_one_paragraph(tmp_path, fake_source, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("data: {sources: [{name: fake}]}\n")
    assert main(["labels", "graph", "--config", str(config), "--out", str(tmp_path / "g.npz"), "--p", "1.5"]) == 2
    assert "--p 1.5" in capsys.readouterr().err
    assert main(["labels", "graph", "--config", str(config), "--out", str(tmp_path / "g.npz"),
                 "--text-encoder", str(tmp_path / "no_model")]) == 2
    assert "never downloads" in capsys.readouterr().err
    config.write_text("data: {sources: [{name: fake}]}\nmodel: {head: {name: gcn, tau: 1.5}}\n")
    assert main(["labels", "graph", "--config", str(config), "--out", str(tmp_path / "g.npz")]) == 2
    assert "model.head.tau is 1.5; it must lie in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "g.npz").exists()
