"""Typed run configuration, loaded from YAML and validated.

A run is one YAML file. Every section is a pydantic model that rejects
unknown keys; every pluggable method (data source, loss, sampler, pooling,
head, optimiser, schedule, transform, mixing) is written `{name: ..., **params}`
and its parameters are checked against the signature of the registered
factory, looked up in the table of kinds `cxrlt.registry.KINDS` (imported
lazily: validating a config imports the kinds it names, nothing else).
Errors name the key path and what was expected. Command-line overrides use
`key.sub=value` (YAML-parsed value; list items by index, e.g.
`stages.1.epochs=2`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Sequence

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)
from pydantic_core import PydanticCustomError

from cxrlt.errors import ConfigError, clip, echo
from cxrlt.registry import Registry, format_validation_error, kind


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class Component(BaseModel):
    """`{name: ..., **params}` checked against the registry of the config kind `kind` (a key of `KINDS`).

    A bare string is accepted as `{name: <string>}`. The validated parameters
    (defaults filled in) are kept in `params`; serialising flattens them back.
    """

    kind: ClassVar[str] = ""
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def lookup(cls) -> Registry[Any]:
        """The registry this component is chosen from."""
        return kind(cls.kind)

    @model_validator(mode="before")
    @classmethod
    def _validate_params(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"name": data}
        if not isinstance(data, dict):
            raise PydanticCustomError("component", "expected a name or a mapping with a `name` key")
        if "params" in data and set(data) <= {"name", "params"}:
            data = {"name": data.get("name"), **(data["params"] or {})}
        if "name" not in data:
            raise PydanticCustomError("component", "missing `name` (choose one of: {choices})",
                                      {"choices": ", ".join(cls.lookup().names())})
        params = {key: value for key, value in data.items() if key != "name"}
        try:
            validated = cls.lookup().validate(str(data["name"]), params, where="")
        except ConfigError as exc:
            raise PydanticCustomError("component", "{detail}", {"detail": str(exc)}) from None
        return {"name": data["name"], "params": validated}

    @model_serializer(mode="plain")
    def _flatten(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}

    def build(self, **context: Any) -> Any:
        """Call the registered factory with the validated params and `context`."""
        return self.lookup().build(self.name, context=context, **self.params)


class SourceSpec(Component):
    kind = "source"


class LossSpec(Component):
    kind = "loss"


class SamplerSpec(Component):
    kind = "sampler"


class PoolingSpec(Component):
    kind = "pooling"


class HeadSpec(Component):
    kind = "head"


class OptimizerSpec(Component):
    kind = "optimizer"


class ScheduleSpec(Component):
    kind = "schedule"


class TransformSpec(Component):
    kind = "transform"


class MixingSpec(Component):
    kind = "mixing"


# --------------------------------------------------------------------- data
class SplitConfig(Strict):
    """How images are assigned to train / val / test (always patient-wise).

    `source`: keep the split the source gives (e.g. NIH official lists) and
    carve `val_fraction` of the training patients out as validation.
    `random`: patient-wise random split by `val_fraction` / `test_fraction`.
    `kfold`: test as in `source` (or random by `test_fraction` when the source
    has none); the rest is cut into `folds` patient-grouped, iteratively
    stratified folds, and fold `fold` is validation.
    """

    method: Literal["source", "random", "kfold"] = "source"
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    folds: int = Field(5, ge=2)
    fold: int = Field(0, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _fold_in_range(self) -> "SplitConfig":
        if self.fold >= self.folds:
            raise ValueError(f"fold must be below folds ({self.folds}), got {self.fold}")
        return self


class ImagesConfig(Strict):
    """Pixels: the stored size, the model input size and where they come from."""

    size: int = Field(224, ge=16, description="model input size (square) after transforms")
    store_size: int | None = Field(None, ge=16, description="size images are decoded/cached at; default: size")
    cache: Path | None = Field(None, description="prepared cache folder from `cxrlt prepare`")
    skip_bad: bool = Field(False, description="leave out images that cannot be decoded instead of stopping (every "
                           "run checks its images before training: the cache's bad list, or without a cache a quick "
                           "check of every file)")

    @property
    def stored(self) -> int:
        """The size images are decoded to before per-image transforms."""
        return self.store_size or self.size


class PseudoLabelConfig(Strict):
    """A teacher's probabilities for the classes a source does not annotate (`cxrlt pseudo-label`).

    Fills the missing labels of training rows only, for the `sources`
    (positions in `data.sources`) and `classes` named (default: all): the
    probability itself (`soft`) or 1 at or above `threshold`, else 0 (`hard`).
    """

    table: Path = Field(description="CSV written by `cxrlt pseudo-label TEACHER_RUN CONFIG --out TABLE`")
    mode: Literal["soft", "hard"] = "soft"
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="hard mode: probability at or above which the label is 1")
    sources: list[int] | None = Field(None, description="positions in data.sources to fill (default: every source)")
    classes: list[str] | None = Field(None, description="classes to fill (default: every unannotated class)")


class DataConfig(Strict):
    """Where labels and images come from, the label space and the split."""

    sources: list[SourceSpec] = Field(min_length=1)
    classes: str | list[str] | None = Field(
        None, description="label space name (nih14, cxrlt2023...) or class list; default: the first source's"
    )
    unannotated: Literal["missing", "zero"] = "missing"
    source_weights: list[float] | None = Field(
        None, description="share of training draws per source (w_s / sum w), e.g. [1, 1] for half each"
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    pseudo_labels: PseudoLabelConfig | None = Field(
        None, description="fill unannotated classes of training rows with a teacher's probabilities")

    @model_validator(mode="after")
    def _pseudo_labels_fill_missing(self) -> "DataConfig":
        if self.pseudo_labels is None:
            return self
        if self.unannotated != "missing":
            raise ValueError("pseudo_labels fill the labels a source does not annotate, which `unannotated: zero` "
                             "sets to 0; use `unannotated: missing` with pseudo_labels")
        bad = [i for i in self.pseudo_labels.sources or [] if not 0 <= i < len(self.sources)]
        if bad:
            raise ValueError(f"pseudo_labels.sources {bad}: positions in data.sources run from 0 to "
                             f"{len(self.sources) - 1}")
        return self

    @model_validator(mode="after")
    def _weights_match(self) -> "DataConfig":
        if self.source_weights is not None and len(self.source_weights) != len(self.sources):
            raise ValueError(
                f"source_weights has {len(self.source_weights)} values for {len(self.sources)} sources"
            )
        if self.source_weights is not None and (min(self.source_weights) < 0 or sum(self.source_weights) <= 0):
            raise ValueError(f"source_weights must be >= 0 with a positive sum, got {echo(self.source_weights)}")
        return self


# -------------------------------------------------------------------- model
class ModelConfig(Strict):
    """Backbone (timm name), pooling and classification head."""

    backbone: str = Field("resnet18", description="a timm model name (CNNs, ConvNeXt, Swin, and the ViT family: ViT, "
                          "DeiT, EVA, DINOv2... as patch-token maps), or transformers:<local folder> for a saved "
                          "transformers image encoder (ViTModel, Dinov2Model, e.g. RAD-DINO)")
    pretrained: bool | Path = Field(
        False, description="false: random init; true: timm hub weights (random init with a warning if unreachable); "
        "a path: local .safetensors or PyTorch state dict (timm, torchvision or TorchXRayVision DenseNet-121 / "
        "ResNet-50 weights)"
    )
    init_from: Path | None = Field(
        None, description="a finished run folder or an export: start from its backbone and, for classes both label "
        "spaces share (by canonical name), its classifier rows (pretrain on NIH / CheXpert, fine-tune on CXR-LT)"
    )
    in_chans: Literal[1, 3] = Field(1, description="1: grayscale input (first conv adapted); 3: replicated")
    pooling: PoolingSpec = Field(default_factory=lambda: PoolingSpec(name="avg"))
    head: HeadSpec = Field(default_factory=lambda: HeadSpec(name="linear"))
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)


# ----------------------------------------------------------------- training
class TrainConfig(Strict):
    """Optimisation settings shared by all stages unless a stage overrides them."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    accumulate: int = Field(1, ge=1, description="gradient accumulation steps")
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"
    optimizer: OptimizerSpec = Field(default_factory=lambda: OptimizerSpec(name="adam"))
    schedule: ScheduleSpec = Field(default_factory=lambda: ScheduleSpec(name="constant"))
    sampler: SamplerSpec = Field(default_factory=lambda: SamplerSpec(name="instance"))
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0, description="EMA of weights; evaluated with EMA weights")
    monitor: Literal["map", "auc"] = Field("map", description="validation metric for best checkpoint and early stopping")
    early_stopping_patience: int | None = Field(None, ge=1)
    gradient_clip: float | None = Field(None, gt=0.0)
    num_workers: int = Field(2, ge=0)
    seed: int = 0
    deterministic: bool = True
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    limit_train_batches: int | None = Field(None, ge=1, description="cap batches per epoch (smoke runs)")
    limit_eval_batches: int | None = Field(None, ge=1, description="cap validation batches (smoke runs)")
    channels_last: bool = False
    compile: bool = False


