"""Every module imports on its own, whatever was imported before it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Imports each module named on stdin as if first in a fresh interpreter: every
# cxrlt module is dropped from sys.modules before the next one, so an import
# cycle that only works in some order shows up. Third-party modules (torch,
# timm) stay loaded, which keeps this to seconds instead of a process each.
_IMPORT_EACH = """
import importlib, sys, traceback
failed = []
for name in sys.stdin.read().split():
    for loaded in [m for m in sys.modules if m == "cxrlt" or m.startswith("cxrlt.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=-1).strip().splitlines()[-1])
print("\\n".join(failed))
"""


def module_names(src: Path = SRC) -> list[str]:
    """Every module of the cxrlt package under `src` (`cxrlt.__main__` runs the CLI and is left out)."""
    names = []
    for path in sorted((src / "cxrlt").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] != "__main__":
            names.append(".".join(parts))
    return names


def test_every_module_imports_alone():
    names = module_names()
    assert {"cxrlt", "cxrlt.models.heads", "cxrlt.data.sources.nih"} <= set(names)
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH], input="\n".join(names), capture_output=True,
                            text=True, env={"PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"modules that fail to import first:\n{result.stdout}"


def test_label_statistics_import_nothing_above_the_data_layer():
    """`cxrlt.data.stats` is the data layer's: evaluation, models and training import it, never the reverse."""
    code = ("import sys, cxrlt.data.stats; print(' '.join(sorted(m for m in sys.modules if m.split('.')[:2] in "
            "(['cxrlt', 'evaluation'], ['cxrlt', 'models'], ['cxrlt', 'training'], ['cxrlt', 'runs']))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
