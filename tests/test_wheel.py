"""The package as a user installs it: a wheel built from this checkout, installed in a fresh virtual
environment, and ``pst demo`` run from a folder outside the repository at a tiny size.

Offline and quick: the wheel is built with the running interpreter's setuptools (no build isolation),
and the fresh environment takes its dependencies from the running interpreter's site-packages (a
.pth file, added after the wheel is installed so pip never sees the project's own installation).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["load.size=32", "style_transfer.iterations=2", "style_transfer.scale_iterations=2",
        "style_transfer.snapshot_every=0", "cluster_layer.iterations=5", "fuse_segmentation.iterations=5"]


def _clean_env(**extra) -> dict[str, str]:
    """The environment without PYTHONPATH or Prefect settings: with the checkout on PYTHONPATH, pip finds
    its pst.egg-info, calls pst installed and skips the wheel (no bin/pst)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_", "PYTHONPATH"))}
    return {**env, **extra}


def _run(*argv, env=None, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600,
                          env=env or _clean_env(), **kwargs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_the_wheel_installs_and_runs_the_demo_from_anywhere(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("pst_core", "flows", "tasks"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("pst-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"pst_core/demo/content.png", "pst_core/demo/style.png", "pst_core/segmentation/__init__.py",
            "flows/cli.py", "tasks/stages.py"} <= set(names)
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    sets = sum((["--set", s] for s in TINY), [])
    demo = _run(venv / "bin" / "pst", "demo", "--out", "out/demo.png", "--store", "store", *sets, cwd=elsewhere,
                env=env)
    lines = demo.stdout.splitlines()
    assert lines[0].startswith(("pst demo: VGG19 weights: random (", "pst demo: VGG19 weights: imagenet (")), lines[0]
    assert f"pst demo: {site / 'pst_core' / 'demo' / 'content.png'} styled with" in demo.stdout  # the installed images
    for name in ("demo.png", "demo_k1.png", "demo_figure.png"):
        assert (elsewhere / "out" / name).stat().st_size > 0, name
