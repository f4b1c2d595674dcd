"""One SparkSession for the whole suite, built by the product's own session factory."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlflow
import pytest
from pyspark.sql import SparkSession

from segmentation.config import AppConfig, load_config
from segmentation.runtime.session import build_session

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _mlflow_template() -> Path:
    """An empty MLflow SQLite store, migrated once per test session."""
    folder = Path(tempfile.mkdtemp(prefix="mlflow-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    db = folder / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


def mlflow_store(db: Path) -> str:
    """The URI of an MLflow SQLite store at ``db``: a new one is a copy of an empty store
    migrated once per session (MLflow creates a new store by running every schema migration,
    2-3 s each time); the stores are otherwise what MLflow creates."""
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_mlflow_template(), db)
    return f"sqlite:///{db}"


def local_config(base: Path, *overrides: str) -> AppConfig:
    """``conf/local.yaml`` with its tables (``base/wh``), MLflow store (``base/mlflow.db``)
    and artifacts (``base/mla``) under ``base``, then ``overrides``."""
    return load_config(
        ROOT / "conf" / "local.yaml",
        overrides=[
            f"storage.warehouse={base / 'wh'}",
            f"tracking.tracking_uri={mlflow_store(base / 'mlflow.db')}",
            f"tracking.artifact_location={base / 'mla'}",
            # The sample's consent tables only where a test builds audiences on the sample.
            "generator.consent=false",
            *overrides,
        ],
    )


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    cfg = load_config(
        ROOT / "conf" / "local.yaml",
        overrides=["spark.master=local[2]", "spark.shuffle_partitions=2"],
    )
    # Spark's default 1 GB driver heap is shared by every test of the session (Delta's
    # snapshot caches of hundreds of small tables, broadcasts): 3 GB kept the last modules
    # from running out of room to broadcast until the stitched feature state's tests (dozens
    # of stitched days, each with its identity tables) came; 4 GB does, with those modules
    # dropping their caches (``release_caches``). A broadcast hash relation on a text key
    # takes one Tungsten page on the driver however few its rows, and the default page is
    # 64 MB here: 13 live relations held 0.9-1.4 GB of the heap in the stitched tests, and
    # one of them still ran out of room to broadcast in a full run. The test data is small:
    # 4 MB pages (measured: long arrays 0.9 GB to 0.1 GB at the same point).
    conf = {**cfg.spark.conf, "spark.driver.memory": "4g", "spark.buffer.pageSize": "4m"}
    cfg = cfg.model_copy(update={"spark": cfg.spark.model_copy(update={"conf": conf})})
    session = build_session(cfg)
    yield session
    session.stop()


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite MLflow store per test."""
    uri = mlflow_store(tmp_path / "mlflow.db")
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def browser_render(
    page_path: Path, out: Path, *, rows: Sequence[str] = (), boxes: Sequence[str] = ()
) -> dict[str, Any]:
    """Open an HTML page in Debian's chromium (``make browser``; Playwright drives it): console
    and page errors, the pictures it decoded (alt texts), the body rows of each table in
    ``rows``, the bounding box of each element in ``boxes``, and a screenshot (PNG bytes)."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make browser` installs it (make test does)"
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
        page.goto(page_path.resolve().as_uri())
        images = page.evaluate(
            "Array.from(document.images).filter(i => i.complete && i.naturalWidth > 100)"
            ".map(i => i.alt)"
        )
        found_boxes = {sel: page.locator(sel).bounding_box() for sel in boxes}
        counts = {sel: page.locator(f"{sel} tbody tr").count() for sel in rows}
        page.screenshot(path=str(out))
        browser.close()
    return {
        "errors": errors,
        "images": set(images),
        "rows": counts,
        "boxes": found_boxes,
        "viewport_height": 1600,
        "png": out.read_bytes(),
    }
