"""One Prefect harness for the whole session, with its own PREFECT_HOME and telemetry off."""

import os
import tempfile
from pathlib import Path

_HOME = tempfile.mkdtemp(prefix="pst-prefect-home-")
os.environ["PREFECT_HOME"] = _HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import logging  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

# s3fs/zarr keep aiohttp sessions of the S3 test's filesystems until interpreter exit, where asyncio
# reports each as "Unclosed client session" after pytest's summary; they are closed by then anyway.
logging.getLogger("asyncio").setLevel(logging.CRITICAL)

# Tiny, fast settings: real stages, few iterations, small images.
FAST = [
    "features.weights=random",
    "load.size=40",
    "features.layers=relu1_1,relu2_1,relu3_1",
    "cluster_layer.iterations=30",
    "fuse_segmentation.iterations=30",
    "fuse_segmentation.k=2",
    "style_transfer.iterations=8",
    "style_transfer.style_layers=relu1_1,relu2_1,relu3_1",
    "style_transfer.content_layers=relu3_1",
]


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


def _save(path: Path, array: np.ndarray) -> str:
    Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, str]:
    """A content image (disk on a ground) and a style image (two textures), 40x32 px."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:40]
    disk = (yy - 14) ** 2 + (xx - 20) ** 2 < 90
    content = np.where(disk[..., None], [0.9, 0.8, 0.2], [0.2, 0.5, 0.25]) + 0.05 * rng.standard_normal((32, 40, 3))
    stripes = (np.sin(xx * 1.3) > 0)[..., None] * [0.8, 0.3, 0.1] + 0.1
    dots = ((yy % 6 < 3) & (xx % 6 < 3))[..., None] * [0.1, 0.4, 0.8] + 0.1
    style = np.where((yy < 16)[..., None], stripes, dots)
    return {"content": _save(folder / "content.png", content), "style": _save(folder / "style.png", style)}


OUTPUT = Path(__file__).resolve().parent / "output"  # pictures the tests leave to be looked at (git-ignored)


def chromium(profile: Path) -> list[str]:
    """Headless Chromium's command line, quiet and offline but for the pages it is given; a test that needs
    it fails (``make test`` installs it) rather than skipping."""
    browser = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(name)), None)
    if browser is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
