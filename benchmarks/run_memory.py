"""Where a pipeline run's memory goes: `pst run` in this process, its resident memory sampled every
0.1 s, and the peak of each transfer scale (how each scale ran: whole or in tiles, and its L-BFGS history).

    PYTHONPATH=. python benchmarks/run_memory.py content.png style.png --content-labels c.png \\
        --style-labels s.png --set load.size=2048 --set features.weights=random \\
        --set style_transfer.tile_size=1024 --set style_transfer.fine_iterations=1

Every argument goes to `pst run` unchanged (give --store and --out to keep the run elsewhere than
the default store). The figures are the whole process's (Prefect, the earlier stages, the transfer),
which is what the memory budget has to hold.
"""

from __future__ import annotations

import sys
import threading
import time

from benchmarks.style import _rss
from flows.cli import main, one_heap_for_every_thread
from pst_core.progress import TransferProgress, listening

GIB = 2 ** 30


def resident() -> float:
    return _rss() / GIB


def measure(argv: list[str]) -> int:
    one_heap_for_every_thread()  # as the pst command does, before the sampler's thread allocates
    samples: list[tuple[float, float]] = []
    scales: dict[int, TransferProgress] = {}  # each scale's last record
    ends: dict[int, float] = {}
    first: list[float] = []  # when the transfer's first iteration ended
    done = threading.Event()

    def sample():
        while not done.is_set():
            samples.append((time.perf_counter(), resident()))
            time.sleep(0.1)

    def listener(record: TransferProgress):
        scales[record.scale], ends[record.scale] = record, time.perf_counter()
        first[:] = first or [ends[record.scale]]

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with listening(listener):
        code = main(["run", *argv])
    done.set()
    sampler.join()
    print(f"\nexit {code}; peak resident {max(r for _, r in samples):.2f} GiB over the whole run")
    if not first:
        return code
    print(f"  before the transfer's first iteration (the earlier stages): peak "
          f"{max(r for t, r in samples if t < first[0]):.2f} GiB")
    start = first[0]
    for scale in sorted(scales):
        record = scales[scale]
        # From the end of the scale before (this one's objective is built after it) to this one's end;
        # the first scale's from its first iteration on.
        window = [r for t, r in samples if start <= t <= ends[scale] + 0.2]
        how = "whole image" if record.tile is None else f"{record.tile} px tiles"
        print(f"  scale {scale} ({record.size[1]}x{record.size[0]}, {how}, history {record.history}): "
              f"peak {max(window):.2f} GiB")
        start = ends[scale]
    return code


if __name__ == "__main__":
    sys.exit(measure(sys.argv[1:]))
