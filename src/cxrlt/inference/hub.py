"""Models on the Hugging Face hub: `hf-hub:OWNER/NAME` names a pushed cxrlt model.

Downloads go through `huggingface_hub.snapshot_download`, so its cache
(HF_HOME / HF_HUB_CACHE) and offline mode (HF_HUB_OFFLINE=1: the cached
copy, no network) apply as for any hub model.
"""

from __future__ import annotations

from pathlib import Path

from cxrlt.errors import InputError

PREFIX = "hf-hub:"


def is_hub_name(path: str | Path) -> bool:
    return str(path).startswith(PREFIX)


def hub_model_folder(name: str) -> Path:
    """The local folder of hub model `hf-hub:OWNER/NAME` (downloaded or taken from the HF cache)."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id = name[len(PREFIX):]
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise InputError(f"{name!r}: a hub model is named hf-hub:OWNER/NAME")
    try:
        return Path(huggingface_hub.snapshot_download(repo_id=repo_id, repo_type="model"))
    except LocalEntryNotFoundError:
        raise InputError(f"{name}: not in the local Hugging Face cache and the hub cannot be reached (offline, "
                         "HF_HUB_OFFLINE=1, or no network); download it once while online") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise InputError(f"{name}: cannot fetch it from the hub ({type(exc).__name__}: {detail})") from None


def local_model(path: str | Path) -> Path:
    """`path` itself, or the local folder of a `hf-hub:` name."""
    return hub_model_folder(str(path)) if is_hub_name(path) else Path(path)
