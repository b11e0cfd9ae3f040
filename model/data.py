"""MNIST: find, verify, download and decode the four IDX files; split; batch order.

TensorFlow-free on purpose (NumPy only) so the server can import the data error
types without paying for TensorFlow.

`python -m bnlab.model.data` fetches and verifies the files ahead of time (what
`make test` does first); `--offline` only verifies them.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import os
import struct
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs

# The four files and their sha256, in `sha256sum -c` format (as in SHA256SUMS).
SHA256SUMS = """\
440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609  train-images-idx3-ubyte.gz
3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c  train-labels-idx1-ubyte.gz
8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6  t10k-images-idx3-ubyte.gz
f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6  t10k-labels-idx1-ubyte.gz
"""
FILES: dict[str, str] = {
    name: digest for digest, name in (line.split() for line in SHA256SUMS.splitlines())
}
# Public mirrors of the original files, tried in order (yann.lecun.com itself now
# answers 403 to scripts).
MIRRORS: tuple[str, ...] = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
MIRRORS_ENV_VAR = "BNLAB_MIRRORS"  # comma-separated base URLs, e.g. an internal mirror
VALIDATION_SIZE = 5000
IMAGE_SIZE = 28
NUM_CLASSES = 10
ENV_VAR = "BNLAB_DATA_DIR"
# Evaluate on the first N validation and test images only: quicker runs, noisier
# numbers. For checking the service (the test suite sets it), never for results.
EVAL_SUBSET_ENV_VAR = "BNLAB_EVAL_SUBSET"


class DataError(Exception):
    """MNIST could not be made available; the message is meant for the user."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # float32, (n, 28, 28, 1), in [0, 1]
    labels: np.ndarray  # int32, (n,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Mnist:
    train: Split
    validation: Split
    test: Split


