"""Dataset manifests: rows of (content, style[, out]) with optional per-row ``stage.param`` columns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pst_core.config.schema import SIDES, STAGE_MODELS
from pst_core.errors import InputError

PATH_PARAMETERS = ("fuse_segmentation.labels",)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass
class Row:
    row: int
    content: str
    style: str
    out: str
    sets: list[str] = field(default_factory=list)


def _is_parameter_column(name: str) -> bool:
    parts = name.split(".")
    if parts[0] in SIDES:
        parts = parts[1:]
    return len(parts) == 2 and parts[0] in STAGE_MODELS


def default_output(out_dir: str, index: int, content: str, style: str) -> str:
    return str(Path(out_dir) / f"{index:05d}_{Path(content).stem}__{Path(style).stem}.png")


def read_manifest(path: str, out_dir: str) -> list[Row]:
    """Read a CSV or Parquet manifest; relative image paths are relative to the manifest's folder."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"manifest {path!r}: no such file")
    try:
        table = pd.read_parquet(file) if file.suffix.lower() in (".parquet", ".pq") else pd.read_csv(file)
    except Exception as exc:
        raise InputError(f"manifest {path!r}: cannot be read ({' '.join(str(exc).split())[:200]})") from None
    missing = [c for c in ("content", "style") if c not in table.columns]
    if missing:
        raise InputError(f"manifest {path!r}: missing column(s) {', '.join(missing)} "
                         f"(has {', '.join(map(str, table.columns))})")
    unknown = [c for c in table.columns if c not in ("content", "style", "out") and not _is_parameter_column(c)]
    if unknown:
        raise InputError(f"manifest {path!r}: column {unknown[0]!r} is neither content/style/out nor a "
                         "stage.param override")
    base = file.parent
    rows = []
    for index, record in enumerate(table.to_dict("records")):
        content, style = (str(base / str(record[c])) for c in ("content", "style"))
        out = record.get("out")
        out = str(Path(out_dir) / str(out)) if _present(out) else default_output(out_dir, index, content, style)
        sets = [f"{c}={_cell(record[c], base, c)}" for c in table.columns
                if _is_parameter_column(c) and _present(record[c])]
        rows.append(Row(index, content, style, out, sets))
    return rows


def product_rows(content_dir: str, styles: list[str], out_dir: str) -> list[Row]:
    """Every image in ``content_dir`` against every style."""
    folder = Path(content_dir)
    if not folder.is_dir():
        raise InputError(f"content folder {content_dir!r}: not a folder")
    contents = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not contents:
        raise InputError(f"content folder {content_dir!r}: holds no images")
    pairs = [(str(c), s) for c in contents for s in styles]
    return [Row(i, c, s, default_output(out_dir, i, c, s)) for i, (c, s) in enumerate(pairs)]


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and str(value) != ""


def _cell(value, base: Path, column: str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if column.endswith(PATH_PARAMETERS):  # a file, relative to the manifest like the images
        return str(base / str(value))
    return str(value)
