"""Label embeddings: GloVe on label sentences, matrix files, a local text encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_text_encoder import make_tiny_bert

from cxrlt.errors import ConfigError, InputError
from cxrlt.models.embeddings import (
    LabelEmbeddingSpec,
    LabelVectors,
    file_vectors,
    glove_vectors,
    label_vectors,
    new_name_vectors,
    text_vectors,
)


def grouped_labels(n: int = 3000, seed: int = 0) -> np.ndarray:
    """Three kinds of image: A (+B 80%, +C 50%); D (+E 70%); F alone. A-B co-occur more than A-C."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3, n)
    labels = np.zeros((n, 6), np.float32)
    labels[kind == 0, 0] = 1
    labels[kind == 0, 1] = rng.random((kind == 0).sum()) < 0.8
    labels[kind == 0, 2] = rng.random((kind == 0).sum()) < 0.5
    labels[kind == 1, 3] = 1
    labels[kind == 1, 4] = rng.random((kind == 1).sum()) < 0.7
    labels[kind == 2, 5] = 1
    return labels


def cosine(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


# ------------------------------------------------------------------ glove
def test_glove_is_deterministic_and_seeded():
    labels = grouped_labels()
    first = glove_vectors(labels, dim=50, seed=3)
    assert first.shape == (6, 50) and first.dtype == np.float32
    np.testing.assert_array_equal(first, glove_vectors(labels, dim=50, seed=3))
    assert not np.allclose(first, glove_vectors(labels, dim=50, seed=4))
    np.testing.assert_allclose(first.mean(axis=0), 0.0, atol=1e-5)  # the shared part is removed


def test_glove_labels_that_cooccur_more_are_closer():
    sim = cosine(glove_vectors(grouped_labels()))
    # A-B (in 80% of A's images) > A-C (50%) > anything A never meets (D, E, F).
    assert sim[0, 1] > sim[0, 2] > max(sim[0, 3], sim[0, 4], sim[0, 5])
    assert sim[3, 4] > max(sim[3, 0], sim[3, 1], sim[3, 2], sim[3, 5])
    for i, j in [(0, 1), (0, 2), (1, 2), (3, 4)]:  # together vs never together
        assert sim[i, j] > 0.5
    for i, j in [(0, 3), (1, 4), (2, 5), (4, 5)]:
        assert sim[i, j] < 0.0


def test_glove_labels_with_the_same_profile_stay_distinct():
    # Independent labels: without removing the shared part their vectors are near-parallel.
    labels = (np.random.default_rng(1).random((2000, 4)) < 0.35).astype(np.float32)
    sim = cosine(glove_vectors(labels, dim=64))
    assert sim[~np.eye(4, dtype=bool)].max() < 0.0


def test_glove_spec_normalises_to_unit_length():
    vectors = label_vectors(LabelEmbeddingSpec(dim=20), None, grouped_labels())
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    raw = label_vectors(LabelEmbeddingSpec(dim=20, normalise=False), None, grouped_labels())
    np.testing.assert_allclose(vectors, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5)


def test_glove_needs_labels_and_cannot_embed_new_names():
    with pytest.raises(ConfigError, match="training labels"):
        label_vectors(LabelEmbeddingSpec(), ["A", "B"], None)
    with pytest.raises(ConfigError, match="only for the training classes"):
        new_name_vectors(LabelEmbeddingSpec(), ["Bulla"])


# ------------------------------------------------------------------- file
CLASSES = ["Atelectasis", "Effusion", "Pleural_Thickening"]


def test_npz_rows_are_matched_by_canonical_name(tmp_path):
    names = ["pleural thickening", "Hernia", "Pleural Effusion", "ATELECTASIS"]  # other spellings, extra row
    matrix = np.arange(8, dtype=np.float32).reshape(4, 2)
    np.savez(tmp_path / "v.npz", classes=np.asarray(names), embeddings=matrix)
    np.testing.assert_array_equal(file_vectors(tmp_path / "v.npz", CLASSES), matrix[[3, 2, 0]])


def test_csv_with_and_without_header(tmp_path):
    body = "Pleural Thickening,1,2\nAtelectasis,3,4.5\nEffusion,-1,0\n"
    (tmp_path / "plain.csv").write_text(body)
    (tmp_path / "header.csv").write_text("class,x,y\n" + body)
    expected = np.array([[3, 4.5], [-1, 0], [1, 2]], np.float32)
    for name in ("plain.csv", "header.csv"):
        np.testing.assert_array_equal(file_vectors(tmp_path / name, CLASSES), expected)
    spec = LabelEmbeddingSpec.coerce(str(tmp_path / "plain.csv"))
    assert spec.method == "file"
    np.testing.assert_allclose(label_vectors(spec, CLASSES, None), expected / np.linalg.norm(expected, axis=1)[:, None])


def test_npy_is_taken_in_class_order_with_its_size_checked(tmp_path):
    np.save(tmp_path / "v.npy", np.eye(3, dtype=np.float32))
    np.testing.assert_array_equal(file_vectors(tmp_path / "v.npy", CLASSES), np.eye(3))
    with pytest.raises(InputError, match="3 rows for 2 classes"):
        file_vectors(tmp_path / "v.npy", CLASSES[:2])


def test_matrix_file_errors_name_the_problem(tmp_path):
    np.savez(tmp_path / "v.npz", classes=np.asarray(["Atelectasis", "Effusion"]), embeddings=np.ones((2, 2)))
    with pytest.raises(InputError, match="no row for 1 class.*Pleural_Thickening"):
        file_vectors(tmp_path / "v.npz", CLASSES)
    np.savez(tmp_path / "twice.npz", classes=np.asarray(["Effusion", "Pleural Effusion"]), embeddings=np.ones((2, 2)))
    with pytest.raises(InputError, match="repeat"):
        file_vectors(tmp_path / "twice.npz", CLASSES)
    (tmp_path / "bad.csv").write_text("Atelectasis,1,2\nEffusion,1,oops\n")
    with pytest.raises(InputError, match="line 2: a value is not a number"):
        file_vectors(tmp_path / "bad.csv", CLASSES)
    with pytest.raises(InputError, match="not found"):
        file_vectors(tmp_path / "nope.npz", CLASSES)
    with pytest.raises(ConfigError, match="embeddings"):
        LabelEmbeddingSpec.coerce("vectors.txt")


# ------------------------------------------------------------------- text
def test_text_vectors_are_masked_mean_of_the_last_hidden_state(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    names = ["Pleural Effusion", "Hernia"]
    got = text_vectors(str(tiny_bert), names, prompt="chest x-ray showing {name}")
    tokenizer, model = AutoTokenizer.from_pretrained(tiny_bert), AutoModel.from_pretrained(tiny_bert).eval()
    for name, row in zip(names, got):  # one text at a time: no padding, plain mean over tokens
        with torch.no_grad():
            hidden = model(**tokenizer(f"chest x-ray showing {name}", return_tensors="pt")).last_hidden_state[0]
        np.testing.assert_allclose(row, hidden.mean(dim=0).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, text_vectors(str(tiny_bert), names))  # the prompt matters


def test_text_spec_through_label_vectors_and_new_names(tiny_bert):
    spec = LabelEmbeddingSpec.coerce({"method": "text", "model": str(tiny_bert)})
    vectors = label_vectors(spec, ["Edema", "Mass"], None)
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    fresh = new_name_vectors(spec, ["Bulla", "Scoliosis"])
    assert fresh.shape == (2, 32) and not np.allclose(fresh[0], fresh[1])


def test_absent_text_encoder_is_a_clear_config_error(tmp_path):
    with pytest.raises(ConfigError, match="never downloads"):
        text_vectors(str(tmp_path / "no_such_model"), ["Edema"])
    with pytest.raises(ConfigError, match="needs `model`"):
        LabelEmbeddingSpec.coerce({"method": "text"})
    with pytest.raises(ConfigError, match="must contain"):
        LabelEmbeddingSpec.coerce({"method": "text", "model": "x", "prompt": "no placeholder"})


# ---------------------------------------------------------------- buffers
def test_placeholder_vectors_take_their_size_from_a_saved_state():
    saved = LabelVectors(np.arange(6, dtype=np.float32).reshape(3, 2), rows=3)
    rebuilt = LabelVectors(None, rows=3)
    assert rebuilt.placeholder and rebuilt.dim is None and rebuilt.vectors.shape == (3, 0)
    rebuilt.load_state_dict(saved.state_dict())
    assert rebuilt.dim == 2 and torch.equal(rebuilt.vectors, saved.vectors)
    with pytest.raises(RuntimeError, match="size mismatch"):  # a built (non-placeholder) buffer keeps its size
        LabelVectors(np.zeros((3, 5), np.float32), rows=3).load_state_dict(saved.state_dict())