def default_data_dir() -> Path:
    """The per-user cache directory: $XDG_CACHE_HOME/bnlab/mnist (~/.cache/...) on Linux."""
    return platformdirs.user_cache_path("bnlab", appauthor=False) / "mnist"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """`--data-dir`, else `$BNLAB_DATA_DIR`, else the per-user cache directory."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return default_data_dir()


def mirrors() -> tuple[str, ...]:
    configured = os.environ.get(MIRRORS_ENV_VAR, "")
    urls = tuple(u.strip().rstrip("/") + "/" for u in configured.split(",") if u.strip())
    return urls or MIRRORS


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


ProgressFactory = Callable[[str, int | None], Callable[[int], None]]


def _tqdm_progress(name: str, total: int | None) -> Callable[[int], None]:
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr)
    return bar.update


def _fetch(url: str, target: Path, name: str, progress: ProgressFactory) -> None:
    """Stream `url` into `target` via a temporary file, so that an interrupted
    download never leaves a half-written file under the real name."""
    tmp = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{name}.", delete=False)  # noqa: SIM115 (closed below, kept on failure for unlink)
    try:
        with tmp, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            update = progress(name, total)
            for block in iter(lambda: response.read(1 << 16), b""):
                tmp.write(block)
                update(len(block))
        if sha256_of(Path(tmp.name)) != FILES[name]:
            raise OSError("downloaded file failed the sha256 check")
        # A temporary file is private (0600); data in a shared directory is not.
        os.chmod(tmp.name, 0o644)
        Path(tmp.name).replace(target)
    finally:
        Path(tmp.name).unlink(missing_ok=True)


def _download(name: str, target: Path, progress: ProgressFactory) -> str | None:
    """Fetch one file from the first mirror that works. Returns the error text, or None."""
    errors = []
    for mirror in mirrors():
        try:
            _fetch(mirror + name, target, name, progress)
            return None
        # OSError: URLError, timeouts, HTTP errors, checksum, disk. ValueError and
        # HTTPException: a malformed mirror URL or a server that is not HTTP.
        except (OSError, ValueError, http.client.HTTPException) as exc:
            errors.append(f"{mirror}{name}: {getattr(exc, 'reason', exc)}")
    return "; ".join(errors)


def ensure_files(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    progress: ProgressFactory = _tqdm_progress,
) -> Path:
    """Make sure the four files are in the data directory and intact; return it.

    Missing files are downloaded (with progress) when `download` is true. Files
    present with the wrong checksum are reported, never silently replaced: the
    user may have put them there on purpose.
    """
    directory = resolve_data_dir(data_dir)
    missing = [name for name in FILES if not (directory / name).is_file()]
    for name in FILES:
        path = directory / name
        if name in missing:
            continue
        try:
            digest = sha256_of(path)
        except OSError as exc:
            raise DataError(f"MNIST file {path} cannot be read: {exc.strerror or exc}") from None
        if digest != FILES[name]:
            raise DataError(
                f"MNIST file {path} is corrupt or truncated (sha256 mismatch). "
                f"Delete it to download it again, or replace it with the original."
            )
    if missing and download:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"Cannot create MNIST directory {directory}: {exc}") from None
        for name in list(missing):
            error = _download(name, directory / name, progress)
            if error:
                # One file failing on every mirror means the others would too
                # (offline, proxy): say so once instead of timing out four times.
                raise DataError(
                    f"MNIST is missing from {directory} ({', '.join(missing)}) and could not "
                    f"be downloaded: {error}. Put the four files there, or point "
                    f"--data-dir / {ENV_VAR} at a directory that has them."
                )
            missing.remove(name)
    if missing:
        raise DataError(
            f"MNIST is missing from {directory}: {', '.join(missing)}. "
            f"Put the files there, or point --data-dir / {ENV_VAR} at them."
        )
    return directory


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"MNIST file {path} is corrupt or truncated: {exc}") from None
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"MNIST file {path} is truncated: header incomplete")
    found_magic, *shape = struct.unpack(f">{1 + dims}I", raw[:header])
    if found_magic != magic:
        raise DataError(f"MNIST file {path} is not an IDX file (magic {found_magic})")
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(f"MNIST file {path} is truncated: expected shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    scaled = (images.astype(np.float32) / 255.0).reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1)
    return Split(images=scaled, labels=labels.astype(np.int32))


def eval_subset_from_env() -> int | None:
    """`$BNLAB_EVAL_SUBSET` as a count of images, or None when unset."""
    raw = os.environ.get(EVAL_SUBSET_ENV_VAR, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise DataError(f"{EVAL_SUBSET_ENV_VAR} must be a whole number of images, not {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class RawMnist:
    """The four files decoded and nothing more: uint8 images, 55 MB rather than
    the 220 MB of float32 splits, which is what travels to other machines (the
    Ray executor puts it into the object store once; each run splits its copy)."""

    train_images: np.ndarray  # uint8, (60000, 28, 28)
    train_labels: np.ndarray  # uint8, (60000,)
    test_images: np.ndarray  # uint8, (10000, 28, 28)
    test_labels: np.ndarray  # uint8, (10000,)


def read_raw_mnist(
    data_dir: str | os.PathLike[str] | None = None, *, download: bool = True
) -> RawMnist:
    """Find (or download), verify and decode the four files."""
    directory = ensure_files(data_dir, download=download)
    raw = RawMnist(
        train_images=_read_idx(directory / "train-images-idx3-ubyte.gz", 2051, 3),
        train_labels=_read_idx(directory / "train-labels-idx1-ubyte.gz", 2049, 1),
        test_images=_read_idx(directory / "t10k-images-idx3-ubyte.gz", 2051, 3),
        test_labels=_read_idx(directory / "t10k-labels-idx1-ubyte.gz", 2049, 1),
    )
    if len(raw.train_images) != len(raw.train_labels) or len(raw.test_images) != len(
        raw.test_labels
    ):
        raise DataError(f"MNIST files in {directory} disagree on the number of examples")
    return raw


def split_mnist(
    raw: RawMnist, train_subset: int | None = None, eval_subset: int | None = None
) -> Mnist:
    """The classic TensorFlow-tutorial split: validation = first 5,000 training
    images, train = the other 55,000 (or its first `train_subset`), test = 10,000.

    `eval_subset` (default `$BNLAB_EVAL_SUBSET`) keeps only the first that many
    validation and test images. The files are still the verified originals: a
    prefix of the real data, never a substitute for it.
    """
    if eval_subset is None:
        eval_subset = eval_subset_from_env()
    end = None if train_subset is None else VALIDATION_SIZE + train_subset
    validation = min(VALIDATION_SIZE, eval_subset or VALIDATION_SIZE)
    return Mnist(
        train=_split(raw.train_images[VALIDATION_SIZE:end], raw.train_labels[VALIDATION_SIZE:end]),
        validation=_split(raw.train_images[:validation], raw.train_labels[:validation]),
        test=_split(raw.test_images[:eval_subset], raw.test_labels[:eval_subset]),
    )


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    train_subset: int | None = None,
    eval_subset: int | None = None,
) -> Mnist:
    """MNIST from `data_dir`, split as `split_mnist` says."""
    return split_mnist(read_raw_mnist(data_dir, download=download), train_subset, eval_subset)


class BatchOrder:
    """Which examples make up batch number `step` (0-based).

    A pure function of (n, batch_size, seed, step): each epoch is a fresh
    permutation seeded by (seed, epoch), and batches run through it in order,
    wrapping into the next epoch's permutation when one runs out. Being a pure
    function of the step is what lets a resumed run see exactly the batches an
    uninterrupted one would, and a BN run and its no-BN twin see the same ones.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._cached: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, np.random.default_rng((self.seed, epoch)).permutation(self.n))
        return self._cached[1]

    def indices(self, step: int) -> np.ndarray:
        return self.window(step, 1)[0]

    def window(self, first_step: int, count: int) -> np.ndarray:
        """The batches of steps `first_step` to `first_step + count - 1`, one a row."""
        start, total = first_step * self.batch_size, count * self.batch_size
        out = np.empty(total, dtype=np.int32)
        filled = 0
        while filled < total:
            epoch, offset = divmod(start + filled, self.n)
            take = min(total - filled, self.n - offset)
            out[filled : filled + take] = self._permutation(epoch)[offset : offset + take]
            filled += take
        return out.reshape(count, self.batch_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bnlab.model.data",
        description="Download (if missing) and verify the four MNIST files; print their directory.",
    )
    parser.add_argument("--data-dir", help=f"MNIST directory (default: ${ENV_VAR}, else the cache)")
    parser.add_argument(
        "--offline", action="store_true", help="only verify: fail instead of downloading"
    )
    args = parser.parse_args(argv)
    try:
        directory = ensure_files(args.data_dir, download=not args.offline)
    except DataError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    print(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
