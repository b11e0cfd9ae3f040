"""The package as a user installs it: a regular (non-editable) wheel in a fresh venv.

The wheel is built from this checkout and installed with `--no-deps` into a venv
that sees the dev venv's dependencies through a `.pth` line (TensorFlow is not
installed twice), all but the extras' test tools and Ray: a plain install has none
of them. `bnlab serve` then runs from that venv, in a directory that is not the
checkout, so nothing can be imported or served from the source tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from bnlab.server.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
# What only the extras install (`bnlab[ray]`, `bnlab[dev]`): serving needs none of them.
EXTRAS_ONLY = ("ray", "playwright", "schemathesis")
# What setuptools says about a package data layout it finds ambiguous, on every install.
SETUPTOOLS_WARNINGS = ("Package would be ignored", "SetuptoolsDeprecationWarning")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the dev venv's setuptools builds it, so this needs no index.
    # Verbose: pip shows the build backend's output (and warnings) only then.
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--verbose",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (out / "build.log").write_text(build.stdout + build.stderr)
    (path,) = out.glob("bnlab-*.whl")
    return path


def visible_dependencies(site_dir: Path, into: Path) -> Path:
    """`into`, holding a link to every entry of `site_dir` but those of EXTRAS_ONLY's
    distributions, which a plain install would not have."""
    hidden = {
        file.parts[0]
        for name in EXTRAS_ONLY
        for file in metadata.distribution(name).files or ()
        if file.parts[0] != ".."  # its console scripts, outside site-packages
    }
    assert {"ray", "playwright", "schemathesis"} <= hidden, hidden
    into.mkdir()
    for entry in site_dir.iterdir():
        if entry.name not in hidden:
            (into / entry.name).symlink_to(entry)
    return into


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
    visible = [
        visible_dependencies(Path(d), root / f"dependencies-{i}") for i, d in enumerate(site_dirs)
    ]
    (purelib / "zz-dev-dependencies.pth").write_text("".join(f"{d}\n" for d in visible))
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


def test_the_build_prints_no_setuptools_warnings(wheel: Path):
    """The page's css/ and js/ folders are package data, declared as such: setuptools
    does not take them for packages left out ("Package would be ignored")."""
    log = (wheel.parent / "build.log").read_text()
    assert "running build_py" in log, log[-3000:]  # the backend's output is there to read
    warned = [line for line in log.splitlines() if any(w in line for w in SETUPTOOLS_WARNINGS)]
    assert not warned, "\n".join(warned)


def test_ray_and_the_test_tools_come_only_with_the_extras(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        requires = [
            line.removeprefix("Requires-Dist:").strip()
            for line in archive.read(name).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    plain = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("tensorflow") for r in plain), requires
    for tool in EXTRAS_ONLY:
        assert not [r for r in plain if r.startswith(tool)], (tool, plain)
        assert [r for r in requires if r.startswith(tool)], (tool, requires)  # under an extra
    assert any(r.startswith("ray") and 'extra == "ray"' in r for r in requires), requires


def test_bnlab_serve_from_an_installed_wheel_serves_the_dashboard(venv: Path, tmp_path: Path):
    python = venv / "bin" / "python"
    for tool in EXTRAS_ONLY:  # installed in the dev venv, not in a plain install's
        missing = subprocess.run([str(python), "-c", f"import {tool}"], capture_output=True)
        assert b"ModuleNotFoundError" in missing.stderr, (tool, missing.stderr[-500:])
    asked = subprocess.run(
        [str(venv / "bin" / "bnlab"), "serve", "--executor", "ray", "--db", str(tmp_path / "r.db")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert asked.returncode == 2 and "pip install 'bnlab[ray]'" in asked.stderr, asked.stderr
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
            # Something at once, before the imports that take a cold install a minute.
            said = (tmp_path / "serve.log").read_text().splitlines()
            assert said[0] == "bnlab serve: starting…", said
            assert any(line.startswith(f"BN Lab: http://127.0.0.1:{port}") for line in said)
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
