"""The artifact store: one zarr group per stage output, keyed by a Merkle hash, published atomically.

Layout under the store root (a local folder or any fsspec URL such as ``s3://bucket/prefix``)::

    entries/<stage>/<key>/            zarr v3 group: arrays with dimension names, attrs = the record;
                                      attribute ``complete`` (array checksums) is written last
    entries/<stage>/.tmp/<key>-<pid>-<id>/  local disks: an entry being written, renamed into place when done
    runs/<run_id>.json                one record per flow run
    runs/<run_id>.rows/<part>.jsonl   a dataset run's rows, written as they finish
    memo/<kind>/<id>.json             facts about input files (an image's pixel digest and size), by the
                                      file's identity: path, size, modification and change times, inode

A reader trusts an entry only when its ``complete`` attribute exists. On a local disk the whole entry is written
under ``.tmp`` and renamed into place (atomic), so a crash leaves nothing under the final name; on an
object store the marker is written after every array, so a crash leaves an entry that readers ignore
and the next writer replaces.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import fsspec
import numpy as np
import zarr
from fsspec.implementations.local import LocalFileSystem
from numcodecs import Zstd
from zarr.storage import FsspecStore, LocalStore, MemoryStore

from pst_core.errors import StoreError

MARKER = "complete"
DEFAULT_STORE = "artifacts"
# Chunks of up to 64 MiB, split along the first axis: measured on a 512 px features entry (64 MB,
# zstd), whole-array chunks read at ~1490 MB/s against ~760 MB/s for 8 MiB and 1 MiB chunks, with the
# same write speed (~500 MB/s) and size on disk; stages always read whole arrays.
_CHUNK_BYTES = 64 << 20


@dataclass
class ArrayOut:
    """An array to store, with its zarr v3 dimension names."""

    data: np.ndarray
    dims: tuple[str, ...]


@dataclass
class Entry:
    """A complete entry, opened for reading (arrays are read on demand)."""

    stage: str
    key: str
    attrs: dict[str, Any]
    group: zarr.Group = field(repr=False)

    def array(self, name: str) -> np.ndarray:
        return np.asarray(self.group[name][...])

    def names(self) -> list[str]:
        return sorted(self.group.array_keys())


def key_digest(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a payload (sorted keys, no whitespace)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def array_digest(data: np.ndarray) -> str:
    data = np.ascontiguousarray(data)
    digest = hashlib.sha256(f"{data.dtype.str}{data.shape}".encode())
    digest.update(memoryview(data).cast("B"))
    return digest.hexdigest()


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Split along the first axis only, so each chunk is at most ~8 MiB."""
    if not shape:
        return ()
    per_row = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    rows = max(1, min(shape[0], _CHUNK_BYTES // per_row))
    return (rows, *shape[1:])


_ZSTD = Zstd(level=0)  # zarr's default codec chain: bytes (little endian), then zstd level 0 without checksum
_FILL = {"b": False, "i": 0, "u": 0, "f": 0.0}  # fill value by numpy dtype kind


def _array_files(name: str, out: ArrayOut) -> Iterator[tuple[str, bytes]]:
    """One array's files, as zarr v3 writes them with its defaults: ``zarr.json`` (shape, data type,
    regular chunks along the first axis, codecs, dimension names), then each chunk (encoded as it is
    asked for, so a big array's chunks are not all held at once), edge chunks padded to the full
    chunk shape. Read back by zarr like any other."""
    data = np.asarray(out.data, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
    if data.ndim != len(out.dims):
        raise ValueError(f"array {name}: {data.ndim} dims but names {out.dims}")
    if data.dtype.kind not in _FILL:
        raise ValueError(f"array {name}: data type {data.dtype} is not stored")
    data = data.astype(data.dtype.newbyteorder("<"), copy=False)
    chunks = _chunks(data.shape, data.itemsize)
    bytes_codec = {"name": "bytes"} if data.itemsize == 1 else {"name": "bytes", "configuration": {"endian": "little"}}
    meta = {"shape": list(data.shape), "data_type": data.dtype.name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": _FILL[data.dtype.kind],
            "codecs": [bytes_codec, {"name": "zstd", "configuration": {"level": 0, "checksum": False}}],
            "attributes": {}, "dimension_names": list(out.dims), "zarr_format": 3, "node_type": "array",
            "storage_transformers": []}
    yield f"{name}/zarr.json", json.dumps(meta, indent=2).encode()
    if data.ndim == 0:
        yield f"{name}/c", _ZSTD.encode(data.tobytes())
        return
    rest = "/0" * (data.ndim - 1)
    for index, start in enumerate(range(0, data.shape[0], chunks[0])):
        chunk = data[start: start + chunks[0]]
        if chunk.shape != chunks:  # an edge chunk: stored at the full chunk shape
            chunk = np.concatenate([chunk, np.full((chunks[0] - chunk.shape[0], *chunks[1:]),
                                                   _FILL[data.dtype.kind], data.dtype)])
        yield f"{name}/c/{index}{rest}", _ZSTD.encode(np.ascontiguousarray(chunk).tobytes())


class ArtifactStore:
    def __init__(self, url: str = DEFAULT_STORE, storage_options: dict[str, Any] | None = None):
        self.url = str(url)
        self.storage_options = storage_options or {}
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        except (ImportError, ValueError) as exc:
            raise StoreError(f"--store {self.url}: cannot open this URL ({exc})") from None
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = self.root.rstrip("/")

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # -- paths -------------------------------------------------------------------------------
    def entry_path(self, stage: str, key: str) -> str:
        return f"{self.root}/entries/{stage}/{key}"

    def _zarr_store(self, path: str, read_only: bool):
        if self.local:
            return LocalStore(path, read_only=read_only)
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return FsspecStore.from_url(f"{protocol}://{path}", storage_options=self.storage_options,
                                    read_only=read_only)

    # -- reachability --------------------------------------------------------------------------
    def check(self) -> None:
        """Fail with one line if the store cannot be reached or written."""
        try:
            self.fs.makedirs(f"{self.root}/runs", exist_ok=True)
            probe = f"{self.root}/runs/.probe-{uuid.uuid4().hex}"
            self.fs.pipe(probe, b"ok")
            self.fs.rm(probe)
        except Exception as exc:
            raise StoreError(f"--store {self.url}: cannot be reached or written ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]})") from None

    # -- entries -------------------------------------------------------------------------------
    def has(self, stage: str, key: str) -> bool:
        return self._complete(self.entry_path(stage, key))

    def _complete(self, path: str) -> bool:
        try:
            return _has_marker(self.fs.cat(f"{path}/zarr.json"))
        except FileNotFoundError:
            return False

    def complete(self, entries: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (stage, key) entries are complete, in one pass (one batched read on object stores)."""
        entries = set(entries)
        if self.local:
            return {(stage, key) for stage, key in entries if self.has(stage, key)}
        paths = {f"{self.entry_path(stage, key)}/zarr.json": (stage, key) for stage, key in entries}
        found = self.fs.cat(list(paths), on_error="omit") if paths else {}
        return {paths[self.fs._strip_protocol(path)] for path, data in found.items() if _has_marker(data)}

    def open(self, stage: str, key: str) -> Entry:
        path = self.entry_path(stage, key)
        if not self.has(stage, key):
            raise StoreError(f"store {self.url}: no complete entry {stage}/{key[:12]}")
        group = zarr.open_group(store=self._zarr_store(path, read_only=True), mode="r")
        return Entry(stage, key, dict(group.attrs), group)

    def write(self, stage: str, key: str, arrays: dict[str, ArrayOut], attrs: dict[str, Any]) -> bool:
        """Publish an entry atomically. Returns False if a complete one was already there (kept)."""
        if self.has(stage, key):
            return False
        final = self.entry_path(stage, key)
        if self.local:
            self._clear_dead_writers(stage, key)
            tmp = f"{self.root}/entries/{stage}/.tmp/{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self._write_group(tmp, arrays, attrs, key)
            return self._publish_local(tmp, final)
        if self.fs.exists(final):  # an incomplete leftover of a crashed writer
            self.fs.rm(final, recursive=True)
        self._write_group(final, arrays, attrs, key)
        return True

    def _write_group(self, path: str, arrays: dict[str, ArrayOut], attrs: dict[str, Any], key: str) -> None:
        """Write the entry's files, the group's ``zarr.json`` (which holds the marker that makes the entry
        complete) last. Arrays are encoded here (``_array_files``): zarr itself takes ~3-5 ms per array
        even for a loss history of a few numbers, which at thousands of tiny dataset rows outweighed the
        stages' compute; the group's metadata and attributes are zarr's own."""
        digests = {}
        for name, out in arrays.items():  # one array at a time (one batched request on object stores)
            self._put_files((f"{path}/{file}", data) for file, data in _array_files(name, out))
            digests[name] = array_digest(np.asarray(out.data))
        group_files: dict[str, Any] = {}
        marker = {MARKER: {"key": key, "written": time.time(), "arrays": digests}}
        zarr.open_group(store=MemoryStore(group_files), mode="w", attributes={**attrs, **marker})
        self._put_files([(f"{path}/zarr.json", group_files["zarr.json"].to_bytes())])

    def _put_files(self, files: Iterable[tuple[str, bytes]]) -> None:
        """An entry's files (on a local disk, under its temporary folder: the rename publishes them)."""
        if not self.local:
            self.fs.pipe(dict(files))
            return
        made: set[str] = set()
        for name, data in files:
            folder = os.path.dirname(name)
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            with open(name, "wb") as handle:
                handle.write(data)

    def _clear_dead_writers(self, stage: str, key: str) -> None:
        """Remove what writers of this key that were killed mid-write left behind."""
        for leftover in temp_leftovers(self, stage, key):
            shutil.rmtree(leftover, ignore_errors=True)

    def _publish_local(self, tmp: str, final: str) -> bool:
        try:
            os.rename(tmp, final)
            return True
        except OSError:
            pass
        if self._complete(final):  # another writer won the race: same content
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        # An incomplete directory under the final name (e.g. copied in by hand): replace it.
        trash = f"{tmp}.old"
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def iter_entries(self) -> Iterator[tuple[str, str, bool]]:
        """(stage, key, complete) for every entry directory, temporary ones excluded."""
        base = f"{self.root}/entries"
        if not self.fs.exists(base):
            return
        for stage_dir in sorted(self.fs.ls(base, detail=False)):
            stage = stage_dir.rstrip("/").rsplit("/", 1)[-1]
            for entry_dir in sorted(self.fs.ls(stage_dir, detail=False)):
                key = entry_dir.rstrip("/").rsplit("/", 1)[-1]
                if key.startswith("."):
                    continue
                yield stage, key, self._complete(entry_dir)

    def remove(self, stage: str, key: str) -> None:
        path = self.entry_path(stage, key)
        if self.local:  # unpublish first (atomic), then delete
            trash = f"{self.root}/entries/{stage}/.tmp/{key}-{os.getpid()}-removed-{uuid.uuid4().hex[:8]}"
            os.makedirs(os.path.dirname(trash), exist_ok=True)
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            self.fs.rm(f"{path}/zarr.json")  # unpublish first
            self.fs.rm(path, recursive=True)

    # -- small files -----------------------------------------------------------------------------
    def _put(self, path: str, data: bytes) -> None:
        """Write a whole small file atomically (a local rename; one PUT on object stores)."""
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe(path, data)

    # -- facts about input files -------------------------------------------------------------------
    def file_memo(self, kind: str, path: str, compute: Callable[[], dict[str, Any]],
                  learned: list | None = None) -> dict[str, Any]:
        """``compute()`` for the file at ``path`` as it is now, remembered in the store. Keyed by the
        file's identity (real path, size, modification and change times, inode, device): rewriting the
        file changes its change time whatever its modification time says, so a stale fact is never
        served. ``compute`` must depend on the file's content only; a file that cannot be read is
        ``compute``'s to report, and what changed while ``compute`` read it is not remembered.
        With ``learned``, a new fact is added to that list instead, for ``remember`` once the run that
        asked is accepted (bad input leaves the store as it was)."""
        try:
            before = _file_identity(path)
        except OSError:
            return compute()
        memo = f"{self.root}/memo/{kind}/{key_digest({'kind': kind, 'file': before})}.json"
        try:
            return json.loads(self.fs.cat(memo))
        except (FileNotFoundError, ValueError):
            pass
        value = compute()
        try:
            unchanged = _file_identity(path) == before
        except OSError:
            unchanged = False
        if unchanged:
            if learned is None:
                self._put(memo, json.dumps(value).encode())
            else:
                learned.append((memo, value))
        return value

    def remember(self, learned: list) -> None:
        """Store the facts ``file_memo`` learned for a run that passed its checks."""
        for memo, value in learned:
            self._put(memo, json.dumps(value).encode())

    # -- run records ----------------------------------------------------------------------------
    def write_run(self, record: dict[str, Any]) -> None:
        self._put(f"{self.root}/runs/{record['run_id']}.json", json.dumps(record, indent=1, default=str).encode())

    def write_run_rows(self, run_id: str, part: int, rows: list[dict[str, Any]]) -> None:
        """One part of a dataset run's rows (JSON lines), written as the rows finish."""
        data = "".join(json.dumps(row, default=str) + "\n" for row in rows).encode()
        self._put(f"{self.root}/runs/{run_id}.rows/{part:06d}.jsonl", data)

    def run_rows(self, run_id: str) -> Iterator[dict[str, Any]]:
        base = f"{self.root}/runs/{run_id}.rows"
        if not self.fs.exists(base):
            return
        for path in sorted(p for p in self.fs.ls(base, detail=False) if p.endswith(".jsonl")):
            for line in self.fs.cat(path).decode().splitlines():
                yield json.loads(line)

    def remove_run(self, run_id: str) -> None:
        self.fs.rm(f"{self.root}/runs/{run_id}.json")
        if self.fs.exists(f"{self.root}/runs/{run_id}.rows"):
            self.fs.rm(f"{self.root}/runs/{run_id}.rows", recursive=True)

    def runs(self) -> list[dict[str, Any]]:
        base = f"{self.root}/runs"
        if not self.fs.exists(base):
            return []
        records = []
        for path in self.fs.ls(base, detail=False):
            if path.endswith(".json"):
                try:
                    records.append(json.loads(self.fs.cat(path)))
                except ValueError:
                    continue  # a record being written by a crashed process: not a run
        return sorted(records, key=lambda r: r.get("started", 0))

    def run(self, run_id: str) -> dict[str, Any]:
        matches = [r for r in self.runs() if r["run_id"].startswith(run_id)]
        if not matches:
            raise StoreError(f"store {self.url}: no run {run_id!r}")
        if len(matches) > 1:
            raise StoreError(f"store {self.url}: run id {run_id!r} is ambiguous ({len(matches)} runs)")
        return matches[0]


def _has_marker(zarr_json: bytes) -> bool:
    try:
        return MARKER in json.loads(zarr_json).get("attributes", {})
    except ValueError:
        return False


def _file_identity(path: str) -> dict[str, Any]:
    stat = os.stat(path)
    return {"path": os.path.realpath(path), "size": stat.st_size, "mtime": stat.st_mtime_ns,
            "ctime": stat.st_ctime_ns, "inode": stat.st_ino, "device": stat.st_dev}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_leftovers(store: ArtifactStore, stage: str, key: str | None = None) -> list[str]:
    """Temporary folders of local writers that died mid-write (their process is gone)."""
    tmp = f"{store.root}/entries/{stage}/.tmp"
    if not store.local or not os.path.isdir(tmp):
        return []
    found = []
    for name in os.listdir(tmp):
        parts = name.split("-")
        if len(parts) < 3 or (key is not None and parts[0] != key):
            continue
        if parts[1].isdigit() and not _pid_alive(int(parts[1])):
            found.append(os.path.join(tmp, name))
    return found
