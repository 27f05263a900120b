"""``pst report``: one self-contained HTML page of a run (or two runs side by side, ``--diff``)."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path

from pst_core.inspect.export import export_run
from pst_core.store.artifact_store import ArtifactStore

SECTIONS = [
    ("Inputs and colour normalisation", ("load", "color_normalize")),
    ("Per-layer clusters", ("cluster_layer",)),
    ("Clusters carried back to the image", ("backprop_clusters",)),
    ("Fused regions", ("fuse_segmentation",)),
    ("Region mapping, snapshots and output", ("style_transfer", "unnormalize")),
]

CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:1rem 2rem;color:#222}
h1{font-size:1.4rem} h2{font-size:1.15rem;border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem} td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
tr.differs td{background:#fff3c4} .runs{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1.5rem}
.grid{display:flex;flex-wrap:wrap;gap:.6rem} figure{margin:0;text-align:center;font-size:.75rem;color:#555}
figure img{width:150px;image-rendering:pixelated;border:1px solid #ccc;display:block}
figure.differs img{outline:3px solid #e0a800} code{font-size:.8rem} pre{font-size:.75rem;overflow:auto;max-height:20rem}
"""


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _stage_id(stage: dict) -> tuple:
    return stage["stage"], stage.get("side"), stage.get("layer")


def _stage_table(run: dict, differing: set) -> str:
    rows = ["<tr><th>stage</th><th>image</th><th>layer</th><th>key</th><th>status</th><th>seconds</th></tr>"]
    for s in run["stages"]:
        cls = ' class="differs"' if _stage_id(s) in differing else ""
        rows.append(f"<tr{cls}><td>{s['stage']}</td><td>{s.get('side') or 'pair'}</td><td>{s.get('layer') or ''}</td>"
                    f"<td><code>{s['key'][:12]}</code></td><td>{s['status']}</td><td>{s['seconds']:.2f}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _run_column(store: ArtifactStore, run: dict, differing: set, folder: Path) -> dict[str, str]:
    """The HTML of each section for one run."""
    files = export_run(store, run, str(folder))
    by_section = {}
    for title, kinds in SECTIONS:
        figures = []
        for f in files:
            if f["stage"] in kinds:
                cls = ' class="differs"' if (f["stage"], f["side"], f["layer"]) in differing else ""
                caption = " ".join(p for p in (f["side"] or "pair", f["layer"] or "", f["file"].rsplit("_", 1)[-1][:-4])
                                   if p)
                figures.append(f'<figure{cls}><img src="{_img(folder / f["file"])}" alt="{html.escape(f["file"])}">'
                               f"{html.escape(caption)}</figure>")
        by_section[title] = '<div class="grid">' + "".join(figures) + "</div>"
    return by_section


def _header(run: dict) -> str:
    inputs = "".join(f"<li>{html.escape(k)}: <code>{html.escape(str(v))}</code></li>" for k, v in run["inputs"].items())
    return (f"<h3>run <code>{run['run_id']}</code></h3><ul><li>{run.get('started_at', '')}</li>"
            f"<li>status <b>{run['status']}</b>, {run['seconds']:.1f} s</li>{inputs}"
            f"<li>output: <code>{html.escape(str(run.get('output')))}</code></li></ul>")


def render_report(store: ArtifactStore, run: dict, other: dict | None = None) -> str:
    runs = [run] + ([other] if other else [])
    differing: set = set()
    if other:
        keys = [{_stage_id(s): s["key"] for s in r["stages"]} for r in runs]
        differing = {sid for sid in set(keys[0]) | set(keys[1]) if keys[0].get(sid) != keys[1].get(sid)}
    with tempfile.TemporaryDirectory() as tmp:
        columns = [_run_column(store, r, differing, Path(tmp) / str(i)) for i, r in enumerate(runs)]
    title = f"pst run {run['run_id'][:8]}" + (f" vs {other['run_id'][:8]}" if other else "")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style>"
             f"</head><body><h1>{title}</h1>"]
    if other:
        parts.append(f"<p>{len(differing)} stage(s) differ between the runs (highlighted).</p>")
    parts.append('<div class="runs">' + "".join(f"<div>{_header(r)}{_stage_table(r, differing)}</div>"
                                                 for r in runs) + "</div>")
    for title_, _ in SECTIONS:
        parts.append(f"<h2>{title_}</h2><div class='runs'>" + "".join(f"<div>{c[title_]}</div>" for c in columns)
                     + "</div>")
    parts.append("<h2>Parameters</h2><div class='runs'>" + "".join(
        f"<div><pre>{html.escape(json.dumps(r['config'], indent=1))}</pre></div>" for r in runs) + "</div>")
    parts.append("</body></html>")
    return "".join(parts)
