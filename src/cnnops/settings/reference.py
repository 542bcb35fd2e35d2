"""The configuration reference (docs/configuration.md), rendered from the config model itself.

The page is generated rather than written so that it cannot drift from `cnnops.settings.config`: every key,
its type, default, allowed values and description come from the pydantic models, and a unit test
fails when the checked-in page differs from what `render_reference` gives. `make docs` rewrites it.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from cnnops.settings.config import Config

REFERENCE_PATH = Path("docs/configuration.md")
REGENERATE = "make docs"

_INTRO = """\
# Configuration reference

<!-- Generated from src/cnnops/settings/config.py by `{regenerate}`; edit the models there, not this page. -->

One typed, frozen configuration. The defaults live in code (`src/cnnops/settings/config.py`); a YAML file
(`--config FILE`) goes on top, then `--set section.key=value` overrides, then the named flags of a
command (`--data`, `--epochs`, `--model-name`, `--precision`, `--xla`, `--force-promote`,
`--trust-pickle`, `--distill-from`). An unknown key is an error, never a silent default. `--set`
values are strings that the typed config converts (`3`, `0.5`, `true`); `null` or an empty value
means null. The resolved config is logged to every MLflow run (`config.json`) and saved beside the
model.
"""


def render_reference(model: type[BaseModel] = Config) -> str:
    """The whole reference page as Markdown: the top-level keys, one table per section, the defaults."""
    defaults = model().model_dump(mode="json")
    sections = {name: section for name, field in model.model_fields.items() if (section := _section_model(field))}
    plain = {name: field for name, field in model.model_fields.items() if name not in sections}
    parts = [_INTRO.format(regenerate=REGENERATE)]
    if plain:
        parts.append(_render_table("Top-level keys", None, plain, defaults, prefix=""))
    for name, section in sections.items():
        parts.append(_render_table(f"`{name}`", section.__doc__, section.model_fields, defaults[name], f"{name}."))
    parts.append(_render_defaults(defaults))
    return "\n".join(parts)


def write_reference(path: Path = REFERENCE_PATH) -> Path:
    """Write the rendered reference to `path` (docs/configuration.md by default)."""
    path.write_text(render_reference())
    return path


def _render_table(
    title: str, doc: str | None, fields: dict[str, FieldInfo], defaults: dict[str, Any], prefix: str
) -> str:
    lines = [f"## {title}", ""]
    if doc:
        lines += [_one_paragraph(doc), ""]
    lines += ["| key | type | default | allowed | what it does |", "|---|---|---|---|---|"]
    for name, field in fields.items():
        cells = [
            f"`{prefix}{name}`",
            _describe_type(field.annotation),
            f"`{_format_value(defaults[name])}`",
            _describe_allowed(field),
            _escape(field.description or ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _render_defaults(defaults: dict[str, Any]) -> str:
    body = yaml.safe_dump(defaults, sort_keys=False, default_flow_style=False)
    return "## Every default, as a config file\n\n```yaml\n" + body + "```\n"


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _describe_type(annotation: Any) -> str:
    """A reader's name for a type: `int or null`, `list of float`, `one of the values`."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (Union, types.UnionType):
        named = [_describe_type(arg) for arg in args if arg is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return " or ".join(dict.fromkeys(type(value).__name__ for value in args))
    if origin is list:
        return f"list of {_describe_type(args[0])}"
    if origin is dict:
        return f"map of {_describe_type(args[0])} to {_describe_type(args[1])}"
    metadata = getattr(annotation, "__metadata__", None)
    if metadata is not None:
        return _describe_type(args[0])
    return getattr(annotation, "__name__", str(annotation))


def _describe_allowed(field: FieldInfo) -> str:
    """The values a key accepts: its literal choices, its bounds, its pattern."""
    parts = [", ".join(f"`{value}`" for value in _literals(field.annotation))]
    parts += [_describe_bound(item) for item in field.metadata]
    return "; ".join(part for part in parts if part)


def _literals(annotation: Any) -> list[Any]:
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [value for arg in get_args(annotation) for value in _literals(arg)]


# pydantic keeps a Field's constraints as metadata objects, one per bound, named like Field's arguments.
_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _describe_bound(item: Any) -> str:
    for attr, sign in _BOUNDS.items():
        if getattr(item, attr, None) is not None:
            return f"{sign} {getattr(item, attr)}"
    pattern = getattr(item, "pattern", None)
    return f"matches `{pattern}`" if pattern else ""


def _format_value(value: Any) -> str:
    """A default as YAML would read it: `null`, `true`, `[]`, and strings bare unless empty."""
    if isinstance(value, str) and value:
        return value
    return json.dumps(value)


def _one_paragraph(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


if __name__ == "__main__":
    print(write_reference(Path(sys.argv[1]) if len(sys.argv) > 1 else REFERENCE_PATH))
