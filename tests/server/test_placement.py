"""Where runs train, decided before any training: the serve flags for the executor and
GPU packing, and how many runs fit on a machine or a Ray cluster. Fast, in-process."""

from __future__ import annotations

import pytest

from bnlab.server.cli import build_parser
from bnlab.server.execution.cluster import ClusterPublic, ResourcePublic
from bnlab.server.execution.executor import ExecutorKind
from bnlab.server.execution.ray_executor import run_slots
from bnlab.server.web.serve import settings_from_args
from bnlab.server.web.settings import Settings


def serve_args(monkeypatch, *flags: str, **env: str):
    for name in (
        "BNLAB_EXECUTOR",
        "BNLAB_RAY_ADDRESS",
        "BNLAB_GPUS_PER_RUN",
        "BNLAB_CHECKPOINT_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return build_parser().parse_args(["serve", *flags])


def serve_settings(monkeypatch, *flags: str, **env: str) -> Settings:
    """What `bnlab serve` would run with: the flags over the environment."""
    return settings_from_args(serve_args(monkeypatch, *flags, **env))


def test_the_process_executor_on_every_gpu_is_the_default(monkeypatch):
    settings = serve_settings(monkeypatch)
    assert (settings.executor, settings.ray_address, settings.gpus_per_run) == (
        ExecutorKind.PROCESS,
        "auto",
        1.0,
    )
    assert settings.checkpoint_root is None


def test_ray_flags_and_their_environment_variables(monkeypatch):
    args = serve_settings(
        monkeypatch, "--executor", "ray", "--ray-address", "head:6379", "--gpus-per-run", "0.25"
    )
    assert (args.executor, args.ray_address, args.gpus_per_run) == ("ray", "head:6379", 0.25)
    env = serve_settings(
        monkeypatch,
        BNLAB_EXECUTOR="ray",
        BNLAB_RAY_ADDRESS="10.0.0.5:6379",
        BNLAB_GPUS_PER_RUN="0.5",
        BNLAB_CHECKPOINT_DIR="/shared/ckpt",
    )
    assert (env.executor, env.ray_address, env.gpus_per_run) == ("ray", "10.0.0.5:6379", 0.5)
    assert str(env.checkpoint_dir) == "/shared/ckpt"
    # A flag wins over its variable.
    both = serve_settings(monkeypatch, "--executor", "process", BNLAB_EXECUTOR="ray")
    assert both.executor == ExecutorKind.PROCESS


@pytest.mark.parametrize("value", ["0", "-0.5", "1.5", "half"])
def test_a_gpu_share_outside_0_to_1_is_refused_naming_the_flag(monkeypatch, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        serve_args(monkeypatch, "--gpus-per-run", value)
    assert exit_.value.code == 2
    assert "argument --gpus-per-run:" in capsys.readouterr().err


def test_an_unknown_executor_is_refused_naming_the_flag(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        serve_args(monkeypatch, "--executor", "slurm")
    assert exit_.value.code == 2
    assert "--executor" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("gpus", "share", "workers", "expected"),
    [
        ([], 1.0, None, 2),  # CPU only: two at once, as always
        (["0"], 1.0, None, 2),  # at least two
        (["0", "1", "2"], 1.0, None, 3),  # one per GPU
        (["0", "1"], 0.25, None, 8),  # four per GPU
        (["0"], 0.3, None, 3),  # rounded down: three runs of 0.3 fit a card, four do not
        (["0", "1"], 0.25, 3, 3),  # --workers wins
    ],
)
def test_process_executor_packs_one_over_the_share_runs_per_gpu(
    monkeypatch, gpus, share, workers, expected
):
    # The GPUs are the driver's answer, not a setting: ask a pretend driver.
    monkeypatch.setattr("bnlab.server.web.settings.visible_gpus", lambda: gpus)
    settings = Settings(gpus_per_run=share, workers=workers)
    assert settings.worker_count == expected
    assert settings.executor == ExecutorKind.PROCESS


def cluster(cpus: float, gpus: float) -> ClusterPublic:
    return ClusterPublic(
        address="auto",
        connected=True,
        cpus=ResourcePublic(total=cpus, free=cpus),
        gpus=ResourcePublic(total=gpus, free=gpus),
    )


@pytest.mark.parametrize(
    ("cpus", "gpus", "share", "expected"),
    [
        (2, 1, 0.5, 2),  # the tests' cluster: one logical GPU, two halves
        (64, 8, 0.25, 32),  # GPUs decide, not CPUs
        (8, 1, 0.1, 10),  # more runs than CPUs on a card: fine, the GPU is what is shared
        (16, 0, 0.5, 16),  # CPU-only cluster: a run per CPU, the share is moot
        (0, 0, 1.0, 0),  # a head without resources: runs wait until workers join
    ],
)
def test_a_ray_cluster_holds_its_gpus_over_the_share_runs(cpus, gpus, share, expected):
    assert run_slots(cluster(cpus, gpus), share) == expected
