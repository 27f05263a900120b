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


@pytest.mark.parametrize("chunk_bytes", [64 << 20, 40])  # one chunk; several, the last one partial
def test_arrays_the_store_encodes_read_back_with_zarr_as_written(tmp_path, monkeypatch, chunk_bytes):
    """The store writes arrays' files itself (zarr v3's format, zarr's default codecs); zarr reads every
    data type and shape back unchanged, chunked along the first axis as the store chose."""
    import zarr

    import pst_core.store.artifact_store as module

    monkeypatch.setattr(module, "_CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(0)
    cases = {"f32": rng.random((3, 7, 5)).astype(np.float32), "f64": rng.random(4), "i32": np.array([[1, -2]], np.int32),
             "i64": np.arange(6).reshape(2, 3), "u8": rng.integers(0, 255, (4, 4), dtype=np.uint8),
             "bool": rng.random(5) > 0.5, "scalar": np.asarray(2.5), "empty": np.zeros((0,)),
             "big_endian": np.arange(5, dtype=">f8")}
    store = ArtifactStore(str(tmp_path))
    store.write("x", "k", {k: ArrayOut(v, tuple(f"d{i}" for i in range(v.ndim))) for k, v in cases.items()}, {"a": 1})
    group = zarr.open_group(store.entry_path("x", "k"), mode="r")
    for name, data in cases.items():
        array = group[name]
        assert array.metadata.dimension_names == tuple(f"d{i}" for i in range(data.ndim))
        assert array.dtype == data.dtype.newbyteorder("=")
        np.testing.assert_array_equal(array[...], data)
    assert group["f32"].chunks == ((3, 7, 5) if chunk_bytes > 1000 else (1, 7, 5))
    assert store.open("x", "k").attrs["a"] == 1


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
        import os, signal, numpy as np
        from pst_core.store.artifact_store import ArtifactStore, ArrayOut
        real = ArtifactStore._put_files
        calls = []
        def dying(self, files):
            calls.append(files)
            if len(calls) == 2:   # after the first array is on disk, before the group's zarr.json (the marker)
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, files)
        ArtifactStore._put_files = dying
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
