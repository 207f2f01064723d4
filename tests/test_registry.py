"""The one registration pattern: leaf registries, lazy completion, the table of kinds, shared options."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cxrlt.commands.methods import describe
from cxrlt.config import Component, LossSpec
from cxrlt.errors import ConfigError
from cxrlt.registry import KINDS, Registry, kind

SRC = Path(__file__).resolve().parents[1] / "src"


def fresh_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_registry_is_complete_whichever_module_is_imported_first():
    # Only the leaf is imported: it brings in no pydantic or torch, and reading a registry imports its package.
    out = fresh_python(
        "import sys, json\n"
        "from cxrlt.registry import KINDS\n"
        "light = not any(m in sys.modules for m in ('torch', 'pydantic', 'pandas'))\n"
        "print(json.dumps({'light': light, 'names': {k: r.names() for k, r in KINDS.items()}}))\n"
    )
    fresh = json.loads(out)
    assert fresh["light"]
    assert fresh["names"] == {name: registry.names() for name, registry in KINDS.items()}
    assert fresh["names"]["loss"] == ["asl", "bce", "class_aware", "class_balanced", "distribution_balanced",
                                      "effective_number_focal", "focal", "ldam", "logit_adjusted", "weighted_bce"]
    assert fresh["names"]["source"] == ["chexpert", "csv", "mimic", "nih", "synthetic"]


def test_the_config_loader_imports_no_torch():
    assert fresh_python("import sys, cxrlt.config\nprint('torch' in sys.modules)").strip() == "False"


def test_config_and_cxrlt_methods_read_one_table(monkeypatch):
    assert {component.kind for component in Component.__subclasses__()} == set(KINDS)
    toy = Registry("loss", config_key="loss.name")

    @toy.register("toy")
    def toy_loss(weight: float = 2.0) -> float:
        """A stand-in loss."""
        return weight

    monkeypatch.setitem(KINDS, "loss", toy)
    assert LossSpec.model_validate({"name": "toy"}).params == {"weight": 2.0}
    assert "  toy: A stand-in loss.\n      weight: float = 2.0" in describe("loss")
    with pytest.raises(ConfigError, match="unknown kind 'losses'; choose from: source, loss"):
        kind("losses")


class _Base:
    def __init__(self, *, shared: int = 1, context_value: object = None):
        self.shared, self.context_value = shared, context_value


class _Middle(_Base):
    def __init__(self, middle: str = "m", **options):
        super().__init__(**options)
        self.middle = middle


class _Leaf(_Middle):
    def __init__(self, own: float = 0.5, shared: int = 7, **options):
        super().__init__(shared=shared, **options)
        self.own = own


class _Closed(_Base):
    def __init__(self, own: float = 0.5):
        super().__init__()
        self.own = own


def test_options_passed_on_to_base_classes_are_in_the_schema():
    registry = Registry("toy")
    registry.register("leaf", context=("context_value",))(_Leaf)
    registry.register("closed")(_Closed)
    fields = registry.entry("leaf").params.model_fields
    # own parameters first, then each base's in MRO order; the subclass's default wins; context is left out
    assert {name: info.default for name, info in fields.items()} == {"own": 0.5, "shared": 7, "middle": "m"}
    built = registry.build("leaf", context={"context_value": "ctx"}, middle="x", shared=3)
    assert (built.own, built.shared, built.middle, built.context_value) == (0.5, 3, "x", "ctx")
    with pytest.raises(ConfigError, match="unknown key"):
        registry.validate("closed", {"shared": 2})  # no **options: the base's options are not its own


def test_no_module_defines_its_own_parameter_types():
    """Constrained parameter types (`X = Annotated[...]`) are defined in cxrlt.params only."""
    offenders = []
    for path in sorted((SRC / "cxrlt").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript) \
                    and ast.unparse(node.value.value) == "Annotated" and path.name != "params.py":
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []
