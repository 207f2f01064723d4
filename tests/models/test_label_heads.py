"""Label-aware heads: ML-GCN, experts (RIDE, MHA), query decoder; rebuild from saved weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from tiny_text_encoder import make_tiny_bert

from cxrlt.config import ModelConfig
from cxrlt.errors import ConfigError
from cxrlt.losses import build as build_loss
from cxrlt.losses import diversity_loss
from cxrlt.models.backbones import create_backbone
from cxrlt.models.build import build_model
from cxrlt.models.heads.experts import take_last_stage
from cxrlt.models.graph import gcn_adjacency
from cxrlt.models.label_graph import GraphFile
from cxrlt.inference.saved_model import export_model, load_model
from cxrlt.models.card import ModelCard

CLASSES = ["Atelectasis", "Cardiomegaly", "Pleural Effusion", "Edema", "Mass"]
LABELS = (np.random.default_rng(0).random((300, 5)) < [0.4, 0.2, 0.3, 0.1, 0.05]).astype(np.float32)
LABELS[:60, 2] = LABELS[:60, 0]  # some co-occurrence structure
CONTEXT = {"class_names": CLASSES, "train_labels": LABELS}


pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def model_of(head: dict, backbone: str = "resnet10t", pooling: str = "avg", context=CONTEXT, **kwargs):
    torch.manual_seed(0)
    config = ModelConfig(backbone=backbone, head=head, pooling=pooling, **kwargs)
    return build_model(config, len(CLASSES), context=context).eval(), config


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture()
def vectors_file(tmp_path):
    vectors = np.random.default_rng(1).normal(size=(len(CLASSES), 12)).astype(np.float32)
    np.savez(tmp_path / "vectors.npz", classes=np.asarray(CLASSES), embeddings=vectors)
    return tmp_path / "vectors.npz", vectors


# -------------------------------------------------------------------- GCN
def test_gcn_logits_are_pooled_features_times_the_gcn_output(vectors_file):
    path, vectors = vectors_file
    model, _ = model_of({"name": "gcn", "embeddings": {"method": "file", "path": str(path), "normalise": False}})
    head = model.head
    assert head.gcn.layer1.weight.shape == (256, 12) and head.gcn.layer2.weight.shape == (512, 256)
    x = images()
    with torch.no_grad():
        features = model.features(x)
        a = torch.as_tensor(gcn_adjacency(LABELS), dtype=torch.float32)
        e = torch.as_tensor(vectors)
        hidden = F.leaky_relu(a @ e @ head.gcn.layer1.weight.T, 0.2)
        w = a @ hidden @ head.gcn.layer2.weight.T
        expected = features.mean(dim=(2, 3)) @ w.T
        assert torch.allclose(head.graph.adjacency, a, atol=1e-6)
        assert torch.allclose(model(x), expected, atol=1e-5)
        assert model(x).shape == (2, 5)


def test_gcn_permuting_classes_permutes_logits(vectors_file):
    path, _ = vectors_file
    head = {"name": "gcn", "embeddings": str(path)}
    model, _ = model_of(head)
    perm = [3, 0, 4, 2, 1]
    permuted, _ = model_of(head, context={"class_names": [CLASSES[i] for i in perm], "train_labels": LABELS[:, perm]})
    shared = {k: v for k, v in model.state_dict().items() if not k.startswith("head.graph.")}
    permuted.load_state_dict(shared, strict=False)
    x = images()
    with torch.no_grad():
        assert torch.allclose(permuted(x), model(x)[:, perm], atol=1e-5)


def test_gcn_from_a_graph_file_matches_the_labels(tmp_path):
    graph = GraphFile.from_labels(LABELS, CLASSES, {"dim": 16}).save(tmp_path / "graph.npz")
    from_file, _ = model_of({"name": "gcn", "graph": str(graph)})
    from_labels, _ = model_of({"name": "gcn", "embeddings": {"dim": 16}})
    assert torch.equal(from_file.head.graph.adjacency, from_labels.head.graph.adjacency)
    assert torch.equal(from_file.head.graph.vectors.vectors, from_labels.head.graph.vectors.vectors)
    with pytest.raises(ConfigError, match="tau"):
        model_of({"name": "gcn", "tau": 0.0})


def test_gcn_reset_classifier_redraws_only_the_gcn(vectors_file):
    model, _ = model_of({"name": "gcn", "embeddings": str(vectors_file[0])})
    before = copy.deepcopy(model.state_dict())
    model.head.reset_classifier()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.gcn.layer1.weight", "head.gcn.layer2.weight"}


@pytest.mark.parametrize("head", [{"name": "linear"}, {"name": "gcn", "embeddings": {"dim": 8}},
                                  {"name": "experts", "experts": 2}, {"name": "experts", "classifier": "gcn"}])
def test_class_maps_average_to_the_logits_under_average_pooling(head):
    model, _ = model_of(head)
    x = images()
    with torch.no_grad():
        maps = model.head.class_maps(model.features(x))
        assert maps.shape[:2] == (2, 5)
        assert torch.allclose(maps.mean(dim=(2, 3)), model(x), atol=1e-5)


# ---------------------------------------------------------------- experts
@pytest.mark.parametrize("name", ["resnet10t", "densenet121", "convnext_atto", "efficientnet_b0", "regnetx_002"])
def test_shared_part_then_last_stage_is_the_whole_backbone(name):
    torch.manual_seed(0)
    backbone = create_backbone(name, in_chans=1).eval()
    whole = copy.deepcopy(backbone)
    stage = take_last_stage(backbone).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        shared = backbone(x)
        assert shared.shape[1] != whole.num_features or shared.shape[2] > whole(x).shape[2]
        assert torch.equal(stage(shared), whole(x))


def test_unsupported_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot split backbone 'mobilenetv3_small_050'"):
        model_of({"name": "experts"}, backbone="mobilenetv3_small_050")


def test_experts_output_is_the_mean_of_expert_logits():
    model, _ = model_of({"name": "experts", "experts": 3}, pooling={"name": "lse", "gamma": 0.5})
    head = model.head
    x = images()
    with torch.no_grad():
        shared = model.features(x)
        expert_logits = []
        for stage, fc in zip(head.stages, head.classifiers):
            pooled = torch.logsumexp(0.5 * stage(shared).flatten(2), dim=2) / 0.5 - np.log(4) / 0.5  # 2x2 map
            expert_logits.append(fc(pooled))
        stacked = torch.stack(expert_logits)
        assert torch.allclose(model(x, training_outputs=True), stacked, atol=1e-5)
        assert torch.allclose(model(x), stacked.mean(dim=0), atol=1e-5)


@pytest.mark.parametrize("form", ["approximate", "pairwise"])
def test_diversity_is_zero_for_identical_experts_and_negative_otherwise(form):
    model, _ = model_of({"name": "experts", "experts": 3, "diversity_form": form})
    criterion = build_loss("bce")
    targets = torch.as_tensor(LABELS[:2])
    x = images()
    with torch.no_grad():
        outputs = model(x, training_outputs=True)
        loss = model.training_loss(criterion, outputs, targets)
        expected = sum(criterion(z, targets) for z in outputs) + 0.2 * diversity_loss(outputs, form)
        assert diversity_loss(outputs, form) < -1e-4
        assert torch.allclose(loss, expected)
        for other in model.head.classifiers[1:]:  # all experts equal: same stage copies, same classifier
            other.load_state_dict(model.head.classifiers[0].state_dict())
        same = model(x, training_outputs=True)
        assert abs(float(diversity_loss(same, form))) < 1e-6
        assert torch.allclose(model.training_loss(criterion, same, targets), 3 * criterion(same[0], targets))


def test_classification_on_the_mean_and_no_diversity_options():
    model, _ = model_of({"name": "experts", "experts": 2, "per_expert_loss": False, "diversity": 0.0})
    criterion, targets = build_loss("bce"), torch.as_tensor(LABELS[:2])
    with torch.no_grad():
        outputs = model(images(), training_outputs=True)
        assert torch.allclose(model.training_loss(criterion, outputs, targets), criterion(outputs.mean(0), targets))


def test_classification_on_the_mean_plus_lambda_times_the_diversity_term():
    """What seed 002 trains with when the loss is taken on the head's output (the mean of the experts)."""
    model, _ = model_of({"name": "experts", "experts": 3, "per_expert_loss": False, "diversity_form": "pairwise"})
    criterion, targets = build_loss("bce"), torch.as_tensor(LABELS[:2])
    with torch.no_grad():
        outputs = model(images(), training_outputs=True)
        expected = criterion(outputs.mean(0), targets) + 0.2 * diversity_loss(outputs, "pairwise")
        assert torch.allclose(model.training_loss(criterion, outputs, targets), expected)


