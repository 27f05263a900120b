"""Prefect artifacts published by each run: a markdown summary of its stages."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact


def run_summary_markdown(record: dict, store: str) -> str:
    lines = [f"# pst run `{record['run_id']}`", "",
             f"- flow: `{record['flow']}`, status **{record['status']}**, {record['seconds']:.1f} s",
             f"- store: `{store}`"]
    lines += [f"- {name}: `{value}`" for name, value in record["inputs"].items()]
    if record.get("output"):
        lines.append(f"- output: `{record['output']}`")
    cached = sum(s["status"] == "cached" for s in record["stages"])
    lines += [f"- stages: {len(record['stages']) - cached} computed, {cached} cached", "",
              "| stage | image | layer | status | seconds | store entry |", "|---|---|---|---|---|---|"]
    for s in record["stages"]:
        lines.append(f"| {s['stage']} | {s['side'] or 'pair'} | {s['layer'] or ''} | {s['status']} | "
                     f"{s['seconds']:.2f} | `entries/{s['stage']}/{s['key']}` |")
    lines += ["", "Masks: `entries/fuse_segmentation/<key>` (arrays `regions`, `labels`); "
              f"inspect with `pst inspect {record['run_id'][:8]} --store {store}`."]
    return "\n".join(lines)


def publish_run_summary(record: dict, store: str) -> None:
    create_markdown_artifact(run_summary_markdown(record, store), key="pst-run-summary",
                             description=f"pst {record['flow']} run summary")
