"""The ``pst`` command line. Every command validates its input before it touches the store, and any
user error ends with one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from pst_core.errors import PstError
from pst_core.store.artifact_store import DEFAULT_STORE

# Two transfers (partitioned and K=1) plus segmentation within about 3 minutes on 2 CPU cores.
DEMO_SETTINGS = ["load.size=256", "fuse_segmentation.k=2", "style_transfer.iterations=60",
                 "style_transfer.scale_iterations=40", "style_transfer.snapshot_every=20"]


DATASET_BATCH = 8  # tiny rows whose pair stages share a task run; each worker has 4 such batches in flight


def _quiet_prefect(verbose: bool) -> None:
    """Must run before prefect is imported: it reads its settings at import."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")


class _TransferBar:
    """The style transfer's progress (``pst_core.progress.TransferProgress``) as a bar on stderr: one bar
    over all its scales, the record's ``describe`` (size, tiles, losses) in the postfix."""

    def __init__(self):
        self.bar = None
        self.size = None  # the scale the bar shows

    def __call__(self, progress) -> None:
        from tqdm import tqdm

        if self.bar is None or progress.iteration < self.bar.n:
            self.close()
            self.bar = tqdm(total=progress.of, desc="style_transfer", unit="it", file=sys.stderr, dynamic_ncols=True)
        if self.bar.n and progress.size != self.size:  # a new scale: the last one's end is drawn, however fast
            self.bar.refresh()
        self.size = progress.size
        self.bar.set_postfix_str(progress.describe(), refresh=False)
        self.bar.update(progress.iteration - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextmanager
def _transfer_bar(enabled: bool):
    from pst_core.progress import listening

    if not enabled:
        yield
        return
    bar = _TransferBar()
    try:
        with listening(bar):
            yield
    finally:
        bar.close()


def _planned_run(flow_name: str, images: dict[str, str], config, store_url: str, run_flow, out: str | None = None,
                 inputs: dict[str, str] | None = None):
    """Plan every stage's key, then run the flow; or, when the store holds every stage and no Prefect
    server is configured, finish without Prefect: a temporary server would take longer to start than
    the whole run (the record, the table and the output are the same)."""
    from flows.server import api_configured, temporary_server

    with temporary_server() as server:  # main's, prepared while we plan; serves only if a flow runs
        from pst_core.pipeline.preflight import preflight
        from pst_core.pipeline.records import finish_run, run_result
        from pst_core.store.artifact_store import ArtifactStore

        started = time.time()
        store = ArtifactStore(store_url)
        plan = preflight(store, images, config)
        if plan.missing or api_configured():
            import flows.pipeline  # noqa: F401  (Prefect's engine and the tasks, before waiting for the server)

            server.serve()
            return run_flow()
    outcomes = plan.outcomes({})
    record = finish_run(store, str(uuid.uuid4()), flow_name, inputs or images, config, plan, outcomes, started,
                        out=out)
    return run_result(record, plan, outcomes)


def _config(args):
    from pst_core.config.overrides import build_config

    sets = list(args.set or [])
    for side in ("content", "style"):  # --content-labels / --style-labels: regions drawn by hand
        if getattr(args, f"{side}_labels", None):
            sets.append(f"{side}.fuse_segmentation.labels={getattr(args, f'{side}_labels')}")
    return build_config(sets=sets, config_file=args.config, preset=getattr(args, "preset", None))


def cmd_run(args) -> int:
    result = _run_pair(args)
    if args.json:
        print(json.dumps({"run_id": result["run_id"], "output": result["output"], "stages": result["stages"]}))
    return 0


def _run_pair(args) -> dict:
    """Plan, run what is missing (the pair flow), print the stage table (unless --json); the run's result."""
    from pst_core.load import check_output_image

    check_output_image(args.out)
    config = _config(args)
    started = time.perf_counter()

    def run_flow():
        from flows.pipeline import partitioned_style_transfer

        with _transfer_bar(enabled=not args.json):
            return partitioned_style_transfer(args.content, args.style, config=config, store=args.store, out=args.out)

    result = _planned_run("partitioned-style-transfer", {"content": args.content, "style": args.style}, config,
                          args.store, run_flow, args.out)
    if not args.json:
        _print_stages(result["stages"])
        print(f"\nrun {result['run_id']} finished in {time.perf_counter() - started:.1f} s; output {result['output']}")
    return result


def _print_stages(stages: list[dict]) -> None:
    """A run's stages (``StageOutcome.public``) as a plain-text table."""
    rows = [("stage", "image", "key", "status", "seconds")]
    for s in stages:
        name = f"{s['stage']}[{s['layer']}]" if s["layer"] else s["stage"]
        rows.append((name, s["image"], s["key"][:12], s["status"], f"{s['seconds']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    print("\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows))


def cmd_segment(args) -> int:
    import numpy as np

    from pst_core.load import check_output_image, read_image
    from pst_core.segmentation.labels import save_labels
    from pst_core.segmentation.masks import regions_at_size
    from pst_core.pipeline.stages import read_regions
    from pst_core.store.artifact_store import ArtifactStore

    if args.regions < 1:
        raise PstError(f"--regions {args.regions}: must be at least 1")
    check_output_image(args.out, formats=("PNG",))  # a palette PNG: its indices are the region numbers
    config = _config(argparse.Namespace(set=[*(args.set or []), f"content.fuse_segmentation.k={args.regions}"],
                                        config=args.config, preset=args.preset))
    store = ArtifactStore(args.store)

    def run_flow():
        from flows.pipeline import segment_image

        return segment_image(args.image, config=config, store=args.store)

    result = _planned_run("segment-image", {"content": args.image}, config, args.store, run_flow,
                          inputs={"image": args.image})
    height, width = read_image(args.image, config.params("load", "content").max_pixels).shape[1:]
    soft = regions_at_size(read_regions(store, result["regions_key"]), (height, width))
    save_labels(args.out, soft.argmax(0))
    if args.soft_out:
        np.save(args.soft_out, soft)
    if args.json:
        print(json.dumps({"run_id": result["run_id"], "labels": args.out, "soft": args.soft_out,
                          "stages": result["stages"]}))
    else:
        _print_stages(result["stages"])
        print(f"\nlabels ({args.regions} regions, {width}x{height}) written to {args.out}")
    return 0


def cmd_demo(args) -> int:
    from pst_core.demo.images import bundled
    from pst_core.load import check_output_image

    check_output_image(args.out)
    out = Path(args.out)
    weights, how = _demo_weights()
    print(f"pst demo: VGG19 weights: {weights} ({how})")
    settings = [*DEMO_SETTINGS, *(["features.weights=random"] if weights == "random" else []), *(args.set or [])]
    preset = "imagenet" if weights == "imagenet" else None
    runs = {}
    with bundled() as (content, style):  # the images shipped with the package
        print(f"pst demo: {content} styled with {style}, partitioned and, for comparison, with K=1 (one region "
              "each)")
        for name, extra, path in (("partitioned", [], out), ("K=1", ["fuse_segmentation.k=1"], _beside(out, "k1"))):
            print(f"\n== {name}")
            ns = argparse.Namespace(content=str(content), style=str(style), out=str(path), store=args.store,
                                    set=[*settings, *extra], config=None, preset=preset, json=False)
            runs[name] = _run_pair(ns)  # both runs share main's temporary server
    figure_path = _beside(out, "figure")
    _demo_figure(args.store, runs["partitioned"], runs["K=1"]).save(figure_path)
    print(f"\noutput image: {out.resolve()}\nK=1 output: {_beside(out, 'k1').resolve()}"
          f"\nfigure (content, style, both segmentations, K=1 and partitioned): {figure_path.resolve()}"
          f"\nmasks and every intermediate: store {Path(args.store).resolve()} "
          "(entries/fuse_segmentation/<key>: arrays regions, labels)")
    return 0


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.stem}_{suffix}{path.suffix}")