@pytest.mark.parametrize("mode", ["separate", "joint"])
def test_mha_starts_as_the_identity_and_is_shared(mode):
    plain, _ = model_of({"name": "experts", "experts": 2, "classifier": "gcn", "embeddings": {"dim": 8}})
    with_mha, _ = model_of({"name": "experts", "experts": 2, "classifier": "gcn", "embeddings": {"dim": 8},
                            "mha": mode, "mha_heads": 4})
    layer_params = sum(p.numel() for p in with_mha.head.mha.parameters())
    assert sum(p.numel() for p in with_mha.parameters()) == sum(p.numel() for p in plain.parameters()) + layer_params
    with_mha.load_state_dict(plain.state_dict(), strict=False)
    x = images()
    with torch.no_grad():
        assert torch.allclose(with_mha(x), plain(x), atol=1e-5)
        # once its output projections are non-zero, the layer changes the logits
        torch.nn.init.normal_(with_mha.head.mha.linear2.weight, std=0.05)
        assert not torch.allclose(with_mha(x), plain(x), atol=1e-3)
    with_mha.head.reset_classifier()
    assert torch.count_nonzero(with_mha.head.mha.linear2.weight) == 0
    with pytest.raises(ConfigError, match="mha_heads"):
        model_of({"name": "experts", "mha": "separate", "mha_heads": 7})


