"""Progress of long stages (the style transfer's iterations), for whoever in this process listens.

The CLI listens and draws a bar; nothing listens by default. Stages report wherever they run: in a
thread of the flow's process the CLI's bar moves, on a Dask worker nobody listens.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

Listener = Callable[[str, dict], None]  # (stage, entry)
_listeners: list[Listener] = []


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def report_progress(stage: str, entry: dict) -> None:
    for listener in tuple(_listeners):
        listener(stage, entry)
