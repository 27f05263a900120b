"""A real Prefect server, a process work pool, a worker, and both flows run as deployments."""

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

from conftest import FAST
from pst_core.config.overrides import build_config

BIN = Path(sys.executable).parent


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

    def run(self, *argv):
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=180)
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
    env = {**os.environ, "PREFECT_HOME": str(folder / "home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_LOGGING_LEVEL": "INFO"}
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
        services.run(str(BIN / "prefect"), "work-pool", "create", "pst-test", "--type", "process")
        store = str(folder / "store")
        sets = sum((["--set", s] for s in FAST), [])
        services.run(str(BIN / "pst"), "deploy", "--pool", "pst-test", "--store", store, *sets)
        services.start("worker", str(BIN / "prefect"), "worker", "start", "--pool", "pst-test", "--type", "process")
        yield {"api": api, "store": store, "folder": folder, "services": services}
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
