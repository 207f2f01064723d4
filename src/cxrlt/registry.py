"""Name -> component registries whose parameters are validated from signatures.

A loss, sampler, head, pooling, optimiser, schedule or mixing method is a
factory (class or function) registered under a name. Its keyword parameters,
with their annotations and defaults, *are* its configuration schema: the
config loader validates `{name: ..., **params}` against them, so adding a
method touches one file. Arguments that come from the data rather than the
user (class counts, number of classes...) are declared as `context` and are
not part of the schema.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Generic, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from cxrlt.errors import ConfigError, clip, echo

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered factory and the pydantic model of its user parameters."""

    name: str
    factory: Callable[..., T]
    params: type[BaseModel]
    context: tuple[str, ...]


class Registry(Generic[T]):
    """A named collection of factories of one kind (e.g. "loss")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, context: tuple[str, ...] = ()) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering `factory` under `name`.

        `context` names the factory's parameters that the toolkit supplies
        (not the user); every other parameter must have an annotation.
        """

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, factory, _params_model(self.kind, name, factory, context), context)
            return factory

        return decorate

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def entry(self, name: str) -> Entry[T]:
        """The entry registered as `name`, or a ConfigError listing the choices."""
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {echo(name)}; choose one of: {', '.join(self.names())}"
            ) from None

    def validate(self, name: str, params: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
        """Check user parameters of `name`; return them with defaults filled in."""
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


def _params_model(kind: str, name: str, factory: Callable[..., Any], context: tuple[str, ...]) -> type[BaseModel]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    fields: dict[str, Any] = {}
    hints = inspect.get_annotations(target, eval_str=True)
    for parameter in inspect.signature(target).parameters.values():
        if parameter.name in ("self", *context) or parameter.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
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
