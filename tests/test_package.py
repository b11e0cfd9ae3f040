"""The package as a user installs it: a regular (non-editable) wheel in a fresh venv.

The wheel is built from this checkout and installed with `--no-deps` into a venv
that sees the dev venv's dependencies through a `.pth` line (TensorFlow is not
installed twice). `bnlab serve` then runs from that venv, in a directory that is
not the checkout, so nothing can be imported or served from the source tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from bnlab.server.testing import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the dev venv's setuptools builds it, so this needs no index.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("bnlab-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)}))
    # The dev interpreter's site-packages directories (its own, and any a .pth of it
    # chains, where the dependencies may really be) as plain path entries: the
    # dependencies are importable, but their .pth files (the editable finder of this
    # checkout) are not processed, so `bnlab` can only come from the wheel.
    site_dirs = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    (purelib / "zz-dev-dependencies.pth").write_text("".join(f"{d}\n" for d in site_dirs))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(root / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return root


def test_the_wheel_installs_one_namespace_with_the_dashboard_inside(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("bnlab-")}
    assert tops == {"bnlab"}, f"the wheel installs more than one top-level name: {tops}"
    for shipped in (
        "bnlab/frontend/index.html",
        "bnlab/frontend/js/main.js",
        "bnlab/frontend/js/experiments/page.js",
        "bnlab/frontend/js/runs/page.js",
        "bnlab/frontend/js/plot/figure.js",
        "bnlab/frontend/css/style.css",
        "bnlab/frontend/css/experiments.css",
    ):
        assert shipped in names
    # Every module of the source tree ships: a sub-package missing from pyproject's
    # package list would install a server that fails on its first import.
    root = Path(__file__).resolve().parents[1]
    for folder in ("model", "server"):
        for module in (root / folder).rglob("*.py"):
            shipped = f"bnlab/{module.relative_to(root).as_posix()}"
            assert shipped in names, f"{shipped} is not in the wheel"


def test_bnlab_serve_from_an_installed_wheel_serves_the_dashboard(venv: Path, tmp_path: Path):
    python = venv / "bin" / "python"
    found = subprocess.run(
        [str(python), "-c", "import bnlab, bnlab.frontend; print(bnlab.frontend.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert found.stdout.startswith(str(venv)), found.stdout  # not this checkout

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    env = {**os.environ, "BNLAB_DATA_DIR": str(tmp_path / "mnist")}
    server = subprocess.Popen(
        [str(venv / "bin" / "bnlab"), "serve", "--port", str(port), "--db", str(tmp_path / "x.db")],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 90
            while True:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                try:
                    health = http.get("/api/health")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "no answer from bnlab serve in 90 s"
                    time.sleep(0.2)
            assert health.status_code == 200 and health.json()["status"] == "ok"
            page = http.get("/")
            assert page.status_code == 200 and "BN Lab" in page.text
            script = http.get("/js/main.js")
            assert script.status_code == 200 and "import" in script.text
            bundle = http.get("/vendor/plotly.min.js")
            assert bundle.status_code == 200 and len(bundle.content) > 1_000_000
    finally:
        if server.poll() is None:  # one that died already has its log in the failure
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
