"""Publish a trained model to the Hugging Face hub (`cxrlt push`).

What is sent is decided here and checkable without a hub (`PushPlan`, the
dry run): the saved model, the model card README.md, and an ONNX export
with its sidecar, all staged in one folder and uploaded in one commit.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrlt.errors import InputError
from cxrlt.layout import ExportFiles


@dataclass
class PushPlan:
    """The repository, its visibility, the files (names in the repo) and the huggingface_hub calls' arguments."""

    repo_id: str
    private: bool
    files: list[str]
    create_repo: dict[str, Any] = field(default_factory=dict)
    upload_folder: dict[str, Any] = field(default_factory=dict)


def push(run: str | Path, repo_id: str, private: bool = False, dry_run: bool = False) -> PushPlan:
    """Stage the model of `run` with an ONNX export and upload it to `repo_id` (or, with `dry_run`, only plan it)."""
    from cxrlt.inference.export import export, saved_model_folder

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise InputError(f"--repo {repo_id!r}: expected OWNER/NAME")
    source = saved_model_folder(run)
    with tempfile.TemporaryDirectory(prefix="cxrlt-push-") as tmp:
        staged = ExportFiles(Path(tmp) / "model")
        # An export of the saved model: graph, sidecar, weights, model.json, README (written from `source`).
        export(source, "onnx", staged.folder)
        existing = ExportFiles(source).graph("torchscript")
        if existing.is_file():
            shutil.copy2(existing, staged.graph("torchscript"))
        files = sorted(p.name for p in staged.folder.iterdir() if p.is_file())
        message = f"Upload cxrlt model from {Path(run).name}"
        plan = PushPlan(repo_id, private, files,
                        create_repo={"repo_id": repo_id, "repo_type": "model", "private": private, "exist_ok": True},
                        upload_folder={"repo_id": repo_id, "repo_type": "model", "folder_path": "<staged export>",
                                       "commit_message": message})
        if not dry_run:
            from huggingface_hub import HfApi

            api = HfApi()
            api.create_repo(**plan.create_repo)
            api.upload_folder(**{**plan.upload_folder, "folder_path": str(staged.folder)})
    return plan
