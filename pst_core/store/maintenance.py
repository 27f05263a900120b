"""``pst store ls|du|verify|gc``: look after a store."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from pst_core.store.artifact_store import MARKER, ArtifactStore, array_digest, temp_leftovers


@dataclass
class Problem:
    path: str
    problem: str


def list_entries(store: ArtifactStore) -> list[dict]:
    rows = []
    for stage, key, complete in store.iter_entries():
        row = {"stage": stage, "key": key, "complete": complete, "created": None, "side": None, "layer": None}
        if complete:
            attrs = store.open(stage, key).attrs
            row.update(created=attrs.get("created"), side=attrs.get("side"), layer=attrs.get("layer"))
        rows.append(row)
    return rows


def disk_usage(store: ArtifactStore) -> dict[str, int]:
    """Bytes per stage (temporary leftovers included), and the total."""
    usage: dict[str, int] = {}
    base = f"{store.root}/entries"
    if store.fs.exists(base):
        for stage_dir in store.fs.ls(base, detail=False):
            usage[stage_dir.rstrip("/").rsplit("/", 1)[-1]] = int(store.fs.du(stage_dir))
    usage["total"] = sum(usage.values())
    return usage


def verify(store: ArtifactStore) -> list[Problem]:
    """Every entry must be complete, and its arrays must read back to the checksums written with it.
    (Temporary folders of killed writers are not entries: readers never see them; see ``leftovers``.)"""
    problems = []
    for stage, key, complete in store.iter_entries():
        path = store.entry_path(stage, key)
        if not complete:
            problems.append(Problem(path, "incomplete (no completion marker): ignored by readers"))
            continue
        try:
            entry = store.open(stage, key)
            expected = entry.attrs[MARKER]["arrays"]
            for name, digest in expected.items():
                if array_digest(entry.array(name)) != digest:
                    problems.append(Problem(path, f"array {name}: contents do not match the checksum written"))
        except Exception as exc:
            problems.append(Problem(path, f"unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"))
    return problems


def leftovers(store: ArtifactStore) -> list[str]:
    """Temporary folders of writers killed mid-write; the next write of the same key, or gc, removes them."""
    return [path for stage_dir in _stage_dirs(store)
            for path in temp_leftovers(store, stage_dir.rstrip("/").rsplit("/", 1)[-1])]


def _stage_dirs(store: ArtifactStore) -> list[str]:
    base = f"{store.root}/entries"
    return store.fs.ls(base, detail=False) if store.fs.exists(base) else []


def referenced_keys(store: ArtifactStore, run: dict) -> set[tuple[str, str]]:
    """The entries a run used: its stages, and a dataset run's rows' (kept beside its record)."""
    keys = {(s["stage"], s["key"]) for s in run.get("stages", [])}
    for row in store.run_rows(run["run_id"]):
        keys |= {(s["stage"], s["key"]) for s in row.get("stages", [])}
    return keys


def collect_garbage(store: ArtifactStore, keep_runs: int | None = None, older_than: _dt.datetime | None = None,
                    dry_run: bool = False) -> dict:
    """Keep the ``keep_runs`` most recent runs and every run started after ``older_than``; remove entries
    no kept run references, the dropped run records, and temporary leftovers."""
    runs = store.runs()  # oldest first
    kept = set()
    if keep_runs is not None:
        kept |= {r["run_id"] for r in runs[len(runs) - keep_runs:]} if keep_runs > 0 else set()
    if older_than is not None:
        cutoff = older_than.timestamp()
        kept |= {r["run_id"] for r in runs if r.get("started", 0) >= cutoff}
    if keep_runs is None and older_than is None:
        kept = {r["run_id"] for r in runs}
    live = set().union(*(referenced_keys(store, r) for r in runs if r["run_id"] in kept)) if kept else set()
    removed = []
    for stage, key, complete in list(store.iter_entries()):
        if (stage, key) not in live:
            removed.append(f"{stage}/{key}")
            if not dry_run:
                store.remove(stage, key)
    dropped = [r["run_id"] for r in runs if r["run_id"] not in kept]
    removed_tmp = 0
    if not dry_run:
        for run_id in dropped:
            store.remove_run(run_id)
        for path in leftovers(store):
            store.fs.rm(path, recursive=True)
            removed_tmp += 1
    return {"removed_entries": removed, "dropped_runs": dropped, "kept_runs": sorted(kept),
            "removed_leftovers": removed_tmp, "dry_run": dry_run}
