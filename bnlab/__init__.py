"""BN Lab: watch what Batch Normalization does to training, live.

The installed package is assembled from the repository's top-level folders
(pyproject.toml's `package-dir`): `bnlab.model` is `model/` (the training core),
`bnlab.server` is `server/` (API, workers, store, stream) and `bnlab.frontend`
is `frontend/` (the dashboard, served as package data). This folder holds only
what names the whole: the version and `python -m bnlab`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bnlab")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
