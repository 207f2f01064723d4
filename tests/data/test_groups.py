from cxrlt.data.stats import class_groups


def test_rank_groups_seed002_split_of_26():
    counts = list(range(100, 2700, 100))  # 26 classes, ascending
    groups = class_groups(counts, head=9, tail=9)
    assert groups[:9] == ["tail"] * 9
    assert groups[-9:] == ["head"] * 9
    assert groups.count("medium") == 8


def test_rank_default_thirds_and_ties_by_order():
    assert class_groups([5, 5, 5]) == ["head", "medium", "tail"]
    assert class_groups([1, 50, 10, 7, 3, 30]) == ["tail", "head", "medium", "medium", "tail", "head"]


def test_count_thresholds():
    assert class_groups([1000, 999, 100, 99], method="count") == ["head", "medium", "medium", "tail"]


def test_group_sizes_are_the_label_spaces_in_any_order_or_spelling():
    from cxrlt.labels import CXRLT2023, NIH14, group_sizes

    assert group_sizes(CXRLT2023) == (9, 9)  # seed 002, Table 1
    assert group_sizes(list(reversed(CXRLT2023))) == (9, 9)
    assert group_sizes([name.replace("Pleural Effusion", "Effusion") for name in CXRLT2023]) == (9, 9)
    assert group_sizes(NIH14) == (4, 4)
    assert group_sizes([f"c{j}" for j in range(26)]) == (8, 8)  # not a label space: a third each


def test_rank_default_follows_the_label_space_of_the_classes():
    from cxrlt.labels import CXRLT2023

    counts = list(range(100, 2700, 100))  # 26 classes, ascending
    assert [class_groups(counts, classes=CXRLT2023).count(g) for g in ("head", "medium", "tail")] == [9, 8, 9]
    assert [class_groups(counts).count(g) for g in ("head", "medium", "tail")] == [8, 10, 8]
    assert class_groups(counts, head=5, classes=CXRLT2023).count("head") == 5  # an explicit size wins


def test_training_statistics_and_config_use_the_label_space_default():
    import numpy as np

    from cxrlt.config import GroupsConfig
    from cxrlt.data.stats import LabelStats
    from cxrlt.labels import CXRLT2023

    labels = (np.random.default_rng(0).random((500, 26)) < np.linspace(0.02, 0.6, 26)).astype(np.float32)
    groups = LabelStats.from_labels(labels, CXRLT2023).groups(**GroupsConfig().model_dump())
    assert [groups.count(g) for g in ("head", "medium", "tail")] == [9, 8, 9]
    assert groups[-1] == "head" and groups[0] == "tail"