class StageConfig(Strict):
    """One training stage; unset fields inherit from `train`, `loss`, `data.images`.

    A decoupled second stage sets `freeze_backbone: true` (and by default
    re-initialises the head and samples with `cycle`); a progressive-resizing
    stage sets a larger `image_size` and a smaller `batch_size`.
    """

    name: str
    epochs: int | None = Field(None, ge=1)
    init_from: Literal["best", "last"] = Field("best", description="checkpoint of the previous stage to start from")
    freeze_backbone: bool = False
    reinit_head: bool | None = Field(None, description="default: true when the backbone is frozen")
    tau_normalise: bool = Field(False, description="tune tau-normalisation of classifier weights on validation")
    image_size: int | None = Field(None, ge=16)
    batch_size: int | None = Field(None, ge=1)
    sampler: SamplerSpec | None = None
    loss: LossSpec | None = None
    optimizer: OptimizerSpec | None = None
    schedule: ScheduleSpec | None = None


class AugmentConfig(Strict):
    """Per-image transforms, batch mixing and test-time augmentation.

    `train` runs on every training image (random transforms, at the stored
    size). `eval` is the view every evaluation sees: validation during and
    after training, test, `cxrlt predict`, the TTA views (cut from it), tau
    tuning and class maps. It takes deterministic transforms only (`resize`,
    `center_crop`) and is saved in `model.json`, so a saved model predicts
    exactly as it was evaluated. Empty (the default): the whole stored image
    resized to the input size. A recipe that trains on a fixed crop of a
    larger stored image (`center_crop` / `random_crop` of 224 from 256)
    evaluates on the matching centre crop: `eval: [{name: center_crop, size: 224}]`.
    """

    train: list[TransformSpec] = Field(default_factory=list)
    eval: list[TransformSpec] = Field(default_factory=list, description="deterministic transforms of every "
                                      "evaluation (validation, test, predict, TTA, CAM); saved with the model")
    mixing: list[MixingSpec] = Field(default_factory=list)
    tta: list[Literal["hflip", "multicrop", "multiscale"]] = Field(default_factory=list)
    tta_merge: Literal["arithmetic", "geometric"] = "arithmetic"

    @field_validator("eval")
    @classmethod
    def _eval_is_deterministic(cls, specs: list[TransformSpec]) -> list[TransformSpec]:
        try:
            refuse_random_transforms([spec.name for spec in specs])
        except ConfigError as exc:
            raise PydanticCustomError("eval_transform", "{detail}", {"detail": str(exc)}) from None
        return specs


