"""A real Prefect server, a process work pool, a worker, and both flows run as deployments: registered
from prefect.yaml by ``prefect deploy --all``, and by ``pst deploy``; the Prefect UI shows a run."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from PIL import Image

from conftest import FAST, OUTPUT, chromium
from flows.deployments import DATASET, JOB_VARIABLES, PAIR
from pst_core.config.overrides import build_config

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
POOL = "pst"  # prefect.yaml's work pool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Services:
    """Processes started by the test, each in its own session so the whole tree can be stopped."""

    def __init__(self, env, logs: Path):
        self.env, self.logs, self.procs = env, logs, []

    def start(self, name, *argv):
        log = open(self.logs / f"{name}.log", "w")
        self.procs.append(subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def run(self, *argv, cwd=None):
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=180, cwd=cwd,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    # PYTHONPATH: the flow runs import this checkout's code wherever the worker starts them.
    env = {**os.environ, "PREFECT_HOME": str(folder / "home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_LOGGING_LEVEL": "INFO", "PYTHONPATH": str(ROOT)}
    services = Services(env, folder)
    services.start("server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port))
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, (folder / "server.log").read_text()[-2000:]
            time.sleep(1)
        services.run(str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process")
        store = str(folder / "store")
        services.run(str(BIN / "prefect"), "variable", "set", "pst_store", store)
        services.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all", cwd=ROOT)  # prefect.yaml
        services.start("worker", str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process")
        yield {"api": api, "port": port, "store": store, "folder": folder, "services": services}
    finally:
        services.stop()


def _with_api(api, coro_fn):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def go():
        async with get_client() as client:
            return await coro_fn(client)

    with temporary_settings(updates={PREFECT_API_URL: api}):
        return asyncio.run(go())


def _run_deployment(api, name, parameters, timeout=240):
    async def go(client):
        deployment = await client.read_deployment_by_name(name)
        run = await client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        deadline = time.time() + timeout
        while True:
            run = await client.read_flow_run(run.id)
            if run.state.is_final():
                break
            assert time.time() < deadline, f"{name} run still {run.state.name}"
            await asyncio.sleep(1)
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, \
            FlowRunFilterId
        from prefect.client.schemas.sorting import TaskRunSort

        for _ in range(60):  # task run states reach the server as events, written asynchronously
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                                                limit=200, sort=TaskRunSort.EXPECTED_START_TIME_ASC)
            if all(task.state and task.state.is_final() for task in tasks):
                break
            await asyncio.sleep(0.5)
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        return run, tasks, artifacts

    return _with_api(api, go)


def _deployment(api, name):
    async def go(client):
        return await client.read_deployment_by_name(name)

    return _with_api(api, go)


def test_prefect_yaml_declares_both_deployments(server):
    """`prefect deploy --all` registered prefect.yaml's two deployments: pst deploy's names and flows, on
    the work pool, each run starting in this checkout."""
    for (entrypoint, name), flow_name in ((PAIR, "partitioned-style-transfer"), (DATASET, "pst-dataset")):
        deployment = _deployment(server["api"], f"{flow_name}/{name}")
        assert deployment.entrypoint == entrypoint and deployment.work_pool_name == POOL
        assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
        assert deployment.parameters == {"config": {}}  # the store is the Prefect variable's, read per run
        assert deployment.job_variables == JOB_VARIABLES  # one heap per flow run's process


def test_pair_deployment_runs_and_reruns_from_cache(server, images, tmp_path):
    config = build_config(sets=FAST).model_dump(mode="json")
    out = str(tmp_path / "deployed.png")
    params = {"content": images["content"], "style": images["style"], "out": out, "config": config}
    run, tasks, artifacts = _run_deployment(server["api"], "partitioned-style-transfer/pst-pair", params)
    assert run.state.is_completed(), run.state.message
    assert Image.open(out).size == (40, 32)
    summary = [a for a in artifacts if a.type == "markdown"]
    assert summary and "style_transfer" in summary[0].data and server["store"] in summary[0].data
    assert {t.state.name for t in tasks} == {"Completed"}

    config["style_transfer"]["iterations"] = 4
    run2, tasks2, _ = _run_deployment(server["api"], "partitioned-style-transfer/pst-pair", {**params, "config": config})
    assert run2.state.is_completed(), run2.state.message
    states = {t.name: t.state.name for t in tasks2}
    computed = {t.name for t in tasks2 if t.state.name != "Cached"}
    assert {name.split("-")[0] for name in computed} == {"style_transfer", "unnormalize"}, states
    assert sum(t.state.name == "Cached" for t in tasks2) == len(tasks2) - 2


def test_bad_parameter_is_rejected_before_a_run_starts(server, images):
    config = build_config(sets=FAST).model_dump(mode="json")
    config["cluster_layer"]["k"] = 0

    async def go(client):
        deployment = await client.read_deployment_by_name("partitioned-style-transfer/pst-pair")
        await client.create_flow_run_from_deployment(
            deployment.id, parameters={"content": images["content"], "style": images["style"], "config": config})

    with pytest.raises(Exception, match="(?i)validat|greater than or equal"):
        _with_api(server["api"], go)


def test_dataset_deployment(server, images, tmp_path):
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"content": [images["content"]] * 2 + [images["style"]],
                  "style": [images["style"], images["content"], images["style"]]}).to_csv(manifest, index=False)
    params = {"manifest": str(manifest), "out_dir": str(tmp_path / "out"),
              "config": build_config(sets=FAST).model_dump(mode="json")}
    run, _, artifacts = _run_deployment(server["api"], "pst-dataset/pst-dataset", params)
    assert run.state.is_completed(), run.state.message
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(table.status) == ["ok", "ok", "ok"]
    assert any(a.type == "table" for a in artifacts)


def test_pst_serve_runs_a_served_deployment(server, images, tmp_path):
    server["services"].start("serve", str(BIN / "pst"), "serve")
    out = str(tmp_path / "served.png")
    params = {"content": images["content"], "style": images["style"], "out": out,
              "config": build_config(sets=FAST).model_dump(mode="json")}

    async def served(client):
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                return await client.read_deployment_by_name("partitioned-style-transfer/pst-pair-served")
            except Exception:
                await asyncio.sleep(1)
        raise AssertionError("pst serve registered no deployment")

    _with_api(server["api"], served)
    run, _, _ = _run_deployment(server["api"], "partitioned-style-transfer/pst-pair-served", params)
    assert run.state.is_completed(), run.state.message
    assert Image.open(out).size == (40, 32)


def _page_text(dom: str) -> str:
    """The words a page shows (scripts and styles left out)."""
    import html
    import re

    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def test_the_prefect_ui_shows_the_run_its_task_runs_and_artifacts(server, images, tmp_path):
    """The flow run's page in the Prefect UI the server serves, in headless Chromium: its name and state,
    its task runs (every one, by name), the transfer's progress in its log, its summary artifact; a
    screenshot is left in tests/output/. The page (/runs/flow-run/ID) shows the log; its other tabs
    cannot be linked to (hidden until the run has loaded, they fall back to the log), the same page of
    the newer UI (/v2/...?tab=) shows them."""
    params = {"content": images["content"], "style": images["style"], "out": str(tmp_path / "ui.png"),
              "store": str(tmp_path / "store"), "config": build_config(sets=FAST).model_dump(mode="json")}
    run, tasks, artifacts = _run_deployment(server["api"], "partitioned-style-transfer/pst-pair", params)
    assert run.state.is_completed(), run.state.message
    browser = chromium(tmp_path / "profile")
    ui = f"http://127.0.0.1:{server['port']}"

    def shown(url: str) -> str:
        dom = subprocess.run([*browser, "--window-size=1400,1000", "--virtual-time-budget=20000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120)
        return _page_text(dom.stdout)

    page = shown(f"{ui}/runs/flow-run/{run.id}")
    assert run.name in page and "Completed" in page and f"{len(tasks)} Task runs" in page, page[:2000]
    assert all(f" {t.name} prefect.task_runs " in page for t in tasks), page  # each task run's log lines
    assert "style_transfer iteration 8/8: 40x32 px, loss " in page  # the transfer's progress
    listed = shown(f"{ui}/v2/runs/flow-run/{run.id}?tab=TaskRuns")
    names = [t.name for t in tasks if f" {t.name} Completed " in listed]
    assert len(names) == min(len(tasks), 20), listed[:3000]  # a page of 20, every one Completed
    assert [a.key for a in artifacts] == ["pst-run-summary"]
    assert "pst-run-summary" in shown(f"{ui}/v2/runs/flow-run/{run.id}?tab=Artifacts")
    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "prefect_ui_flow_run.png"
    subprocess.run([*browser, "--window-size=1400,1000", "--virtual-time-budget=20000", f"--screenshot={shot}",
                    f"{ui}/runs/flow-run/{run.id}"], capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000


def test_pst_deploy_registers_the_same_deployments_with_its_defaults(server, images, tmp_path):
    """pst deploy replaces them with its own (default parameters from --set); a run given no config runs
    with those defaults."""
    sets = sum((["--set", s] for s in FAST), [])
    server["services"].run(str(BIN / "pst"), "deploy", "--pool", POOL, "--store", server["store"], *sets)
    deployment = _deployment(server["api"], "partitioned-style-transfer/pst-pair")
    assert deployment.entrypoint == PAIR[0] and deployment.work_pool_name == POOL
    assert deployment.parameters == {"config": build_config(sets=FAST).model_dump(mode="json")}
    assert deployment.job_variables == JOB_VARIABLES
    out = str(tmp_path / "defaults.png")
    run, _, _ = _run_deployment(server["api"], "partitioned-style-transfer/pst-pair",
                                {"content": images["content"], "style": images["style"], "out": out})
    assert run.state.is_completed(), run.state.message
    assert Image.open(out).size == (40, 32)
