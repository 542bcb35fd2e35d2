"""The configuration reference: docs/configuration.md is what the config model renders, every key is
in it with its default, and the renderer reports types, bounds and choices as pydantic enforces them."""

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field

from cnnops.settings.config import Config, flatten_config
from cnnops.settings.reference import REGENERATE, render_reference, write_reference

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "configuration.md"


def test_checked_in_reference_matches_the_config_model():
    assert PAGE.read_text() == render_reference(), (
        f"docs/configuration.md is stale: run `{REGENERATE}` and commit the result."
    )


def test_every_key_has_a_row_with_its_default_and_a_description():
    page = render_reference()
    rows = {line.split(" | ")[0].strip("| `"): line for line in page.splitlines() if line.startswith("| `")}
    keys = set()
    for name, field in Config.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            keys |= {f"{name}.{key}" for key in section.model_fields}
        else:
            keys.add(name)
    assert set(rows) == keys
    assert set(flatten_config(Config())) < keys  # flatten_config drops the empty train.augment map
    assert "| `train.epochs` | int | `20` | >= 1 |" in rows["train.epochs"]
    assert "| `registry.model_name` | str or null | `null` |" in rows["registry.model_name"]
    assert "`paired`, `none`" in rows["gate.test"]
    undocumented = [key for key, row in rows.items() if row.rstrip().endswith("|  |")]
    assert undocumented == [], f"add Field(description=...) in src/cnnops/config.py for {undocumented}"


def test_the_defaults_block_is_a_config_file_that_resolves_to_the_defaults():
    page = render_reference()
    block = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert Config.model_validate(yaml.safe_load(block)) == Config()


class _Inner(BaseModel):
    """An inner section
    on two lines."""

    mode: Literal["fast", "slow"] = Field(default="fast", description="How | quickly.")
    rate: float = Field(default=0.5, gt=0, le=1, description="A rate.")
    names: list[str] = Field(default=[], description="Names.")
    tag: str | None = Field(default=None, pattern=r"^[a-z]+$", description="A tag.")


class _Outer(BaseModel):
    count: int = Field(default=3, ge=1, description="How many.")
    inner: _Inner = _Inner()


def test_renderer_reports_types_bounds_choices_and_patterns():
    page = render_reference(_Outer)
    assert "## Top-level keys" in page
    assert "| `count` | int | `3` | >= 1 | How many. |" in page
    assert "## `inner`\n\nAn inner section on two lines.\n" in page
    assert "| `inner.mode` | str | `fast` | `fast`, `slow` | How \\| quickly. |" in page
    assert "| `inner.rate` | float | `0.5` | > 0; <= 1 | A rate. |" in page
    assert "| `inner.names` | list of str | `[]` |  | Names. |" in page
    assert "| `inner.tag` | str or null | `null` | matches `^[a-z]+$` | A tag. |" in page


def test_write_reference_writes_the_rendered_page(tmp_path):
    written = write_reference(tmp_path / "configuration.md")
    assert written.read_text() == render_reference()
