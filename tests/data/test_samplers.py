"""Samplers: hand-computed expectations, determinism, DDP shares, real NIH frequencies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrlt.config import SamplerSpec
from cxrlt.data.samplers import NO_POSITIVE, build, least_sampled_limit, sampler_frequency_table
from cxrlt.data.stats import expected_label_frequency
from cxrlt.errors import ConfigError, InputError
from cxrlt.registry import SAMPLERS

NAMES = ("instance", "cycle", "least_sampled", "sqrt", "repeat_factor")
PARAMS = {"repeat_factor": {"threshold": 0.3}}

# 4 images x 3 classes; image 3 has no positive label, NaN is missing (not positive).
HAND = np.array([[1, 1, 0], [1, 0, np.nan], [0, 1, 1], [0, 0, 0]], dtype=np.float32)


def skewed(seed: int = 0, n: int = 400) -> np.ndarray:
    """A long-tailed multi-label matrix with co-occurrence and unlabelled images."""
    rng = np.random.default_rng(seed)
    rates = np.array([0.4, 0.15, 0.05, 0.02])
    y = (rng.random((n, 4)) < rates).astype(np.float32)
    y[rng.random(n) < 0.3, 3] = np.nan
    return y


def make(name: str, labels: np.ndarray, **kwargs):
    return build(name, labels=labels, **{**PARAMS.get(name, {}), **kwargs})


def test_registry_lists_the_five_samplers():
    assert SAMPLERS.names() == sorted(NAMES)


# ----------------------------------------------------------- eq. (1) by hand
def test_expected_label_frequency_by_hand():
    # n_j = (2, 2, 1); co-occurrence n_01 = 1, n_12 = 1, n_02 = 0; image 3 is unlabelled.
    # ignore: p(j) = 1/3: p_0 = (2/2 + 1/2 + 0/1)/3, p_1 = (1/2 + 2/2 + 1/1)/3, p_2 = (0/2 + 1/2 + 1/1)/3.
    np.testing.assert_allclose(expected_label_frequency(HAND, no_finding="ignore"), [0.5, 2.5 / 3, 0.5])
    # class: a 4th implicit class holding image 3, p(j) = 1/4.
    np.testing.assert_allclose(expected_label_frequency(HAND), [1.5 / 4, 2.5 / 4, 1.5 / 4])
    # explicit p(j) = (0.5, 0.25, 0.25, 0): p_0 = 0.5*1 + 0.25*0.5, p_1 = 0.5*0.5 + 0.25 + 0.25, p_2 = 0.25*0.5 + 0.25
    np.testing.assert_allclose(expected_label_frequency(HAND, [2, 1, 1, 0]), [0.625, 0.75, 0.375])
    with pytest.raises(ConfigError, match="4 non-negative"):
        expected_label_frequency(HAND, [1, 1, 1])


def test_single_label_data_gives_the_pick_probabilities():
    # Without co-occurrence, n_ij = 0 for i != j and p_i = p(i).
    y = np.repeat(np.eye(3, dtype=np.float32), [50, 20, 5], axis=0)
    np.testing.assert_allclose(expected_label_frequency(y), [1 / 3] * 3)
    np.testing.assert_allclose(expected_label_frequency(y, [0.2, 0.3, 0.5]), [0.2, 0.3, 0.5])


def test_cycle_visits_classes_in_shuffled_rounds_and_matches_eq1():
    sampler = make("cycle", HAND, num_samples=4000, seed=3)
    stream = sampler.global_indices()
    membership = sampler.indicators[:, sampler.groups]
    # Each round of 4 draws picks every sampling class once: the implicit class
    # (image 3 alone) exactly once, class 2 (image 2 alone) at least once.
    rounds = stream.reshape(-1, 4)
    assert np.all((rounds == 2).sum(axis=1) >= 1) and np.all((rounds == 3).sum(axis=1) == 1)
    assert np.all(membership[stream].any(axis=1))
    drawn = np.nan_to_num(HAND)[stream].mean(axis=0)
    np.testing.assert_allclose(drawn, expected_label_frequency(HAND), rtol=0.03)


def test_cycle_ignore_never_draws_unlabelled_images():
    stream = make("cycle", HAND, num_samples=300, no_finding="ignore").global_indices()
    assert 3 not in set(stream.tolist()) and set(stream.tolist()) == {0, 1, 2}


# ------------------------------------------------------ determinism and DDP
@pytest.mark.parametrize("name", NAMES)
def test_stream_is_a_function_of_seed_and_epoch(name):
    y = skewed()
    a, b = make(name, y, num_samples=500, seed=7), make(name, y, num_samples=500, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    first = a.global_indices(epoch=0)
    assert not np.array_equal(first, a.global_indices(epoch=1))
    assert not np.array_equal(first, make(name, y, num_samples=500, seed=8).global_indices(epoch=0))
    assert first.min() >= 0 and first.max() < len(y) and first.dtype == np.int64


@pytest.mark.parametrize("name", NAMES)
def test_ddp_shares_partition_the_single_process_stream(name):
    y = skewed()
    world = 3
    shares = [make(name, y, num_samples=1000, seed=5, rank=r, world_size=world) for r in range(world)]
    for s in shares:
        s.set_epoch(4)
    streams = [list(s) for s in shares]
    assert {len(s) for s in streams} == {334} and all(len(s) == 334 for s in shares)
    merged = np.empty(334 * world, dtype=np.int64)
    for r, stream in enumerate(streams):
        merged[r::world] = stream  # disjoint by position
    single = make(name, y, num_samples=334 * world, seed=5, rank=0, world_size=1)
    single.set_epoch(4)
    np.testing.assert_array_equal(merged, list(single))
    # A longer stream extends a shorter one, so the 1000 single-process draws are its prefix.
    shorter = make(name, y, num_samples=1000, seed=5, rank=0, world_size=1)
    np.testing.assert_array_equal(shorter.global_indices(epoch=4), merged[:1000])


def test_rank_outside_the_world_is_rejected():
    with pytest.raises(ValueError, match="rank 3"):
        make("cycle", HAND, rank=3, world_size=3)


def test_sampler_drives_a_dataloader():
    sampler = make("cycle", skewed(), num_samples=64, rank=1, world_size=2)
    loader = torch.utils.data.DataLoader(range(400), sampler=sampler, batch_size=8)
    batches = list(loader)
    assert len(loader) == 4 and len(batches) == 4
    assert torch.cat(batches).tolist() == sampler.global_indices()[1::2].tolist()


# ------------------------------------------------------------------ instance
def test_instance_visits_every_image_once_per_epoch():
    n = 257
    sampler = make("instance", np.zeros((n, 2)), num_samples=n)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sorted(sampler) == list(range(n))
    assert len(make("instance", np.zeros((n, 2)))) == n  # default num_samples = N
    # 2.5 epochs' worth: two full permutations, then half of a third.
    stream = make("instance", np.zeros((n, 2)), num_samples=2 * n + 100).global_indices()
    assert sorted(stream[:n]) == sorted(stream[n:2 * n]) == list(range(n))
    assert len(set(stream[2 * n:].tolist())) == 100


# ------------------------------------------------------------- least sampled
def test_least_sampled_keeps_single_label_counts_within_one():
    # No co-occurrence: each draw adds 1 to the picked (least) class only, so
    # counts always lie in {m, m + 1}: max - min <= 1 after every draw.
    y = np.repeat(np.eye(4, dtype=np.float32), [1000, 300, 30, 3], axis=0)
    y = np.vstack([y, np.zeros((500, 4), np.float32)])  # + implicit "no finding" class
    stream = make("least_sampled", y, num_samples=3000, seed=1).global_indices()
    groups = np.column_stack([y, y.sum(axis=1) == 0])[stream].astype(int)
    counts = np.cumsum(groups, axis=0)
    assert np.all(counts.max(axis=1) - counts.min(axis=1) <= 1)
    assert counts[-1].tolist() == [600] * 5


def test_least_sampled_two_cooccurring_classes():
    # 30 A-only, 10 B-only, 10 A+B images. A[i, j] = n_ij / n_j: picking A adds
    # (1, 1/4), picking B adds (1/2, 1). Level rates: pi_A + pi_B / 2 = pi_A / 4 + pi_B
    # -> pi = (0.4, 0.6), both label frequencies 0.7 (cycle would give 0.75, 0.625).
    y = np.array([[1, 0]] * 30 + [[0, 1]] * 10 + [[1, 1]] * 10, dtype=np.float32)
    sampler = make("least_sampled", y, num_samples=20000, seed=2)
    np.testing.assert_allclose(sampler.expected_frequency(), [0.7, 0.7, 0.0], atol=1e-12)
    np.testing.assert_allclose(expected_label_frequency(y), [0.75, 0.625])
    stream = sampler.global_indices()
    counts = np.cumsum(y[stream], axis=0)
    # With two classes the picked (least) class gains 1 and the other 0 or 1, so
    # |c_A - c_B| never exceeds 1; the ratio max/min is at most (min + 1) / min.
    assert np.abs(counts[:, 0] - counts[:, 1]).max() <= 1
    np.testing.assert_allclose(counts[-1] / len(stream), [0.7, 0.7], rtol=0.01)


def test_least_sampled_limit_leaves_out_classes_drawn_enough_by_cooccurrence():
    # Class 1 only ever appears with class 0: picking 0 gives (1, 1/2), picking 1
    # gives (1, 1). Class 0 is drawn at least as often as class 1, so the rule
    # always picks 1 in the long run: pi = (0, 1), rates (1, 1).
    y = np.array([[1, 0]] * 10 + [[1, 1]] * 10, dtype=np.float32)
    sampler = make("least_sampled", y)
    np.testing.assert_allclose(sampler.expected_frequency(), [1.0, 1.0, 0.0])


def test_least_sampled_levels_all_classes_when_it_can():
    # n = (55, 10, 10); 5 images carry classes 0 and 2. Columns of A = n_ij / n_j:
    # A[:, 0] = (1, 0, 1/11), A[:, 1] = (0, 1, 0), A[:, 2] = (1/2, 0, 1).
    # A x = 1 gives x = (11/21, 1, 20/21) > 0, so all three are picked:
    # pi = x / sum(x) = (11, 21, 20) / 52 and every label rate is 1 / sum(x) = 21/52.
    y = np.array([[1, 0, 0]] * 50 + [[0, 1, 0]] * 10 + [[0, 0, 1]] * 5 + [[1, 0, 1]] * 5, dtype=np.float32)
    sampler = make("least_sampled", y, no_finding="ignore", num_samples=30000, seed=4)
    np.testing.assert_allclose(sampler.expected_frequency(), [21 / 52] * 3 + [0.0])
    drawn = y[sampler.global_indices()].mean(axis=0)
    np.testing.assert_allclose(drawn, [21 / 52] * 3, rtol=0.01)


def test_least_sampled_limit_matches_a_long_run_on_a_skewed_matrix():
    y = skewed(seed=3, n=600)
    sampler = make("least_sampled", y, num_samples=40000, seed=9)
    limit = sampler.expected_frequency()
    positive = sampler.indicators[sampler.global_indices()].mean(axis=0)
    np.testing.assert_allclose(positive, limit, rtol=0.02)
    # Consistency: the same rule on the same data, run on expected counts for longer.
    np.testing.assert_allclose(least_sampled_limit(sampler.indicators, sampler.groups, 20000), limit, rtol=1e-6)


# ---------------------------------------------------------------------- sqrt
def test_sqrt_single_label_picks_classes_by_square_root():
    y = np.repeat(np.eye(3, dtype=np.float32), [100, 25, 4], axis=0)
    sampler = make("sqrt", y, num_samples=60000, seed=0)
    np.testing.assert_allclose(sampler.expected_frequency()[:3], np.array([10, 5, 2]) / 17)
    # image weight = n_j^(-1/2) / Z
    np.testing.assert_allclose(sampler.image_weights[[0, 100, 125]], np.array([0.1, 0.2, 0.5]) / 17)
    drawn = y[sampler.global_indices()].mean(axis=0)
    sigma = np.sqrt(drawn * (1 - drawn) / 60000)
    assert np.all(np.abs(drawn - np.array([10, 5, 2]) / 17) < 5 * sigma)


def test_sqrt_multi_label_matches_its_expectation():
    y = skewed(seed=1, n=800)
    sampler = make("sqrt", y, num_samples=100000, seed=1)
    probs = np.sqrt(sampler.class_counts) / np.sqrt(sampler.class_counts).sum()
    np.testing.assert_allclose(sampler.expected_frequency()[:4], expected_label_frequency(y, probs))
    drawn = sampler.indicators[sampler.global_indices()].mean(axis=0)
    expected = sampler.expected_frequency()
    sigma = np.sqrt(expected * (1 - expected) / 100000)
    assert np.all(np.abs(drawn - expected) < 5 * sigma)


# ------------------------------------------------------------- repeat factor
def test_repeat_factors_by_hand_and_their_mean():
    # f = (2/4, 2/4, 1/4, no finding 1/4); t = 0.5: r_c = max(1, sqrt(t / f)) = (1, 1, sqrt2, sqrt2).
    sampler = make("repeat_factor", HAND, threshold=0.5, seed=0)
    np.testing.assert_allclose(sampler.class_factors, [1, 1, np.sqrt(2), np.sqrt(2)])
    np.testing.assert_allclose(sampler.repeat_factors, [1, 1, np.sqrt(2), np.sqrt(2)])
    assert sampler.num_samples == round(2 + 2 * np.sqrt(2))
    ignore = make("repeat_factor", HAND, threshold=0.5, no_finding="ignore")
    np.testing.assert_allclose(ignore.repeat_factors, [1, 1, np.sqrt(2), 1])
    # Stochastic rounding: over many rounds each image appears r_x times per round on average.
    rounds = 20000
    stream = sampler.global_indices(length=int(rounds * sampler.repeat_factors.sum()))
    mean_repeats = np.bincount(stream, minlength=4) / rounds
    np.testing.assert_allclose(mean_repeats, sampler.repeat_factors, rtol=0.01)


def test_repeat_factor_frequency_is_r_weighted():
    y = skewed(seed=2, n=500)
    sampler = make("repeat_factor", y, threshold=0.2, num_samples=50000, seed=3)
    r = sampler.repeat_factors
    positive = np.nan_to_num(y) > 0.5
    expected = (r[:, None] * positive).sum(axis=0) / r.sum()
    np.testing.assert_allclose(sampler.expected_frequency()[:4], expected)
    drawn = positive[sampler.global_indices()].mean(axis=0)
    np.testing.assert_allclose(drawn, expected, rtol=0.05)


# ----------------------------------------------------------- config / table
def test_config_validates_sampler_parameters():
    spec = SamplerSpec.model_validate({"name": "repeat_factor", "threshold": 0.1})
    assert spec.params == {"threshold": 0.1, "no_finding": "class"}
    sampler = spec.build(labels=HAND, num_samples=10, seed=1, rank=0, world_size=1)
    assert len(sampler) == 10
    for bad, message in [({"name": "repeat_factor"}, "threshold: required"),
                         ({"name": "repeat_factor", "threshold": 2}, "less than or equal to 1"),
                         ({"name": "cycle", "no_finding": "drop"}, "no_finding"),
                         ({"name": "cycle", "seed": 3}, "unknown key")]:
        with pytest.raises(Exception, match=message):
            SamplerSpec.model_validate(bad)


def test_a_label_of_one_half_is_positive_for_samplers_as_for_the_statistics():
    from cxrlt.data.stats import LabelStats, positive_matrix

    labels = np.array([[0.5, 0], [0, 1], [0.49, 1], [np.nan, 0]], dtype=np.float32)
    sampler = build("instance", labels=labels, seed=0, rank=0, world_size=1)
    np.testing.assert_array_equal(sampler.positive, positive_matrix(labels))
    np.testing.assert_allclose(sampler.expected_frequency(), [1 / 4, 2 / 4, 1 / 4])  # image 3: no positive
    assert LabelStats.from_labels(labels, ["a", "b"]).positives == [1, 2]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(InputError, match="shape"):
        build("cycle", labels=np.zeros(5))
    with pytest.raises(InputError, match="no image has a positive label"):
        build("cycle", labels=np.zeros((5, 2)), no_finding="ignore")
    with pytest.raises(ConfigError, match="num_samples"):
        build("instance", labels=HAND, num_samples=0)


def test_frequency_table():
    table = sampler_frequency_table(HAND, ["a", "b", "c"], "cycle", draws=4000, seed=0)
    assert table["class"].tolist() == ["a", "b", "c", NO_POSITIVE]
    assert table["positives"].tolist() == [2, 2, 1, 1]
    np.testing.assert_allclose(table["natural"], [0.5, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(table["expected"], [1.5 / 4, 2.5 / 4, 1.5 / 4, 1 / 4])
    np.testing.assert_allclose(table["empirical"], table["expected"], rtol=0.03)
    instance = sampler_frequency_table(HAND[:3], ["a", "b", "c"], "instance", draws=3)
    assert len(instance) == 3  # no unlabelled image, no extra row
    np.testing.assert_allclose(instance["empirical"], instance["natural"])
    np.testing.assert_allclose(instance["expected"], instance["natural"])


# ----------------------------------------------------------------- real NIH
@pytest.mark.real_data
def test_cycle_matches_eq1_on_nih_training_labels(shared_data):
    from cxrlt.data.sources.nih import nih as read_nih_table

    nih = shared_data / "nih"
    table = read_nih_table(labels=nih / "Data_Entry_2017_v2020.csv.gz", train_list=nih / "train_val_list.txt",
                     test_list=nih / "test_list.txt")
    train = table.labels[(table.meta["split"] != "test").to_numpy(dtype=bool)]
    assert train.shape == (86524, 14)
    frequencies = sampler_frequency_table(train, table.classes, "cycle", draws=500_000, seed=0)
    relative = (frequencies["empirical"] / frequencies["expected"] - 1).abs()
    assert relative.max() < 0.02, frequencies.assign(relative=relative).to_string()
    np.testing.assert_allclose(frequencies["expected"].iloc[:14], expected_label_frequency(train))
    # Each of the 15 sampling classes (14 + no finding) is picked 1/15 of the time.
    assert frequencies["expected"].iloc[-1] == pytest.approx(1 / 15)
