"""``pst inspect|export|report|store``: reading the record of every run. None of these start Prefect."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from pst_core.errors import PstError
from pst_core.store.artifact_store import DEFAULT_STORE, ArtifactStore


def cmd_inspect(args) -> int:
    from pst_core.pipeline.records import describe_run

    store = ArtifactStore(args.store)
    if args.run:
        run = store.run(args.run)
        print(json.dumps(run, default=str) if args.json else describe_run(run))
        return 0
    runs = store.runs()
    if args.json:
        print(json.dumps([{k: r.get(k) for k in ("run_id", "started_at", "flow", "inputs", "status", "seconds")}
                          for r in runs], default=str))
        return 0
    print(f"{'run':<10} {'started':<20} {'status':<7} {'seconds':>8}  inputs")
    for r in runs:
        inputs = " ".join(Path(str(v)).name for v in r.get("inputs", {}).values() if v)
        print(f"{r['run_id'][:8]:<10} {str(r.get('started_at', ''))[:19]:<20} {r['status']:<7} "
              f"{r.get('seconds', 0):8.1f}  {inputs}")
    return 0


def _pair_run(store: ArtifactStore, run_id: str) -> dict:
    run = store.run(run_id)
    if not run.get("stages"):
        raise PstError(f"run {run_id}: a {run.get('flow')} run has no stages of its own; export its rows' runs")
    return run


def cmd_export(args) -> int:
    from pst_core.inspect.export import export_run

    store = ArtifactStore(args.store)
    files = export_run(store, _pair_run(store, args.run), args.out)
    print(f"{len(files)} pictures written to {args.out}")
    return 0


def cmd_report(args) -> int:
    from pst_core.inspect.report import render_report

    store = ArtifactStore(args.store)
    other = _pair_run(store, args.diff) if args.diff else None
    page = render_report(store, _pair_run(store, args.run), other)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(page)
    print(f"report written to {args.out} ({len(page) // 1024} KiB)")
    return 0


def cmd_store(args) -> int:
    from pst_core.store import maintenance

    store = ArtifactStore(args.store)
    if args.action == "ls":
        for e in maintenance.list_entries(store):
            print(f"{e['stage']:<18} {e['key'][:16]}  {'complete' if e['complete'] else 'INCOMPLETE':<10} "
                  f"{e['side'] or 'pair':<8} {e['layer'] or '':<8} {e['created'] or ''}")
    elif args.action == "du":
        for stage, size in maintenance.disk_usage(store).items():
            print(f"{stage:<18} {size / 2**20:10.2f} MiB")
    elif args.action == "verify":
        problems = maintenance.verify(store)
        for p in problems:
            print(f"{p.path}: {p.problem}")
        stale = maintenance.leftovers(store)
        if stale:
            print(f"note: {len(stale)} temporary folder(s) of killed writers (never read; `pst store gc` removes them)")
        print(f"{len(problems)} problem(s)" if problems else "store verified: every entry complete and intact")
        return 1 if problems else 0
    elif args.action == "gc":
        older = None
        if args.older_than:
            try:
                older = _dt.datetime.fromisoformat(args.older_than)
            except ValueError:
                raise PstError(f"--older-than {args.older_than!r}: expected a date like 2026-11-01") from None
            if older.tzinfo is None:
                older = older.replace(tzinfo=_dt.timezone.utc)
        if args.keep_runs is not None and args.keep_runs < 0:
            raise PstError(f"--keep-runs {args.keep_runs}: must be 0 or more")
        result = maintenance.collect_garbage(store, args.keep_runs, older, args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {len(result['removed_entries'])} entries and {len(result['dropped_runs'])} run records; "
              f"kept {len(result['kept_runs'])} runs")
    return 0


def add_commands(sub) -> None:
    def store_arg(p):
        p.add_argument("--store", default=DEFAULT_STORE, help="store URL (default %(default)s)")

    ins = sub.add_parser("inspect", help="list runs, or show one run's stage graph")
    ins.add_argument("run", nargs="?", help="a run id (a unique prefix is enough)")
    ins.add_argument("--json", action="store_true")
    store_arg(ins)
    ins.set_defaults(func=cmd_inspect)

    exp = sub.add_parser("export", help="write PNGs of every intermediate of a run")
    exp.add_argument("run")
    exp.add_argument("--out", required=True, help="output folder")
    store_arg(exp)
    exp.set_defaults(func=cmd_export)

    rep = sub.add_parser("report", help="one self-contained HTML page of a run")
    rep.add_argument("run")
    rep.add_argument("--out", required=True, help="the HTML file")
    rep.add_argument("--diff", metavar="RUN2", help="a second run, side by side, differing stages highlighted")
    store_arg(rep)
    rep.set_defaults(func=cmd_report)

    sto = sub.add_parser("store", help="look after a store: ls, du, verify, gc")
    sto.add_argument("action", choices=["ls", "du", "verify", "gc"])
    sto.add_argument("--keep-runs", type=int, help="gc: keep the entries of the N most recent runs")
    sto.add_argument("--older-than", help="gc: drop runs started before this date (ISO 8601)")
    sto.add_argument("--dry-run", action="store_true", help="gc: only say what would be removed")
    store_arg(sto)
    sto.set_defaults(func=cmd_store)
