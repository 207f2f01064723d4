from cxrlt.evaluation.groups import class_groups


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