def deterministic_transforms() -> list[str]:
    """Registered transforms whose output depends on the image alone: those `augment.eval` accepts."""
    registry = TransformSpec.lookup()
    return [name for name in registry.names() if getattr(registry.entry(name).factory, "deterministic", False)]


def refuse_random_transforms(names: Sequence[str]) -> None:
    """ConfigError (without the key; the caller names it) when a name is not a deterministic transform."""
    allowed = deterministic_transforms()
    random = [f"{name} (item {i})" for i, name in enumerate(names) if name not in allowed]
    if random:
        raise ConfigError(
            f"random transform {', '.join(random)}: evaluation transforms must be deterministic (the same image "
            f"must always give the same prediction); choose from: {', '.join(allowed)}"
        )


class GroupsConfig(Strict):
    """Head / medium / tail classes by training positive count.

    `rank`: the `head` most frequent and `tail` least frequent classes, by
    default the label space's sizes (`cxrlt.labels.group_sizes`; CXR-LT 2023
    9 / 8 / 9 as seed 002) so that runs of one space compare; `count`: head
    when positives >= `head_min`, tail when positives < `tail_max`.
    """

    method: Literal["rank", "count"] = "rank"
    head: int = Field(0, ge=0, description="rank: number of head classes (0 = the label space's default)")
    tail: int = Field(0, ge=0, description="rank: number of tail classes (0 = the label space's default)")
    head_min: int = 1000
    tail_max: int = 100