def _demo_weights() -> tuple[str, str]:
    """ImageNet weights when the torch cache has them or they can be downloaded, else seeded random ones."""
    import contextlib
    import io

    from pst_core.errors import ConfigError
    from pst_core.features import load_vgg

    try:
        # torch.hub announces the download attempt on stdout: a probe that may fail should not.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            load_vgg("imagenet")
        return "imagenet", "pretrained, torchvision's IMAGENET1K_V1"
    except ConfigError:
        return "random", "pretrained weights are not in the torch cache and cannot be downloaded; seeded random " \
                         "weights, which the defaults are tuned for"


def _demo_figure(store_url: str, partitioned: dict, plain: dict):
    from pst_core.inspect.figure import comparison_figure
    from pst_core.pipeline.stages import output_image, read_regions
    from pst_core.store.artifact_store import ArtifactStore

    store = ArtifactStore(store_url)

    def key(run, stage, image):
        return next(s["key"] for s in run["stages"] if s["stage"] == stage and s["image"] == image)

    def loaded(side):
        return store.open("load", key(partitioned, "load", side)).array("image")

    transfer = store.open("style_transfer", key(partitioned, "style_transfer", "pair"))
    mapping = {int(c): s for c, s in transfer.attrs["mapping"].items()}
    content, style = loaded("content"), loaded("style")
    return comparison_figure(content, style,
                             read_regions(store, key(partitioned, "fuse_segmentation", "content"), content.shape[1:]),
                             read_regions(store, key(partitioned, "fuse_segmentation", "style"), style.shape[1:]), mapping,
                             output_image(store, plain["unnormalize_key"]),
                             output_image(store, partitioned["unnormalize_key"]))


