"""Progress of the long stage, the style transfer: one typed record per iteration, ``TransferProgress``.

The transfer makes it; the CLI draws it as a progress bar (listening in this process, below), the
Prefect task writes it to the task run's log, both with ``describe``. Nothing listens by default:
stages report wherever they run, and on a Dask worker nobody listens.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass(frozen=True)
class TransferProgress:
    """One iteration of the style transfer, coarse to fine: ``iteration`` counts on across the scales,
    ``of`` them all; the scale's size, how it runs (tiles, L-BFGS history) and its losses."""

    scale: int  # 0: the coarsest
    iteration: int
    of: int
    size: tuple[int, int]  # (height, width) of this scale
    tile: int | None  # tile side in pixels, where the memory plan runs this scale in tiles
    history: int  # the L-BFGS history it keeps
    total: float
    content: float
    style: float
    tv: float

    def describe(self) -> str:
        """'40x32 px in 16 px tiles, L-BFGS history 3, loss 1.23 (content 0.1, style 1.1)': the losses that
        are not zero."""
        height, width = self.size
        tiled = f" in {self.tile} px tiles, L-BFGS history {self.history}" if self.tile else ""
        losses = ", ".join(f"{name} {value:.3g}" for name, value in
                           (("content", self.content), ("style", self.style), ("tv", self.tv)) if value)
        return f"{width}x{height} px{tiled}, loss {self.total:.4g} ({losses})"


Listener = Callable[[TransferProgress], None]
_listeners: list[Listener] = []


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def report_progress(progress: TransferProgress) -> None:
    for listener in tuple(_listeners):
        listener(progress)
