"""Atomic writes: complete or absent, normal permissions, no escaping paths."""

from __future__ import annotations

import os
import stat

import pytest

from cxrlt.errors import InputError
from cxrlt.io import atomic_path, read_json, safe_name, write_json, write_text


def test_failed_write_leaves_destination_untouched_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_json_nan_becomes_null_and_bad_json_is_an_input_error(tmp_path):
    write_json(tmp_path / "m.json", {"auc": float("nan"), "xs": [1.0, float("inf")]})
    assert read_json(tmp_path / "m.json") == {"auc": None, "xs": [1.0, None]}
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(InputError, match=r"bad\.json, line 1: not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_safe_name_is_one_file_name():
    assert safe_name("nested/a b?.png") == "nested_a_b_.png" and safe_name("../") == "unnamed"
    assert safe_name("../../etc/passwd") == "etc_passwd" and safe_name(".hidden") == "hidden"