class EvaluationConfig(Strict):
    """Metrics, grouping, thresholds and uncertainty."""

    groups: GroupsConfig = Field(default_factory=GroupsConfig)
    threshold: Literal["max_f1", "sensitivity"] = "max_f1"
    target_sensitivity: float = Field(0.9, gt=0.0, lt=1.0)
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for confidence intervals (0 = none)")
    temperature: bool = Field(False, description="fit a temperature on validation and report calibration after it")
    split: Literal["val", "test"] = "test"
    report: bool = Field(True, description="plots, example CAMs, report.md and report.html at the end of a run "
                         "(false for sweeps that read only metrics.json and predictions.csv)")
    # The names below are cxrlt.evaluation's (metadata.ATTRIBUTES, studies.AGGREGATIONS, protocols.PROTOCOLS);
    # the config sits below evaluation, so a test keeps the two lists equal.
    subgroups: list[Literal["sex", "age", "view", "source"]] = Field(
        default_factory=list, description="score per subgroup of these attributes (sex, age band, view, source)")
    age_bands: list[float] = Field(default_factory=lambda: [20.0, 40.0, 60.0, 80.0],
                                   description="age band edges in years: 0-20, 20-40, ..., 80+")
    min_subgroup: int = Field(20, ge=1, description="subgroups with fewer images are reported too small to score")
    aggregate: Literal["image", "study"] = Field("image", description="study: merge a study's images and score "
                                                 "studies (labels: the union of the images')")
    study_merge: Literal["max", "mean", "logit_mean"] = "max"
    protocol: Literal["cxr-lt-2023", "cxr-lt-2024-task1", "cxr-lt-2024-zero-shot"] | None = Field(
        None, description="also score as this CXR-LT task (its ranking metric, mAUC, mF1 at 0.5)")


def _plain_name(value: str) -> str:
    from cxrlt.errors import InputError
    from cxrlt.ownership import check_name

    try:
        return check_name(value)
    except InputError as exc:
        raise ValueError(str(exc)) from None


