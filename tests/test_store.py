"""The artifact store on a real local zarr store: atomic publish, crash safety, records."""

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

from pst_core.errors import StoreError
from pst_core.store.artifact_store import ArrayOut, ArtifactStore, key_digest


def _arrays():
    return {"probs": ArrayOut(np.arange(24, dtype=np.float32).reshape(2, 3, 4), ("cluster", "y", "x"))}


def test_write_then_read_roundtrip_with_dimension_names(tmp_path):
    store = ArtifactStore(str(tmp_path))
    assert not store.has("cluster_layer", "abc")
    assert store.write("cluster_layer", "abc", _arrays(), {"stage": "cluster_layer", "params": {"k": 2}})
    assert store.has("cluster_layer", "abc")
    entry = store.open("cluster_layer", "abc")
    np.testing.assert_array_equal(entry.array("probs"), _arrays()["probs"].data)
    assert entry.attrs["params"] == {"k": 2}
    # Other tools open entries directly: named dimensions and parameters as attributes.
    ds = xr.open_zarr(store.entry_path("cluster_layer", "abc"), consolidated=False)
    assert ds["probs"].dims == ("cluster", "y", "x")
    assert ds.attrs["params"] == {"k": 2}


def test_second_write_of_same_key_keeps_the_first(tmp_path):
    store = ArtifactStore(str(tmp_path))
    assert store.write("load", "k1", _arrays(), {"n": 1})
    assert not store.write("load", "k1", _arrays(), {"n": 2})
    assert store.open("load", "k1").attrs["n"] == 1
    assert [e for e in store.iter_entries()] == [("load", "k1", True)]


def test_keys_are_canonical():
    assert key_digest({"a": 1, "b": [1, 2]}) == key_digest({"b": [1, 2], "a": 1})
    assert key_digest({"a": 1}) != key_digest({"a": 2})


def test_killed_write_leaves_no_complete_entry(tmp_path):
    """SIGKILL in the middle of writing an entry: nothing is read as complete, a rerun publishes."""
    script = textwrap.dedent(f"""
        import os, signal, numpy as np, zarr
        from pst_core.store.artifact_store import ArtifactStore, ArrayOut
        real = zarr.Group.create_array
        calls = []
        def dying(self, name, **kw):
            calls.append(name)
            if len(calls) == 2:   # after the first array is on disk
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, name, **kw)
        zarr.Group.create_array = dying
        store = ArtifactStore({str(tmp_path)!r})
        a = ArrayOut(np.ones((4, 4), np.float32), ("y", "x"))
        store.write("features", "victim", {{"a": a, "b": a}}, {{}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    store = ArtifactStore(str(tmp_path))
    assert not store.has("features", "victim")
    assert not any(complete for _, _, complete in store.iter_entries())
    assert store.write("features", "victim", {"a": ArrayOut(np.ones((4, 4), np.float32), ("y", "x"))}, {})
    assert store.has("features", "victim")


def test_run_records(tmp_path):
    store = ArtifactStore(str(tmp_path))
    store.write_run({"run_id": "r-1", "started": 1.0})
    store.write_run({"run_id": "r-2", "started": 2.0})
    assert [r["run_id"] for r in store.runs()] == ["r-1", "r-2"]
    assert store.run("r-2")["started"] == 2.0
    with pytest.raises(StoreError, match="ambiguous"):
        store.run("r-")


def test_unwritable_store_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot be reached or written"):
        ArtifactStore(str(blocker / "store")).check()
