"""Checkpoint files: written atomically, read without executing code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cxrlt.errors import InputError
from cxrlt.io import atomic_path, ensure_space


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that renames a complete temp file into place
    and always loads with `weights_only=True` (plain tensors and containers)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        # torch.save reports a full disk as a generic RuntimeError: check the space the tensors need first.
        ensure_space(path, _tensor_bytes(checkpoint))
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location or "cpu")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint dictionary, refusing anything that needs code to unpickle."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError for crafted files, RuntimeError for corrupt ones
        raise InputError(
            f"refused to load this checkpoint: it is corrupt or contains objects that would need code to be "
            f"executed to load ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Checkpoints are only "
            "loaded with weights_only=True.", path
        ) from None


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The `model.` weights of a Lightning checkpoint, prefix removed."""
    return {key[len("model."):]: value for key, value in checkpoint["state_dict"].items() if key.startswith("model.")}


def _tensor_bytes(tree: Any) -> int:
    """Bytes of every tensor in a nested checkpoint dictionary."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(_tensor_bytes(value) for value in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(_tensor_bytes(value) for value in tree)
    return 0
