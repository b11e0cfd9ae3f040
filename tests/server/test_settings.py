"""Server settings: BNLAB_* variables read and validated by pydantic-settings, flags on top."""

import os
import subprocess
import sys

import pytest

from bnlab.server.cli import build_parser
from bnlab.server.web.serve import settings_from_args
from bnlab.server.web.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No BNLAB_* variable from the caller's shell (CI sets BNLAB_DATA_DIR)."""
    for name in [n for n in os.environ if n.startswith("BNLAB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def test_defaults_without_environment(tmp_path):
    settings = load_settings()
    assert (settings.host, settings.port, settings.max_queued) == ("127.0.0.1", 8000, 300)
    assert settings.token is None and settings.workers is None and settings.allowed_origins == []
    # platformdirs honours XDG_DATA_HOME: existing databases are found where they were
    assert settings.db_path == tmp_path / "data" / "bnlab" / "bnlab.db"
    assert settings.checkpoint_dir == tmp_path / "data" / "bnlab" / "bnlab-checkpoints"


def test_every_variable_is_read(monkeypatch, tmp_path):
    env = {
        "BNLAB_HOST": "0.0.0.0",
        "BNLAB_PORT": "9001",
        "BNLAB_DB": str(tmp_path / "runs.db"),
        "BNLAB_DATA_DIR": str(tmp_path / "mnist"),
        "BNLAB_WORKERS": "3",
        "BNLAB_TOKEN": "t0k3n",
        "BNLAB_PUBLIC_READ": "true",
        "BNLAB_MAX_QUEUED": "7",
        "BNLAB_ALLOWED_ORIGINS": "https://a.example/, http://b.example:8080 ,,",
        "BNLAB_MIRRORS": "http://mirror.example/",  # the loader's, not a server setting
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert (s.host, s.port, s.db_path, s.data_dir) == (
        "0.0.0.0",
        9001,
        tmp_path / "runs.db",
        str(tmp_path / "mnist"),
    )
    assert (s.workers, s.worker_count, s.token, s.max_queued) == (3, 3, "t0k3n", 7)
    assert s.public_read is True
    # comma-separated as a shell user writes it; trailing slashes and blanks dropped
    assert s.allowed_origins == ["https://a.example", "http://b.example:8080"]


def test_flags_override_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BNLAB_PORT", "not even a number")  # overridden: never looked at
    monkeypatch.setenv("BNLAB_TOKEN", "from-env")
    s = load_settings(port=9002, db_path=tmp_path / "flag.db", allowed_origins="http://c.example")
    assert (s.port, s.db_path, s.token) == (9002, tmp_path / "flag.db", "from-env")
    assert s.allowed_origins == ["http://c.example"]


@pytest.mark.parametrize(
    ("flags", "env", "public"),
    [
        ([], {}, False),  # reads need the token, when there is one
        (["--public-read"], {}, True),
        ([], {"BNLAB_PUBLIC_READ": "1"}, True),  # not hidden by the flag's absence
        (["--public-read"], {"BNLAB_PUBLIC_READ": "false"}, True),
    ],
)
def test_public_read_from_the_flag_or_the_environment(monkeypatch, flags, env, public):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["serve", *flags])
    assert settings_from_args(args).public_read is public


def test_a_bad_public_read_variable_is_named(monkeypatch):
    monkeypatch.setenv("BNLAB_PUBLIC_READ", "perhaps")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith("BNLAB_PUBLIC_READ='perhaps': ")


def test_empty_variables_count_as_unset(monkeypatch):
    """docker-compose passes BNLAB_WORKERS= and BNLAB_TOKEN= when the user set nothing."""
    for name in ("BNLAB_WORKERS", "BNLAB_TOKEN", "BNLAB_PORT", "BNLAB_ALLOWED_ORIGINS"):
        monkeypatch.setenv(name, "")
    s = load_settings()
    assert (s.workers, s.token, s.port, s.allowed_origins) == (None, None, 8000, [])


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("BNLAB_PORT", "http", "valid integer"),
        ("BNLAB_PORT", "70000", "65535"),
        ("BNLAB_WORKERS", "0", "greater than or equal to 1"),
        ("BNLAB_MAX_QUEUED", "lots", "valid integer"),
    ],
)
def test_a_bad_variable_is_named_with_its_value(monkeypatch, name, value, says):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith(f"{name}={value!r}: ") and says in str(err.value)


def serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BNLAB_")}
    return subprocess.run(
        [sys.executable, "-m", "bnlab", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )


def test_serve_reports_a_bad_variable_by_name_without_a_traceback(tmp_path):
    out = serve("--db", str(tmp_path / "x.db"), env={"BNLAB_PORT": "eighty"})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("bnlab serve: error: BNLAB_PORT='eighty': ")
    assert not (tmp_path / "x.db").exists()  # refused before anything was opened


def test_serve_reports_a_bad_flag_by_name(tmp_path):
    out = serve("--workers", "65", "--db", str(tmp_path / "x.db"), env={})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "argument --workers: '65': Input should be less than or equal to 64" in out.stderr


@pytest.mark.parametrize("flag", ["--data-dir", "--db"])
def test_serve_refuses_an_empty_path_flag_instead_of_using_the_default(tmp_path, flag):
    # An empty value would silently fall back to the per-user directory.
    args = ["--db", str(tmp_path / "x.db"), flag, " "]
    out = serve(*args, env={})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"argument {flag}: must not be empty" in out.stderr


def test_a_network_host_from_the_environment_still_needs_a_token(tmp_path):
    out = serve("--port", "1", "--db", str(tmp_path / "x.db"), env={"BNLAB_HOST": "0.0.0.0"})
    assert out.returncode == 2 and "--host 0.0.0.0" in out.stderr and "BNLAB_TOKEN" in out.stderr


def test_workers_are_given_the_drivers_gpus_unless_the_cpu_is_chosen(monkeypatch, fake_nvidia_smi):
    assert load_settings().gpus == ["0"]  # nvidia-smi's list
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")
    assert load_settings().gpus == ["1", "2"]  # narrowed as the user asked
    monkeypatch.setenv("BNLAB_DEVICE", "cpu")
    assert load_settings().gpus == [] and load_settings().worker_count == 2
    monkeypatch.delenv("BNLAB_DEVICE")
    args = build_parser().parse_args(["serve", "--device", "cpu"])
    assert settings_from_args(args).gpus == []
    assert settings_from_args(build_parser().parse_args(["serve"])).gpus == ["1", "2"]


def test_a_bad_device_is_named(monkeypatch, capsys):
    monkeypatch.setenv("BNLAB_DEVICE", "tpu")
    with pytest.raises(SettingsError, match="BNLAB_DEVICE='tpu'"):
        load_settings()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--device", "gpu"])
    assert "argument --device: 'gpu'" in capsys.readouterr().err
