"""ML-GCN correlation matrix (SPEC 3) on label matrices worked out by hand; graph files."""

from __future__ import annotations

import numpy as np
import pytest

from cxrlt.data.stats import conditional_probabilities, cooccurrence
from cxrlt.errors import ConfigError, InputError
from cxrlt.models.graph import binarise, gcn_adjacency, normalise_adjacency, reweight
from cxrlt.models.label_graph import GraphFile

NAN = np.nan
# Classes A, B, C, D, E (E never positive). Rows are images.
LABELS = np.array([
    [1, 1, 0, 0, 0],  # A B
    [1, 1, 0, 0, 0],  # A B
    [1, 0, 1, 0, 0],  # A C
    [1, 0, 0, 0, 0],  # A
    [0, 1, 0, 0, 0],  # B
    [0, 0, 1, 1, 0],  # C D
    [0, 0, 0, 1, 0],  # D
    [0, 0, 0, 0, 0],  # nothing
], dtype=np.float32)


def test_cooccurrence_counts_by_hand():
    expected = np.array([
        [4, 2, 1, 0, 0],
        [2, 3, 0, 0, 0],
        [1, 0, 2, 1, 0],
        [0, 0, 1, 2, 0],
        [0, 0, 0, 0, 0],
    ])
    np.testing.assert_array_equal(cooccurrence(LABELS), expected)


def test_conditional_probabilities_by_hand():
    expected = np.array([
        [1, 2 / 4, 1 / 4, 0, 0],  # P(. | A): A in 4 images, with B twice, with C once
        [2 / 3, 1, 0, 0, 0],
        [1 / 2, 0, 1, 1 / 2, 0],
        [0, 0, 1 / 2, 1, 0],
        [NAN] * 5,  # E never positive: P(. | E) is undefined (cxrlt.data.stats), and no edge (see below)
    ])
    np.testing.assert_allclose(conditional_probabilities(LABELS), expected, rtol=1e-12)
    assert not binarise(conditional_probabilities(LABELS), tau=0.01)[4].any()


def test_adjacency_tau_04_p_02_by_hand():
    # Edges P >= 0.4: A->B (0.5), B->A (0.67), C->A (0.5), C->D (0.5), D->C (0.5); A->C (0.25) is not.
    # Each row: neighbours share p = 0.2, diagonal 1 - p; E has no neighbour and keeps 1.
    expected = np.array([
        [0.8, 0.2, 0.0, 0.0, 0.0],
        [0.2, 0.8, 0.0, 0.0, 0.0],
        [0.1, 0.0, 0.8, 0.1, 0.0],
        [0.0, 0.0, 0.2, 0.8, 0.0],
        [0.0, 0.0, 0.0, 0.0, 1.0],
    ])
    np.testing.assert_allclose(gcn_adjacency(LABELS, tau=0.4, p=0.2), expected, atol=1e-12)


def test_tau_is_inclusive_and_higher_tau_cuts_edges():
    binary = binarise(conditional_probabilities(LABELS), tau=0.5)  # 0.5 itself is an edge
    assert binary[0, 1] == 1 and binary[2, 3] == 1 and binary[1, 0] == 1
    binary = binarise(conditional_probabilities(LABELS), tau=0.6)
    np.testing.assert_array_equal(np.argwhere(binary), [[1, 0]])  # only P(A | B) = 0.67 is left


def test_missing_labels_leave_the_pair_out_of_the_conditional():
    # A positive, B missing: counts for P(. | A) except for B, whose estimate stays 2/4.
    labels = np.vstack([LABELS, [1, NAN, 0, 0, 0]]).astype(np.float32)
    conditional = conditional_probabilities(labels)
    assert conditional[0, 1] == pytest.approx(2 / 4)  # a naive count would give 2/5 = 0.4
    assert conditional[0, 2] == pytest.approx(1 / 5)
    assert conditional[1, 0] == pytest.approx(2 / 3)
    assert binarise(conditional, tau=0.45)[0, 1] == 1


def test_reweight_rows_sum_to_one_and_normalisation_by_hand():
    binary = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=float)
    weighted = reweight(binary, p=0.3)
    np.testing.assert_allclose(weighted, [[0.7, 0.15, 0.15], [0.3, 0.7, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(normalise_adjacency(weighted), weighted)  # row sums 1: D = I
    # A general matrix: degrees 2 and 4 -> D^-1/2 = diag(1/sqrt 2, 1/2).
    np.testing.assert_allclose(normalise_adjacency(np.array([[2.0, 0.0], [1.0, 3.0]])),
                               [[1.0, 0.0], [1 / (2 * np.sqrt(2)), 0.75]])


def test_bad_tau_and_p_are_refused():
    with pytest.raises(ValueError, match="tau"):
        binarise(np.eye(2), tau=0.0)
    with pytest.raises(ValueError, match="p must"):
        reweight(np.eye(2), p=1.0)


# ----------------------------------------------------------------- files
def _file_embeddings(tmp_path, names, dim=3):
    vectors = np.arange(len(names) * dim, dtype=np.float32).reshape(len(names), dim) + 1
    path = tmp_path / "vectors.npz"
    np.savez(path, classes=np.asarray(names), embeddings=vectors)
    return path, vectors


def test_graph_file_round_trip_and_class_matching(tmp_path):
    names = ["Atelectasis", "Cardiomegaly", "Effusion", "Edema", "Hernia"]
    vectors_path, vectors = _file_embeddings(tmp_path, names)
    graph = GraphFile.from_labels(LABELS, names, {"method": "file", "path": vectors_path, "normalise": False})
    path = graph.save(tmp_path / "graph.npz")
    loaded = GraphFile.load(path)
    assert loaded.classes == names and loaded.images == 8 and loaded.tau == 0.4 and loaded.p == 0.2
    np.testing.assert_array_equal(loaded.positives, [4, 3, 2, 2, 0])
    np.testing.assert_allclose(loaded.adjacency, gcn_adjacency(LABELS), atol=1e-7)
    # Other spellings, other order: rows and columns follow the names.
    order = [2, 0, 4, 1, 3]
    asked = ["Pleural Effusion", "atelectasis", "HERNIA", "Cardiomegaly", "Edema"]
    adjacency, rows = loaded.for_classes(asked, path)
    np.testing.assert_allclose(adjacency, gcn_adjacency(LABELS)[np.ix_(order, order)], atol=1e-7)
    np.testing.assert_array_equal(rows, vectors[order])
    # A subset: recomputed from P(L_j | L_i), equal to the graph of those columns alone.
    subset = [3, 0, 2]
    adjacency, _ = loaded.for_classes([names[i] for i in subset], path)
    np.testing.assert_allclose(adjacency, gcn_adjacency(LABELS[:, subset]), atol=1e-7)
    with pytest.raises(InputError, match="Fibrosis"):
        loaded.for_classes(["Fibrosis", "Edema"], path)


def test_graph_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        GraphFile.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", classes=np.asarray(["A"]))
    with pytest.raises(InputError, match="lacks adjacency"):
        GraphFile.load(tmp_path / "other.npz")
