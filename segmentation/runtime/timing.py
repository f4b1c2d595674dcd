"""Wall time of a job's stages, logged at INFO ("stage: 12.3 s") so a slow run says where."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("segmentation.runtime.timing")


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Log the wall seconds spent in the ``with`` block under ``name`` (also when it raises)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        log.info("%s: %.1f s", name, time.perf_counter() - started)
