"""Label statistics: hand-computed counts, co-occurrence, JSON, table, plots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlt.data.stats import (
    LabelStats,
    format_table,
    plot_cooccurrence,
    plot_label_distribution,
    plot_labels_per_image,
    save_plots,
)
from cxrlt.data.table import LabelTable

NAN = np.nan
CLASSES = ("Mass", "Nodule", "No Finding")
LABELS = np.array(
    [
        [1, 0, NAN],
        [1, 1, 0],
        [0, NAN, 1],
        [0, 0, 0],
    ],
    dtype=np.float32,
)


def test_hand_computed_counts():
    stats = LabelStats.from_labels(LABELS, CLASSES)
    assert stats.n_images == 4
    assert stats.positives == [2, 1, 1]
    assert stats.negatives == [2, 2, 2]
    assert stats.missing == [0, 1, 1]
    # findings per image (No Finding is not a finding): 1, 2, 0, 0
    assert stats.labels_per_image == [2, 1, 1]
    np.testing.assert_array_equal(stats.cooccurrence, [[2, 1, 0], [1, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(stats.prevalence, [2 / 4, 1 / 3, 1 / 3])
    conditional = stats.conditional()
    assert conditional[0, 1] == pytest.approx(0.5)  # P(Nodule | Mass)
    assert conditional[1, 0] == pytest.approx(1.0)  # P(Mass | Nodule)
    assert conditional[2, 0] == 0.0


def test_soft_labels_round_at_one_half():
    stats = LabelStats.from_labels(np.array([[0.6], [0.4], [NAN]], dtype=np.float32), ["Edema"])
    assert (stats.positives, stats.negatives, stats.missing) == ([1], [1], [1])


def test_cooccurrence_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    labels = (rng.random((300, 5)) < [0.5, 0.3, 0.1, 0.05, 0.01]).astype(np.float32)
    labels[rng.random(labels.shape) < 0.1] = NAN
    stats = LabelStats.from_labels(labels, [f"c{j}" for j in range(5)])
    for i in range(5):
        for j in range(5):
            both = sum(1 for row in labels if row[i] == 1 and row[j] == 1)
            assert stats.cooccurrence[i, j] == both
    per_image = [int(np.nansum(row)) for row in labels]
    assert stats.labels_per_image == np.bincount(per_image).tolist()
    assert sum(stats.labels_per_image) == 300


def test_class_without_positives_has_nan_conditional_row():
    stats = LabelStats.from_labels(np.array([[1, 0], [0, 0]], dtype=np.float32), ["a", "b"])
    assert np.isnan(stats.conditional()[1]).all()


def test_conditional_with_missing_labels_is_one_definition_for_the_stats_and_the_gcn():
    """P(j | i) over the images positive for i whose label j is annotated; the GCN's matrix is built from it."""
    from cxrlt.models.graph import adjacency_from_conditional, gcn_adjacency

    rng = np.random.default_rng(1)
    labels = (rng.random((400, 4)) < [0.5, 0.3, 0.2, 0.1]).astype(np.float32)
    labels[rng.random(labels.shape) < 0.2] = NAN
    brute = np.full((4, 4), NAN)
    for i in range(4):
        for j in range(4):
            annotated = (labels[:, i] == 1) & ~np.isnan(labels[:, j])
            if annotated.any():
                brute[i, j] = np.mean(labels[annotated, j] == 1)
    stats = LabelStats.from_labels(labels, list("abcd"))
    np.testing.assert_allclose(stats.conditional(), brute, rtol=1e-12)
    assert not np.allclose(brute, stats.cooccurrence / np.diag(stats.cooccurrence)[:, None])  # not n_ij / n_i here
    np.testing.assert_allclose(gcn_adjacency(labels, tau=0.3), adjacency_from_conditional(brute, tau=0.3))


def test_label_plots_use_the_palette_of_every_other_figure():
    from matplotlib.colors import to_rgba

    from cxrlt.evaluation.plots import GROUP_COLOURS as figure_colours

    stats = LabelStats.from_labels(LABELS, CLASSES)  # bars most frequent first: Mass, Nodule, No Finding
    bars = plot_label_distribution(stats, groups=["tail", "head", "medium"]).axes[0].patches
    assert [bar.get_facecolor() for bar in bars] == [to_rgba(figure_colours[g]) for g in ("tail", "head", "medium")]


def test_from_table_and_groups():
    table = LabelTable(pd.DataFrame({"image_id": list("abcd"), "path": list("abcd")}), LABELS, CLASSES)
    stats = LabelStats.from_table(table)
    assert stats.positives == [2, 1, 1]
    # rank, a third of 3 classes = 1 head and 1 tail; ties go by class order
    assert stats.groups() == ["head", "medium", "tail"]
    assert stats.groups(method="count", head_min=2, tail_max=2) == ["head", "tail", "tail"]


def test_to_json():
    payload = LabelStats.from_labels(LABELS, CLASSES).to_json()
    assert payload["n_images"] == 4
    assert payload["classes"]["Mass"] == {
        "positives": 2, "negatives": 2, "missing": 0, "prevalence": 0.5, "group": "head",
    }
    assert payload["labels_per_image"] == [2, 1, 1]
    assert payload["cooccurrence"]["counts"][0] == [2, 1, 0]


def test_format_table_orders_by_frequency():
    text = format_table(LabelStats.from_labels(LABELS, CLASSES))
    lines = text.splitlines()
    assert lines[0].split() == ["class", "positives", "negatives", "missing", "%", "group"]
    assert lines[2].split() == ["Mass", "2", "2", "0", "50.00", "head"]
    assert lines[3].split() == ["Nodule", "1", "2", "1", "33.33", "medium"]


def test_plots_are_written_as_png(tmp_path):
    stats = LabelStats.from_labels(LABELS, CLASSES)
    paths = save_plots(stats, tmp_path / "plots", log=True)
    assert [p.name for p in paths] == [
        "label_distribution.png", "labels_per_image.png", "cooccurrence.png", "cooccurrence_counts.png",
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 200
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary files left


def test_plot_functions_return_figures_with_expected_content():
    stats = LabelStats.from_labels(LABELS, CLASSES)
    figure = plot_label_distribution(stats)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Mass", "Nodule", "No Finding"]
    assert [round(p.get_width()) for p in ax.patches] == [2, 1, 1]
    bars = plot_labels_per_image(stats).axes[0].patches
    assert [round(p.get_height()) for p in bars] == [2, 1, 1]
    heat = plot_cooccurrence(stats).axes[0]
    texts = {t.get_text() for t in heat.texts}
    assert {"50", "100"} <= texts  # P(Nodule | Mass) = 50%, P(Mass | Nodule) = 100%
