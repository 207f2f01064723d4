"""Experts head (seed 002, SPEC 3): n experts on a shared early backbone, RIDE diversity, optional MHA.

The head takes over the backbone's last stage: the backbone keeps the
early stages (shared by all experts; `CxrModel.features` then returns the
shared map), and each expert owns a copy of the last stage, its pooling
(a copy of `model.pooling`; seed 002 uses `lse` with gamma 0.5), its
post-pool norm and its classifier (`linear`, or `gcn`: its own two GCN
layers over one shared label graph, as in the paper). The output is the
mean of the experts' logits. Experts start from the same (pretrained) last
stage and differ through their classifiers and the diversity term.

Training: `training_outputs` gives every expert's logits (n, B, K) and
`training_loss` adds `diversity` x the RIDE term (SPEC 1.8,
`cxrlt.losses.diversity`; `diversity_form` approximate (eq. 3) or pairwise
(eq. 2)) to the sum over experts of each expert's classification loss, as
RIDE trains (`per_expert_loss`, default). With `per_expert_loss: false`
the classification loss is taken on the mean logits only; then the total
is unbounded below (two experts can push their logits to +inf and -inf
without moving the mean while the diversity term falls without limit), and
short toy runs do drift there.

MHA (`mha`), our reading of seed 002 sec. 3.1 / 3.5 / fig. 4: one
transformer encoder layer (pre-norm) whose weights are shared by the two
modalities and by all experts. Each expert's classifier rows (K label
vectors of size C: the GCN output or the linear weights) and its pooled
image vector are the tokens. `separate` (the paper's "applied to each
modality", the default reading): the layer runs on the K label tokens
(attention mixes the classifiers of correlated labels) and, on its own, on
the image token (where attention over one token reduces to its value and
output projections: a shared residual MLP). `joint`: one sequence of the
image token and the K label tokens per image, so the label vectors are
conditioned on the image. Logits_k = <image token, label token k> (+ bias).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import timm.models.convnext
import timm.models.densenet
import timm.models.efficientnet
import timm.models.regnet
import timm.models.resnet
import torch
from torch import nn

from cxrlt.errors import ConfigError
from cxrlt.losses.diversity import DiversityLoss
from cxrlt.models.backbones import Backbone
from cxrlt.models.embeddings import LabelEmbeddingSpec
from cxrlt.models.graph import DEFAULT_P, DEFAULT_TAU
from cxrlt.models.heads.base import CamUnsupported, Head, per_position
from cxrlt.models.heads.gcn import check_gcn_params
from cxrlt.models.label_graph import GCNClassifier, LabelGraph
from cxrlt.registry import HEADS

# The modules that make up the last stage of each supported timm family, in
# the order `forward_features` applies them, after everything else.
_LAST_STAGE = (
    (timm.models.resnet.ResNet, lambda m: ["layer4"]),
    (timm.models.densenet.DenseNet, lambda m: ["features.denseblock4", "features.norm5"]),
    (timm.models.convnext.ConvNeXt, lambda m: [f"stages.{len(m.stages) - 1}", "norm_pre"]),
    (timm.models.efficientnet.EfficientNet, lambda m: [f"blocks.{len(m.blocks) - 1}", "conv_head", "bn2"]),
    (timm.models.regnet.RegNet, lambda m: ["s4", "final_conv"]),
)
SUPPORTED = "ResNet family (resnet*, resnext*, seresnet*...), DenseNet, ConvNeXt, EfficientNet (v1/v2), RegNet"


def take_last_stage(backbone: Backbone) -> nn.Sequential:
    """Remove the last stage from `backbone` (which then returns the previous stage's map) and return it."""
    model = backbone.model
    for family, names in _LAST_STAGE:
        if isinstance(model, family) and not backbone.channels_last_output:
            paths = names(model)
            break
    else:
        raise ConfigError(
            f"the experts head cannot split backbone {backbone.name!r} ({type(model).__name__}) into a shared part "
            f"and a last stage per expert; supported: {SUPPORTED}"
        )
    stage = nn.Sequential()
    for path in paths:
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        stage.add_module(path.replace(".", "_"), getattr(parent, name))
        setattr(parent, name, nn.Identity())
    return stage


@HEADS.register(
    "experts",
    context=("in_features", "num_classes", "pooling", "post_pool", "backbone", "class_names", "train_labels"),
)
class ExpertsHead(Head):
    """n experts, each: last backbone stage -> pooling -> (post-pool norm) -> classifier; output = mean logits.

    `reset_classifier` re-initialises every expert's classifier (linear
    layer, or both GCN layers) and the shared MHA layer; the experts' last
    stages are feature extractors (`feature_modules`, frozen with the
    backbone in decoupled stage 2) and keep their weights.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        pooling: nn.Module,
        backbone: Backbone,
        post_pool: nn.Module | None = None,
        class_names: Sequence[str] | None = None,
        train_labels: np.ndarray | None = None,
        experts: int = 4,
        classifier: Literal["linear", "gcn"] = "linear",
        diversity: float = 0.2,
        diversity_form: Literal["approximate", "pairwise"] = "approximate",
        per_expert_loss: bool = True,
        mha: Literal["none", "separate", "joint"] = "none",
        mha_heads: int = 8,
        mha_ffn: int | None = None,
        mha_dropout: float = 0.1,
        graph: Path | None = None,
        embeddings: LabelEmbeddingSpec | None = None,
        tau: float = DEFAULT_TAU,
        p: float = DEFAULT_P,
        hidden: int | None = None,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        if experts < 1:
            raise ConfigError(f"experts head: experts must be at least 1, got {experts}")
        if diversity < 0:
            raise ConfigError(f"experts head: diversity (lambda) must be >= 0, got {diversity}")
        if mha != "none" and (mha_heads < 1 or in_features % mha_heads):
            raise ConfigError(f"experts head: mha_heads ({mha_heads}) must divide the feature size {in_features}")
        last = take_last_stage(backbone)
        post_pool = post_pool if post_pool is not None else nn.Identity()
        self.stages = nn.ModuleList([last] + [copy.deepcopy(last) for _ in range(experts - 1)])
        self.pools = nn.ModuleList([pooling] + [copy.deepcopy(pooling) for _ in range(experts - 1)])
        self.post_pools = nn.ModuleList([post_pool] + [copy.deepcopy(post_pool) for _ in range(experts - 1)])
        self.graph: LabelGraph | None = None
        if classifier == "gcn":
            check_gcn_params(tau, p, hidden)
            self.graph = LabelGraph(num_classes, class_names, train_labels, graph, embeddings, tau, p)
            self.classifiers = nn.ModuleList(
                GCNClassifier(self.graph.dim, hidden or max(1, in_features // 2), in_features, negative_slope)
                for _ in range(experts)
            )
        else:
            self.classifiers = nn.ModuleList(nn.Linear(in_features, num_classes) for _ in range(experts))
        self.mha_mode = mha
        self.mha = nn.TransformerEncoderLayer(
            in_features, mha_heads, mha_ffn or in_features, mha_dropout, batch_first=True, norm_first=True
        ) if mha != "none" else None
        if self.mha is not None:
            reset_transformer_layer(self.mha)
        self.diversity = DiversityLoss(diversity, diversity_form) if experts > 1 and diversity > 0 else None
        self.per_expert_loss = per_expert_loss

    @property
    def num_experts(self) -> int:
        """Number of experts."""
        return len(self.stages)

    # ------------------------------------------------------------ pieces
    def expert_features(self, shared: torch.Tensor) -> list[torch.Tensor]:
        """Each expert's final feature map (B, C, h, w) from the shared backbone map."""
        return [stage(shared) for stage in self.stages]

    def class_weights(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Each expert's classifier rows (K x C) and bias (K, or None for GCN classifiers), before MHA."""
        if self.graph is not None:
            vectors, adjacency = self.graph()
            return [(gcn(vectors, adjacency), None) for gcn in self.classifiers]
        return [(fc.weight, fc.bias) for fc in self.classifiers]

    def _logits(self, pooled: torch.Tensor, rows: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.mha_mode == "separate":
            pooled = self.mha(pooled[:, None, :])[:, 0]
            rows = self.mha(rows[None])[0]
        if self.mha_mode == "joint":
            # `shape[0]`, not `len()`: a traced export keeps the batch size as a graph value, not a constant.
            tokens = torch.cat([pooled[:, None, :], rows[None].expand(pooled.shape[0], -1, -1)], dim=1)
            out = self.mha(tokens)
            logits = torch.einsum("bc,bkc->bk", out[:, 0], out[:, 1:])
        else:
            logits = pooled @ rows.T
        return logits if bias is None else logits + bias

    def expert_logits(self, shared: torch.Tensor) -> torch.Tensor:
        """Every expert's logits (n, B, K) from the shared backbone map."""
        outputs = []
        for features, pool, post_pool, (rows, bias) in zip(
            self.expert_features(shared), self.pools, self.post_pools, self.class_weights()
        ):
            outputs.append(self._logits(post_pool(pool(features)), rows, bias))
        return torch.stack(outputs)

    # ---------------------------------------------------------- interface
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.expert_logits(features).mean(dim=0)

    def training_outputs(self, features: torch.Tensor) -> torch.Tensor:
        """Every expert's logits (n, B, K): the classification loss and the diversity term need them."""
        return self.expert_logits(features)

    def training_loss(self, criterion: nn.Module, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Sum of each expert's criterion (or criterion of the mean logits) + lambda x RIDE diversity."""
        if self.per_expert_loss:
            loss = sum(criterion(logits, targets) for logits in outputs)
        else:
            loss = criterion(outputs.mean(dim=0), targets)
        return loss if self.diversity is None else loss + self.diversity(outputs)

    def feature_modules(self) -> list[nn.Module]:
        return [self.stages]

    @property
    def supports_cam(self) -> bool:
        """CAM needs classifiers linear in the features, which MHA is not."""
        return self.mha is None

    def class_maps(self, features: torch.Tensor) -> torch.Tensor:
        """Mean over experts of each expert's CAM; `features` is the shared backbone map."""
        if self.mha is not None:
            raise CamUnsupported("with MHA the experts' classifiers are not linear in the features: use Grad-CAM")
        maps = []
        for expert, post_pool, (rows, bias) in zip(self.expert_features(features), self.post_pools,
                                                    self.class_weights()):
            cam = torch.einsum("bchw,kc->bkhw", per_position(post_pool, expert), rows)
            maps.append(cam if bias is None else cam + bias[None, :, None, None])
        return torch.stack(maps).mean(dim=0)

    def reset_classifier(self) -> None:
        for classifier in self.classifiers:
            classifier.reset_parameters()
        if self.mha is not None:
            reset_transformer_layer(self.mha)


def reset_transformer_layer(layer: nn.TransformerEncoderLayer) -> None:
    """Initialise a pre-norm encoder layer so that it starts as the identity.

    Weights are drawn as torch's constructor draws them (linear and norm
    layers, then the attention block's own reset: xavier in-projection,
    zero biases, exposed by torch only as `_reset_parameters`), and then the
    last projection of both residual branches (attention output, second
    feed-forward layer) is zeroed. With its default initialisation the
    layer would add O(1) vectors to every token, giving logits of size
    sqrt(C) at the start; from zero it learns a correction of the plain
    experts head (seed 002 gives no initialisation).
    """
    for module in layer.modules():
        if isinstance(module, (nn.Linear, nn.LayerNorm)):
            module.reset_parameters()
    for module in layer.modules():
        if isinstance(module, nn.MultiheadAttention):
            module._reset_parameters()
    for linear in (layer.self_attn.out_proj, layer.linear2):
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