def test_experts_stages_are_features_and_survive_reset():
    model, _ = model_of({"name": "experts", "experts": 2})
    stage_params = {id(p) for p in model.head.stages.parameters()}
    assert stage_params <= {id(p) for p in model.backbone_parameters()}
    assert model.head.stages in model.feature_modules()
    before = copy.deepcopy(model.state_dict())
    model.head.reset_classifier()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {f"head.classifiers.{i}.{p}" for i in range(2) for p in ("weight", "bias")}


# ------------------------------------------------------------------ query
def test_query_head_shapes_and_classifier_variants():
    separate, _ = model_of({"name": "query", "dim": 32, "layers": 2, "heads": 4, "ffn": 64, "embeddings": {"dim": 8}})
    shared, _ = model_of({"name": "query", "dim": 32, "layers": 2, "heads": 4, "ffn": 64, "embeddings": {"dim": 8},
                          "separate": False})
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(separate) - count(shared) == (5 * 32 + 5) - (32 + 1)
    x = images()
    with torch.no_grad():
        out = separate.head.decoder(
            separate.head.query(separate.head.labels())[None].expand(2, -1, -1),
            separate.head.memory(separate.features(x)),
        )
        expected = (out * separate.head.class_weight).sum(-1) + separate.head.class_bias
        assert torch.allclose(separate(x), expected, atol=1e-5)
        assert shared(x).shape == (2, 5)
    before = copy.deepcopy(separate.state_dict())
    separate.head.reset_classifier()
    changed = {k for k, v in separate.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"head.class_weight", "head.class_bias"}


def test_zero_shot_scores_new_names_without_touching_trained_ones(tiny_bert):
    head = {"name": "query", "dim": 32, "layers": 2, "heads": 4, "ffn": 64,
            "embeddings": {"method": "text", "model": str(tiny_bert), "prompt": "chest x-ray showing {name}"}}
    model, _ = model_of(head)
    x = images()
    with torch.no_grad():
        features = model.features(x)
        logits = model(x)
        scores = model.head.score_classes(features, ["Pleural Effusion", "Hernia", "Bulla", "Edema"])
        assert scores.shape == (2, 4)
        assert torch.allclose(scores[:, 0], logits[:, 2], atol=1e-5) and torch.allclose(scores[:, 3], logits[:, 3],
                                                                                         atol=1e-5)
        assert not torch.allclose(scores[:, 1], scores[:, 2], atol=1e-4)  # the score changes with the name
        alone = model.head.score_classes(features, ["Bulla"])
        assert torch.allclose(alone[:, 0], scores[:, 2], atol=1e-5)  # independent of the other names asked
        new_classifier = model.head.class_weight.mean(0), model.head.class_bias.mean()
        assert new_classifier[0].shape == (32,)
    glove, _ = model_of({"name": "query", "dim": 32, "heads": 4, "layers": 1, "embeddings": {"dim": 8}})
    with pytest.raises(ConfigError, match="only for the training classes"):
        glove.head.score_classes(glove.features(x), ["Bulla"])


