"""`cxrlt methods`: every registered method (loss, sampler, head...) with its parameters."""

from __future__ import annotations

import argparse

from cxrlt.registry import KINDS

HELP = "list the methods a config can name (losses, samplers, heads, ...) with their parameters and defaults"
DESCRIPTION = """
Every component of a run config is `{name: ..., param: value, ...}`. This
lists, for each kind of component, the registered names, what each one is
(first line of its documentation) and the parameters it accepts with their
types and defaults, so a config can be written without reading the source.
Parameters the toolkit fills in from the data (class counts, number of
classes, ...) are not listed.
"""
EXAMPLE = """
cxrlt methods
cxrlt methods loss
cxrlt methods sampler head
"""

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cxrlt methods`."""
    parser.add_argument("kinds", nargs="*", metavar="KIND",
                        help=f"kinds to list (default: all): {', '.join(KINDS)}")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table per kind (for docs)")


def describe(kind: str, markdown: bool = False) -> str:
    """The listing of one kind of component (a key of `cxrlt.registry.KINDS`): names, summaries, parameters."""
    import inspect

    registry = KINDS[kind]
    key = registry.config_key
    lines = [f"## {kind} (`{key}`)" if markdown else f"{kind}  ({key})"]
    if markdown:
        lines += ["", "| name | what it is | parameters (default) |", "|---|---|---|"]
    for name in registry.names():
        entry = registry.entry(name)
        doc = inspect.getdoc(entry.factory) or ""
        summary = doc.split("\n\n")[0].replace("\n", " ").strip()
        params = [f"{field}: {_type_name(info.annotation)} = {_default(info)}"
                  for field, info in entry.params.model_fields.items()]
        if markdown:
            cell = "<br>".join(f"`{p}`".replace("|", "\\|") for p in params) or "none"
            lines.append(f"| `{name}` | {summary.replace('|', '/')} | {cell} |")
        else:
            lines.append(f"  {name}: {summary}")
            lines += [f"      {p}" for p in params]
    return "\n".join(lines)


def _type_name(annotation: object) -> str:
    """A short readable type: `float | None` rather than typing's full repr with validators."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is typing.Literal:
        return "one of " + "/".join(map(str, args))
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(arg) for arg in args)}]"
    if annotation is type(None):
        return "None"
    if annotation is Ellipsis:
        return "..."
    return getattr(annotation, "__name__", str(annotation))


def _default(info: object) -> str:
    if info.is_required():
        return "(required)"
    if info.default_factory is not None:
        return repr(info.default_factory())
    return repr(info.default)


def run(args: argparse.Namespace) -> int:
    """Print the listing of the requested kinds."""
    from cxrlt.errors import ConfigError

    unknown = [kind for kind in args.kinds if kind not in KINDS]
    if unknown:
        raise ConfigError(f"unknown kind {', '.join(map(repr, unknown))}; choose from: {', '.join(KINDS)}")
    kinds = args.kinds or list(KINDS)
    print("\n\n".join(describe(kind, args.markdown) for kind in kinds))
    return 0
