"""The one registration pattern: a registry per kind of method, and the table of kinds.

A loss, sampler, head, pooling, optimiser, schedule, transform, mixing method
or data source is a factory (class or function) registered under a name. Its
keyword parameters, with their annotations and defaults, *are* its
configuration schema: the config loader validates `{name: ..., **params}`
against them, so adding a method touches one file. Arguments that come from
the data rather than the user (class counts, number of classes...) are
declared as `context` and are not part of the schema.

This module is a leaf: it knows no method. Each implementation module
imports its kind's registry from here and registers itself with the
decorator; each kind's package imports its implementations. A registry knows
that package by name and imports it the first time it is read, so
`LOSSES.names()` is complete whichever module was imported first, and
importing this module (as `cxrlt --help` and the config loader do) imports
no torch, no pandas and no pydantic.

`KINDS` is the one table of kinds: config validation (`cxrlt.config`'s
components) and `cxrlt methods` both read it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any, Callable, Generic, Mapping, NamedTuple, TypeVar

from cxrlt.errors import ConfigError, clip, echo

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

T = TypeVar("T")


class Entry(NamedTuple, Generic[T]):
    """One registered factory and the pydantic model of its user parameters."""

    name: str
    factory: Callable[..., T]
    params: type[BaseModel]
    context: tuple[str, ...]


class Registry(Generic[T]):
    """A named collection of factories of one kind (e.g. "loss").

    `package` is the module whose import registers every implementation
    (read lazily, see the module docstring; None for a registry filled by
    hand); `config_key` says where a run config names one (for `cxrlt
    methods`).
    """

    def __init__(self, kind: str, package: str | None = None, config_key: str = ""):
        self.kind = kind
        self.package = package
        self.config_key = config_key
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, context: tuple[str, ...] = ()) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering `factory` under `name`.

        `context` names the factory's parameters that the toolkit supplies
        (not the user); every other parameter must have an annotation. A
        class whose `__init__` passes `**kwargs` on to its base class also
        takes the base's parameters (see `_parameters`).
        """

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, factory, _params_model(self.kind, name, factory, context), context)
            return factory

        return decorate

    def _complete(self) -> dict[str, Entry[T]]:
        """Every entry, after importing the package whose modules register them (a no-op after the first time)."""
        if self.package is not None:
            importlib.import_module(self.package)
        return self._entries

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._complete())

    def entry(self, name: str) -> Entry[T]:
        """The entry registered as `name`, or a ConfigError listing the choices."""
        try:
            return self._complete()[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {echo(name)}; choose one of: {', '.join(self.names())}"
            ) from None

    def validate(self, name: str, params: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
        """Check user parameters of `name`; return them with defaults filled in."""
        from pydantic import ValidationError

        entry = self.entry(name)
        try:
            return entry.params.model_validate(dict(params)).model_dump()
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, prefix=where or f"{self.kind} {name!r}")) from None

    def build(self, name: str, /, context: Mapping[str, Any] | None = None, **params: Any) -> T:
        """Validate `params` and call the factory with them plus `context`."""
        entry = self.entry(name)
        values = self.validate(name, params)
        supplied = {key: value for key, value in (context or {}).items() if key in entry.context}
        return entry.factory(**supplied, **values)


# ------------------------------------------------------------ the kinds
SOURCES: Registry[Any] = Registry("data source", "cxrlt.data.sources", "data.sources[].name")
LOSSES: Registry[Any] = Registry("loss", "cxrlt.losses", "loss.name")
SAMPLERS: Registry[Any] = Registry("sampler", "cxrlt.data.samplers", "train.sampler / stages[].sampler")
POOLINGS: Registry[Any] = Registry("pooling", "cxrlt.models.pooling", "model.pooling")
HEADS: Registry[Any] = Registry("head", "cxrlt.models.heads", "model.head.name")
OPTIMIZERS: Registry[Any] = Registry("optimizer", "cxrlt.training.optim", "train.optimizer.name")
SCHEDULES: Registry[Any] = Registry("schedule", "cxrlt.training.optim", "train.schedule.name")
TRANSFORMS: Registry[Any] = Registry("transform", "cxrlt.data.transforms", "augment.train[].name, augment.eval[].name")
MIXERS: Registry[Any] = Registry("mixing", "cxrlt.data.mixing", "augment.mixing[].name")