class RunConfig(Strict):
    """A whole training and evaluation run."""

    name: Annotated[str, AfterValidator(_plain_name)] = Field(
        "run", description="the run's name: the default output folder is runs/NAME, so a plain folder name")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossSpec = Field(default_factory=lambda: LossSpec(name="bce"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    stages: list[StageConfig] = Field(default_factory=list)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    def stage_list(self) -> list[StageConfig]:
        """The declared stages, or one default stage named `main`."""
        return self.stages or [StageConfig(name="main")]

    def to_yaml(self) -> str:
        """The resolved configuration (defaults filled in) as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ------------------------------------------------------------------ loading
def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of `raw` with `key.sub=value` overrides applied."""
    data = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {echo(item)} must look like key.sub=value")
        key, text = item.split("=", 1)
        value = parse_value(text, f"override {clip(key)}") if text != "" else None
        parts = key.strip().split(".")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            node = _child(node, part, parts[: depth + 1], create=True)
        last = parts[-1]
        if isinstance(node, list):
            index = _index(node, last, parts)
            node[index] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {echo(key)}: {clip('.'.join(parts[:-1]))} is not a section")
    return data


def _index(node: list[Any], part: str, path: Sequence[str]) -> int:
    try:
        index = int(part)
        node[index]
        return index
    except (ValueError, IndexError):
        raise ConfigError(
            f"override {echo('.'.join(path))}: {echo(part)} is not an index of a {len(node)}-item list"
        ) from None


def _child(node: Any, part: str, path: Sequence[str], create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, path)]
    if not isinstance(node, dict):
        raise ConfigError(f"override {echo('.'.join(path))}: parent is not a section")
    if isinstance(node.get(part), str) and create:
        # `loss: bce` written as a bare name: expand so that `loss.x=...` works.
        node[part] = {"name": node[part]}
    if part not in node or node[part] is None:
        node[part] = {}
    return node[part]


MAX_YAML_VALUES = 100_000  # values a YAML document may expand to (a run config has a few hundred)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, noting where each alias (`*name`) is used."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.alias_lines: list[int] = []

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.alias_lines.append(self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)


def parse_yaml(text: str, origin: str) -> Any:
    """Parse one YAML document safely; `origin` (a file name, an option) starts every message.

    Aliases are allowed, but the document they expand to is bounded
    (MAX_YAML_VALUES) and may not contain itself: a few lines of nested
    aliases ("billion laughs") would otherwise expand to billions of values
    when the config is validated. The nodes are counted before any Python
    object is built. Syntax errors are `yaml.YAMLError`s, as from PyYAML.
    """
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError(f"{origin}: the YAML is nested too deeply to read") from None
        if node is None:
            return None
        _check_size(node, origin, loader.alias_lines)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_value(text: str, origin: str) -> Any:
    """A command-line value read as YAML (`5`, `[a, b]`, `true`), or the text itself when it is not YAML."""
    try:
        return parse_yaml(text, origin)
    except yaml.YAMLError:
        return text


def _check_size(root: yaml.Node, origin: str, alias_lines: list[int]) -> None:
    """Refuse a node graph that expands past MAX_YAML_VALUES or contains itself.

    Each distinct node is visited once (iteratively: nesting depth is the
    user's); a node's expanded size is its own plus its children's.
    """
    sizes: dict[int, int] = {}
    ancestors: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        children = _children(node)
        if finished:
            ancestors.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > MAX_YAML_VALUES:
                where = f", line {alias_lines[0]}" if alias_lines else ""
                cause = " through its aliases (*name)" if alias_lines else ""
                raise ConfigError(
                    f"{origin}{where}: the YAML expands{cause} to more than {MAX_YAML_VALUES:,} values; a run "
                    "configuration needs far fewer: write the values out instead of nesting aliases"
                )
            continue
        if key in sizes:
            continue
        if key in ancestors:
            raise ConfigError(f"{origin}, line {node.start_mark.line + 1}: the YAML value anchored here contains "
                              "an alias of itself (a value cannot include itself)")
        ancestors.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, reporting syntax errors with file and line (see `parse_yaml`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; expected a YAML config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: is not UTF-8 text (byte {exc.start}); expected a YAML config file") from None
    try:
        data = parse_yaml(text, str(path))
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{path}{_yaml_error_place(exc)}: not valid YAML ({problem})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def _yaml_error_place(exc: yaml.YAMLError) -> str:
    """", line N" for a PyYAML error that knows where it happened, else ""."""
    mark = getattr(exc, "problem_mark", None)
    return f", line {mark.line + 1}" if mark is not None else ""


def parse_config(raw: dict[str, Any], origin: str = "config") -> RunConfig:
    """Validate a raw mapping into a RunConfig (ConfigError names every bad key)."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {format_validation_error(exc)}") from None


def load_data_config(path: str | Path, overrides: Sequence[str] = (), purpose: str = "this command reads") -> DataConfig:
    """Load and validate only the `data` section of a run YAML (after overrides).

    For commands that touch the data alone (`cxrlt prepare`, `cxrlt check`):
    they must not fail on, or depend on the registries of, the model, loss or
    training sections. `purpose` completes the message when the section is
    missing ("`cxrlt check` reads its labels and images from it").
    """
    return _load_data_sections(path, overrides, purpose)[0]


def load_data_and_groups(
    path: str | Path, overrides: Sequence[str] = (), purpose: str = "this command reads"
) -> tuple[DataConfig, GroupsConfig]:
    """The `data` section and the `evaluation.groups` options (defaults when absent), validated alone.

    For label statistics (`cxrlt stats`): the data and how its classes are
    grouped, whatever the other sections name.
    """
    data, groups = _load_data_sections(path, overrides, purpose, ("evaluation.groups", GroupsConfig))
    return data, groups


def _load_data_sections(
    path: str | Path, overrides: Sequence[str], purpose: str, *optional: tuple[str, type[BaseModel]]
) -> list[Any]:
    """The validated `data` section and each optional (dotted key, model) section ({} when absent)."""
    raw = apply_overrides(load_yaml(path), overrides)
    if not isinstance(raw.get("data"), dict):
        raise ConfigError(f"{path}: no `data` section (sources, images...); {purpose}")
    sections: list[Any] = []
    for key, model in (("data", DataConfig), *optional):
        value: Any = raw
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        try:
            sections.append(model.model_validate(value or {}))
        except ValidationError as exc:
            raise ConfigError(f"{path}: {format_validation_error(exc, prefix=key)}") from None
    return sections


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Load, override and validate a run configuration file."""
    return parse_config(apply_overrides(load_yaml(path), overrides), origin=str(path))
