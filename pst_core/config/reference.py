"""The parameter reference: every parameter with its default and meaning, as a markdown table (the
README's, kept in sync by ``pst params --update-readme``)."""

from __future__ import annotations

import json
from pathlib import Path

from pst_core.config.schema import SIDED_STAGES, STAGE_MODELS
from pst_core.errors import ConfigError

START, END = "<!-- parameters:start -->", "<!-- parameters:end -->"


def parameter_reference() -> str:
    """A markdown table of every parameter, its default and meaning (the README's reference)."""
    lines = ["| parameter | default | meaning |", "|---|---|---|"]
    for stage, model in STAGE_MODELS.items():
        for name, info in model.model_fields.items():
            default = info.default_factory() if info.default_factory else info.default
            sided = " (per side)" if stage in SIDED_STAGES else ""
            lines.append(f"| `{stage}.{name}` | `{json.dumps(default)}` | {info.description or ''}{sided} |")
    lines.append('| `device` | `"auto"` | auto (cuda when available), cpu or cuda[:N]; not part of any cache key |')
    return "\n".join(lines)


def update_readme(path: str) -> None:
    """Replace the table between the README's markers with the current one."""
    readme = Path(path)
    text = readme.read_text()
    if START not in text or END not in text:
        raise ConfigError(f"{readme}: no {START} ... {END} markers to replace")
    head, rest = text.split(START, 1)
    readme.write_text(f"{head}{START}\n{parameter_reference()}\n{END}{rest.split(END, 1)[1]}")