# Config kind -> its registry: what a run config can name, in the order `cxrlt methods` lists them.
KINDS: dict[str, Registry[Any]] = {
    "source": SOURCES,
    "loss": LOSSES,
    "sampler": SAMPLERS,
    "pooling": POOLINGS,
    "head": HEADS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "transform": TRANSFORMS,
    "mixing": MIXERS,
}


def kind(name: str) -> Registry[Any]:
    """The registry of config kind `name` (a key of KINDS), or a ConfigError listing the kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown kind {echo(name)}; choose from: {', '.join(KINDS)}") from None


def _parameters(factory: Callable[..., Any]) -> list[tuple[inspect.Parameter, dict[str, Any]]]:
    """The keyword parameters of `factory`, each with the resolved annotations of the function declaring it.

    For a class: those of its `__init__` and, while an `__init__` takes
    `**kwargs`, those of the next base class's `__init__` it passes them on
    to. A subclass that writes `def __init__(self, own..., **options)` and
    calls `super().__init__(**options)` thereby has the base's options in
    its schema without repeating them (the shared loss options).
    """
    if inspect.isclass(factory):
        # Each __init__ down the MRO, without its `self`.
        targets = [(base.__dict__["__init__"], 1) for base in factory.__mro__ if "__init__" in base.__dict__]
    else:
        targets = [(factory, 0)]
    found: dict[str, tuple[inspect.Parameter, dict[str, Any]]] = {}
    for target, skip in targets:
        hints = inspect.get_annotations(target, eval_str=True)
        passes_on = False
        for parameter in list(inspect.signature(target).parameters.values())[skip:]:
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                passes_on = True
            elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
                found.setdefault(parameter.name, (parameter, hints))
        if not passes_on:
            break
    return list(found.values())


def _params_model(kind: str, name: str, factory: Callable[..., Any], context: tuple[str, ...]) -> type[BaseModel]:
    from pydantic import ConfigDict, create_model

    fields: dict[str, Any] = {}
    for parameter, hints in _parameters(factory):
        if parameter.name in context:
            continue
        if parameter.name not in hints:
            raise TypeError(f"{kind} {name!r}: parameter {parameter.name!r} needs a type annotation")
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], default)
    model_name = "".join(part.capitalize() for part in f"{kind}_{name}".replace("-", "_").split("_")) + "Params"
    return create_model(model_name, __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True), **fields)


PROBLEMS_SHOWN = 8  # problems listed in one validation message; the rest are counted
KEY_LIMIT, MESSAGE_LIMIT = 120, 1000  # characters of a key path / of one problem's text (a safety net)


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One readable paragraph from a pydantic error: key path, problem, value.

    Quoted values are cut (`cxrlt.errors.echo`) and at most PROBLEMS_SHOWN
    problems are listed, so a huge bad value still gives a short message.
    """
    problems = []
    errors = exc.errors()
    for error in errors[:PROBLEMS_SHOWN]:
        path = ".".join(str(part) for part in error["loc"])
        key = clip(".".join(part for part in (prefix, path) if part), KEY_LIMIT)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        got = error.get("input")
        detail = "" if error["type"] in ("missing",) or isinstance(got, dict) else f" (got {echo(got)})"
        problems.append(f"{key or '<top>'}: {clip(message, MESSAGE_LIMIT)}{detail}")
    if len(errors) > PROBLEMS_SHOWN:
        problems.append(f"and {len(errors) - PROBLEMS_SHOWN} more problem(s)")
    return "; ".join(problems)