def cmd_dataset(args) -> int:
    from pst_core.store.artifact_store import ArtifactStore

    config = _config(args)
    ArtifactStore(args.store).check()
    if not args.manifest and not (args.content_dir and args.style):
        raise PstError("dataset: give MANIFEST, or --content-dir with one or more --style")
    from flows.server import temporary_server

    with temporary_server() as server:
        from flows.dataset import dataset
        from flows.runners import make_task_runner

        runner = make_task_runner(args.task_runner, args.concurrency, args.dask_address)
        server.serve()
        result = dataset.with_options(task_runner=runner)(
            manifest=args.manifest, out_dir=args.out_dir, content_dir=args.content_dir, styles=args.style,
            config=config, store=args.store, progress_bar=not args.json,
            window=max(16, 4 * args.concurrency * DATASET_BATCH), batch=DATASET_BATCH)
    if args.json:
        print(json.dumps({k: result[k] for k in ("run_id", "results", "ok", "failed", "failed_rows")}, default=str))
    else:
        for row in result["failed_rows"]:
            print(f"row {row['row']}: failed: {row['error']}")
        print(f"{result['ok']} ok, {result['failed']} failed; results in {result['results']}")
    return 0


def cmd_deploy(args) -> int:
    from flows.deployments import deploy_all

    defaults = _config(args).model_dump(mode="json") if (args.set or args.config or args.preset) else None
    ids = deploy_all(args.pool, args.store, defaults)
    for name, deployment_id in ids.items():
        print(f"deployed {name} on work pool {args.pool!r} ({deployment_id})")
    print("run one with: prefect deployment run 'partitioned-style-transfer/pst-pair' "
          "--param content=... --param style=... --param out=...")
    return 0


def cmd_serve(args) -> int:
    from flows.deployments import serve_all

    serve_all()
    return 0


