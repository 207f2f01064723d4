"""model.init_from: a new model starts from a saved model's backbone and its shared classes' classifier rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from saved_models import saved_model

from cxrlt.config import ModelConfig
from cxrlt.errors import ConfigError
from cxrlt.inference.saved_model import load_model
from cxrlt.models.build import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

# The source's classes (saved_models.CLASSES): Atelectasis, Cardiomegaly, Pleural Effusion, Edema, Mass.
NEW = ["Effusion", "Pneumomediastinum", "Atelectasis"]  # "Effusion" is "Pleural Effusion" by canonical name


def new_model(source, head: dict, backbone: str = "resnet10t"):
    torch.manual_seed(1)
    config = ModelConfig(backbone=backbone, head=head, init_from=source)
    context = {"class_names": NEW, "train_labels": np.eye(len(NEW), dtype=np.float32)}
    return build_model(config, len(NEW), 32, context=context)


def fresh(head: dict):
    torch.manual_seed(1)
    context = {"class_names": NEW, "train_labels": np.eye(len(NEW), dtype=np.float32)}
    return build_model(ModelConfig(backbone="resnet10t", head=head), len(NEW), 32, context=context)


@pytest.mark.parametrize("head", [{"name": "linear"},
                                  {"name": "query", "dim": 16, "layers": 1, "heads": 4, "ffn": 32,
                                   "embeddings": {"dim": 8}}], ids=["linear", "query"])
def test_backbone_and_shared_classes_rows_come_from_the_source(tmp_path, head):
    source = saved_model(tmp_path / "run", head)
    old, _ = load_model(source)
    model = new_model(source, head)
    for key, value in old.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value)
    before = fresh(head).state_dict()
    per_class = [k for k, v in old.head.named_parameters() if v.shape[:1] == (5,)]
    assert per_class, "the head has per-class parameters"
    for key in per_class:
        mine, theirs, untouched = model.head.state_dict()[key], old.head.state_dict()[key], before["head." + key]
        torch.testing.assert_close(mine[0], theirs[2])  # Effusion <- Pleural Effusion
        torch.testing.assert_close(mine[2], theirs[0])  # Atelectasis
        torch.testing.assert_close(mine[1], untouched[1])  # Pneumomediastinum: the new model's own initialisation


def test_a_source_that_does_not_fit_is_refused_naming_keys(tmp_path):
    source = saved_model(tmp_path / "run", {"name": "linear"})
    with pytest.raises(ConfigError, match=r"the backbone of .* \(resnet10t\) does not fit this model's \(resnet18\).*"
                                          r"e\.g\. backbone\.model\.conv1\.0\.weight"):
        new_model(source, {"name": "linear"}, backbone="resnet18")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("name: x\n")
    with pytest.raises(ConfigError, match="is a run that has not finished"):
        new_model(unfinished, {"name": "linear"})


def test_a_saved_fine_tuned_model_loads_without_its_source(tmp_path):
    """The card keeps init_from, but loading a saved model never reads the source again."""
    import shutil

    from cxrlt.inference.saved_model import export_model
    from cxrlt.models.card import ModelCard

    source = saved_model(tmp_path / "run", {"name": "linear"})
    model = new_model(source, {"name": "linear"})
    config = ModelConfig(backbone="resnet10t", head={"name": "linear"}, init_from=source)
    export_model(model, tmp_path / "tuned", ModelCard(model=config, classes=NEW, image_size=32))
    shutil.rmtree(source)
    loaded, card = load_model(tmp_path / "tuned")
    assert card.model.init_from == source
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
