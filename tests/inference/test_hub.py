"""Hub models: `cxrlt push` (what it would send) and `hf-hub:OWNER/NAME` from the local HF cache, offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub
import pandas as pd
import pytest
from saved_models import CLASSES, image_files, saved_model

from cxrlt.cli import main
from cxrlt.errors import InputError
from cxrlt.inference.publish import push

pytestmark = pytest.mark.usefixtures("one_thread")

PUSHED = ["README.md", "model.json", "model.onnx", "model.safetensors", "model_export.json"]


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch):
    """An empty HF cache, with huggingface_hub offline (as HF_HUB_OFFLINE=1 would make it at import)."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def place_in_cache(cache, repo_id, files):
    """Lay `files` out as huggingface_hub caches a downloaded model repository (refs/main -> snapshots/COMMIT)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, snapshot / path.name)
    return snapshot


def test_a_dry_run_lists_the_exact_files_and_arguments_and_sends_nothing(tmp_path, monkeypatch, capsys):
    model_dir = saved_model(tmp_path / "run", {"name": "linear"})
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: pytest.fail("a dry run must not reach the hub"))
    plan = push(model_dir, "my-lab/cxrlt-demo", private=True, dry_run=True)
    assert plan.files == PUSHED
    assert plan.create_repo == {"repo_id": "my-lab/cxrlt-demo", "repo_type": "model", "private": True,
                                "exist_ok": True}
    assert plan.upload_folder["repo_id"] == "my-lab/cxrlt-demo" and plan.upload_folder["repo_type"] == "model"
    assert main(["push", str(model_dir), "--repo", "my-lab/cxrlt-demo", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload 5 files to https://huggingface.co/my-lab/cxrlt-demo (public):" in out
    assert all(f"  {name}\n" in out for name in PUSHED)


def test_a_push_creates_the_repo_and_uploads_the_staged_folder(tmp_path, monkeypatch):
    model_dir = saved_model(tmp_path / "run", {"name": "linear"})
    calls = []

    class RecordingApi:
        def create_repo(self, **kwargs):
            calls.append(("create_repo", kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", {**kwargs, "files": sorted(p.name for p in
                                                                      Path(kwargs["folder_path"]).iterdir())}))

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    push(model_dir, "my-lab/cxrlt-demo")
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    assert calls[0][1] == {"repo_id": "my-lab/cxrlt-demo", "repo_type": "model", "private": False, "exist_ok": True}
    assert calls[1][1]["files"] == PUSHED and calls[1][1]["commit_message"] == "Upload cxrlt model from run"


def test_a_bad_repo_name_is_refused(tmp_path):
    with pytest.raises(InputError, match="expected OWNER/NAME"):
        push(saved_model(tmp_path / "run", {"name": "linear"}), "no-owner", dry_run=True)


def test_predict_from_the_hub_uses_the_local_cache_offline(tmp_path, offline_cache):
    model_dir = saved_model(tmp_path / "run", {"name": "linear"})
    images, _ = image_files(tmp_path / "images")
    assert main(["predict", str(model_dir), str(images), "--out", str(tmp_path / "local.csv"), "--no-progress"]) == 0
    place_in_cache(offline_cache, "my-lab/cxrlt-demo", [model_dir / "model.safetensors", model_dir / "model.json"])
    assert main(["predict", "hf-hub:my-lab/cxrlt-demo", str(images), "--out", str(tmp_path / "hub.csv"),
                 "--no-progress"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "hub.csv"), pd.read_csv(tmp_path / "local.csv"))
    assert list(pd.read_csv(tmp_path / "hub.csv").columns) == ["image_id", *CLASSES]
    # The Python loader takes the same name.
    from cxrlt.inference.saved_model import load_model

    _, card = load_model("hf-hub:my-lab/cxrlt-demo")
    assert card.classes == CLASSES


def test_a_hub_model_missing_from_the_cache_offline_says_so(tmp_path, offline_cache, capsys):
    images, _ = image_files(tmp_path / "images")
    assert main(["predict", "hf-hub:my-lab/absent", str(images), "--out", str(tmp_path / "p.csv")]) == 2
    assert "not in the local Hugging Face cache and the hub cannot be reached" in capsys.readouterr().err