def cmd_params(args) -> int:
    from pst_core.config.reference import parameter_reference, update_readme

    if args.update_readme:
        update_readme(args.update_readme)
        print(f"parameter reference updated in {args.update_readme}")
    else:
        print(parameter_reference())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pst", description="Partitioned neural style transfer, cached in zarr.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Prefect's own logs")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--store", default=DEFAULT_STORE, help="store URL: a folder or fsspec URL (default %(default)s)")
        p.add_argument("--set", action="append", metavar="STAGE.PARAM=VALUE",
                       help="set a parameter (repeatable); content.|style. prefixes set one side only")
        p.add_argument("--config", help="YAML or JSON file of {stage: {param: value}}")
        p.add_argument("--preset", help="named settings under everything else: 'seed' (the original system's "
                                        "segmentation), 'imagenet' (pretrained weights, classic transfer "
                                        "settings) or 'default'")

    run = sub.add_parser("run", help="stylise one content image with one style image")
    run.add_argument("content")
    run.add_argument("style")
    run.add_argument("--out", required=True, help="output image (PNG/JPEG)")
    run.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    run.add_argument("--content-labels", metavar="PNG", help="your own content regions: a label image, one flat "
                                                             "colour per region (replaces automatic segmentation)")
    run.add_argument("--style-labels", metavar="PNG", help="the same for the style image")
    common(run)
    run.set_defaults(func=cmd_run)

    seg = sub.add_parser("segment", help="segment one image into K regions")
    seg.add_argument("image")
    seg.add_argument("--regions", type=int, default=3, help="K, the number of regions (default 3)")
    seg.add_argument("--out", required=True, help="label image (palette PNG: index = region, one colour each) "
                                               "at the input's resolution")
    seg.add_argument("--soft-out", help="also write the soft masks (K, H, W) as .npy")
    seg.add_argument("--json", action="store_true")
    common(seg)
    seg.set_defaults(func=cmd_segment)

    ds = sub.add_parser("dataset", help="run every pair of a manifest (or a content folder x styles)")
    ds.add_argument("manifest", nargs="?", help="CSV or Parquet: content, style[, out][, stage.param ...]")
    ds.add_argument("--out-dir", required=True)
    ds.add_argument("--content-dir", help="instead of a manifest: every image in this folder ...")
    ds.add_argument("--style", action="append", help="... against each of these styles (repeatable)")
    ds.add_argument("--concurrency", type=int, default=2, help="tasks at once (threads) or Dask workers")
    ds.add_argument("--task-runner", default="threads", choices=["threads", "dask"])
    ds.add_argument("--dask-address", help="an existing Dask scheduler, tcp://HOST:PORT")
    ds.add_argument("--json", action="store_true")
    common(ds)
    ds.set_defaults(func=cmd_dataset)

    dep = sub.add_parser("deploy", help="register the pair and dataset deployments on a process work pool")
    dep.add_argument("--pool", default="pst", help="work pool name (default %(default)s)")
    dep.add_argument("--store", help="the store every worker writes to (sets the Prefect variable pst_store)")
    dep.add_argument("--set", action="append", metavar="STAGE.PARAM=VALUE", help="default parameters")
    dep.add_argument("--config", help="default parameters from a YAML or JSON file")
    dep.add_argument("--preset", help="named default settings ('seed', 'imagenet' or 'default')")
    dep.set_defaults(func=cmd_deploy)

    srv = sub.add_parser("serve", help="serve both flows from this process (no work pool needed)")
    srv.set_defaults(func=cmd_serve)

    prm = sub.add_parser("params", help="print every parameter with its default (markdown)")
    prm.add_argument("--update-readme", metavar="README", help="replace the reference between the markers")
    prm.set_defaults(func=cmd_params)

    from flows.cli_inspect import add_commands

    add_commands(sub)

    demo = sub.add_parser("demo", help="run the pipeline on the bundled example images, offline")
    demo.add_argument("--out", default="out/demo.png")
    demo.add_argument("--store", default=DEFAULT_STORE)
    demo.add_argument("--set", action="append", metavar="STAGE.PARAM=VALUE",
                      help="over the demo's settings, e.g. --set load.size=64 for a quick look")
    demo.set_defaults(func=cmd_demo)
    return parser


FLOW_COMMANDS = {"run", "segment", "demo", "dataset"}  # commands that may run a flow (and need a server)


def main(argv: list[str] | None = None) -> int:
    from contextlib import nullcontext

    from flows.server import temporary_server

    args = build_parser().parse_args(argv)
    _quiet_prefect(args.verbose)
    try:
        # Prefect's temporary server, if one is needed, starts importing now, while the command checks
        # its input and plans; see flows.server.
        with temporary_server() if args.command in FLOW_COMMANDS else nullcontext():
            return args.func(args)
    except PstError as exc:
        print(f"pst: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `pst params | head`
        return 0
    except KeyboardInterrupt:
        print("pst: interrupted", file=sys.stderr)
        return 130


def one_heap_for_every_thread() -> None:
    """Before any thread allocates: the transfer, in a task run's thread, can then keep its large blocks
    in the heap (``pst_core.style.heap``); the processes this one starts inherit the setting."""
    from pst_core.style.heap import one_heap

    os.environ.setdefault("MALLOC_ARENA_MAX", "1")
    one_heap()


def entry() -> None:
    """The ``pst`` command: ``main``, then an exit that skips tearing the interpreter down. Unloading
    torch's libraries and freeing every module takes 1 to 2 s here (``python -c "import torch"`` spends
    0.8 s after its last line). The exit comes after every thread has been joined and every other exit
    handler has run (Prefect's drain their queues there), so nothing is lost. ``main`` called from
    Python (the tests) exits as usual."""
    import atexit

    one_heap_for_every_thread()
    code = [1]  # an exception escaping main: its traceback is printed, then exit status 1
    atexit.register(lambda: _exit_now(code[0]))  # registered first, so it runs last
    try:
        code[0] = main()
    except SystemExit as exc:  # argparse: --help, or bad arguments
        code[0] = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        raise
    sys.exit(code[0])


def _exit_now(code: int) -> None:
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