# ---------------------------------------------------------- save and load
ROUND_TRIP = {
    "linear": {"name": "linear"},
    "gcn": {"name": "gcn", "embeddings": {"dim": 16}},
    "experts": {"name": "experts", "experts": 2},
    "experts_gcn_mha": {"name": "experts", "experts": 2, "classifier": "gcn", "mha": "separate", "mha_heads": 4},
    "experts_joint": {"name": "experts", "experts": 2, "mha": "joint", "mha_heads": 4},
    "query_separate": {"name": "query", "dim": 32, "layers": 1, "heads": 4, "ffn": 64},
    "query_shared": {"name": "query", "dim": 32, "layers": 1, "heads": 4, "ffn": 64, "separate": False},
}


@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_export_and_load_give_identical_outputs(tmp_path, name):
    model, config = model_of(ROUND_TRIP[name])
    with torch.no_grad():  # non-trivial MHA / classifier weights
        for parameter in model.head.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    export_model(model, tmp_path, ModelCard(model=config, classes=CLASSES, image_size=64))
    loaded, card = load_model(tmp_path)
    x = images(seed=3)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert card.classes == CLASSES


def test_round_trip_with_file_graph_and_text_queries_needs_no_source_files(tmp_path, tiny_bert, vectors_file,
                                                                            monkeypatch):
    graph = GraphFile.from_labels(LABELS, CLASSES, str(vectors_file[0])).save(tmp_path / "graph.npz")
    gcn, gcn_config = model_of({"name": "gcn", "graph": str(graph)})
    query, query_config = model_of({"name": "query", "dim": 32, "layers": 1, "heads": 4, "ffn": 64,
                                    "embeddings": {"method": "text", "model": str(tiny_bert)},
                                    "zero_shot_classes": ["Bulla"]})
    export_model(gcn, tmp_path / "gcn", ModelCard(model=gcn_config, classes=CLASSES, image_size=64))
    export_model(query, tmp_path / "query", ModelCard(model=query_config, classes=CLASSES, image_size=64))
    graph.unlink()  # the saved model carries its graph, vectors and zero-shot queries
    monkeypatch.setattr("cxrlt.models.embeddings._text_encoder", lambda model: pytest.fail("encoder was loaded"))
    x = images(seed=4)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "gcn")[0](x), gcn(x))
        loaded = load_model(tmp_path / "query")[0]
        assert torch.equal(loaded(x), query(x))
        features = query.features(x)
        assert torch.equal(loaded.head.score_classes(features, ["Bulla", "Edema"]),
                           query.head.score_classes(features, ["Bulla", "Edema"]))


def test_a_rebuilt_head_without_its_saved_state_refuses_to_run():
    model, _ = model_of({"name": "gcn", "embeddings": {"dim": 8}}, context={"class_names": CLASSES})
    with pytest.raises(RuntimeError, match="load a saved state"):
        model(images())


def test_timm_convnext_post_pool_norm_runs_on_pooled_features():
    model, _ = model_of({"name": "linear"}, backbone="convnext_atto")
    reference = timm.create_model("convnext_atto", num_classes=0, in_chans=1)  # pools, then its LayerNorm2d
    reference.load_state_dict({k.removeprefix("model."): v for k, v in model.backbone.state_dict().items()
                               if not k.startswith("model.head.")}, strict=False)
    reference.head.norm.load_state_dict(model.head.post_pool.state_dict())
    reference.eval()
    x = images()
    with torch.no_grad():
        pooled = model.head.post_pool(model.features(x).mean(dim=(2, 3)))
        assert torch.allclose(pooled, reference(model.normalise(x)), atol=1e-5)
