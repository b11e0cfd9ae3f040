# syntax=docker/dockerfile:1
# BN Lab with TensorFlow 2.21 on NVIDIA GPUs. Use it through docker-compose.yml
# (`docker compose up`, see docs/docker-gpu.md); `make test` lints this file with hadolint.
#
# The CUDA and cuDNN libraries come from PyPI (`tensorflow[and-cuda]`, pinned as
# pyproject.toml's `gpu` extra), so a slim Python base is enough: the host needs only
# the NVIDIA driver (docs/gpu.md: which version) and the NVIDIA Container Toolkit.
# Without a GPU the same image trains on the CPU.
FROM python:3.11.15-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Dependencies first, heaviest first, so that editing the code never rebuilds
# them. Versions are pinned to the ones the test suite passes with; pyproject.toml
# only gives ranges, and tests/test_container.py checks these pins stay inside them.
# 1. TensorFlow and its CUDA/cuDNN wheels (the `gpu` extra's pins: TensorFlow's own
#    ranges would let them float), numpy, and scipy (the experiment statistics): the
#    big layer.
RUN pip install --no-cache-dir "tensorflow[and-cuda]==2.21.0" "numpy==2.4.6" "scipy==1.17.1" \
        "nvidia-cublas-cu12==12.5.3.2" \
        "nvidia-cuda-cupti-cu12==12.5.82" \
        "nvidia-cuda-nvcc-cu12==12.5.82" \
        "nvidia-cuda-nvrtc-cu12==12.5.82" \
        "nvidia-cuda-runtime-cu12==12.5.82" \
        "nvidia-cudnn-cu12==9.3.0.75" \
        "nvidia-cufft-cu12==11.2.3.61" \
        "nvidia-curand-cu12==10.3.6.82" \
        "nvidia-cusolver-cu12==11.6.3.83" \
        "nvidia-cusparse-cu12==12.5.1.3" \
        "nvidia-nccl-cu12==2.27.7" \
        "nvidia-nvjitlink-cu12==12.5.82"
# 2. The web stack (its own layer on purpose: bumping it keeps layer 1 cached).
# hadolint ignore=DL3059
RUN pip install --no-cache-dir \
        "pydantic==2.14.4" \
        "pydantic-settings==2.16.3" \
        "platformdirs==4.14.8" \
        "fastapi==0.165.0" \
        "uvicorn[standard]==0.54.0" \
        "websockets==17.4" \
        "plotly==7.1.0" \
        "tqdm==4.70.1" \
        "scipy==1.17.1"
# 3. Ray, only in the image the compose profile `ray` builds (BNLAB_WITH_RAY=1):
# the plain image, like the plain install, does without it.
ARG BNLAB_WITH_RAY=""
# hadolint ignore=DL3059
RUN if [ -n "$BNLAB_WITH_RAY" ]; then pip install --no-cache-dir "ray[default]==2.60.0" ; fi

# A non-root user that owns nothing but the volume directories (created here so
# that new named volumes start out owned by it; the checkpoints one is the Ray
# profile's, shared by its nodes; the CUDA cache keeps JIT-compiled kernels).
RUN useradd --create-home --uid 10001 --user-group bnlab \
    && mkdir -p /data/mnist /var/lib/bnlab /var/lib/bnlab-checkpoints /var/cache/bnlab-cuda \
    && chown bnlab:bnlab /data/mnist /var/lib/bnlab /var/lib/bnlab-checkpoints \
        /var/cache/bnlab-cuda

# 4. The project, installed as a regular wheel: the dashboard ships inside it as
# package data (`bnlab.frontend`), so nothing is served from a source tree. The
# build context is removed after the install; pip checks the pins above against
# pyproject.toml here and would install anything missing.
WORKDIR /tmp/bnlab-src
COPY pyproject.toml README.md ./
COPY bnlab/ bnlab/
COPY model/ model/
COPY server/ server/
COPY frontend/ frontend/
RUN pip install --no-cache-dir . && rm -rf /tmp/bnlab-src
# The benchmarks, so that `python -m bench.gpu` measures a GPU where users train on it.
WORKDIR /opt/bnlab
COPY bench/ bench/
WORKDIR /var/lib/bnlab

# Server settings (see docs/configuration.md). Listening on all interfaces
# inside the container makes the server insist on an access token: it refuses to
# start unless BNLAB_TOKEN is set (docker-compose.yml requires it).
ENV BNLAB_HOST=0.0.0.0 \
    BNLAB_PORT=8000 \
    BNLAB_DB=/var/lib/bnlab/bnlab.db \
    BNLAB_DATA_DIR=/data/mnist \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PYTHONPATH=/opt/bnlab \
    CUDA_CACHE_PATH=/var/cache/bnlab-cuda \
    CUDA_CACHE_MAXSIZE=4294967296

# CUDA_CACHE_PATH: TensorFlow 2.21 ships only PTX for Hopper (H100, H200), which the
# driver compiles for minutes at a process's start unless its cache has the result.
# On a volume, the cache outlives the container: the JIT is paid once per card.

# Numeric, so that the runtime can tell it is not root without reading /etc/passwd.
USER 10001:10001
VOLUME ["/data/mnist", "/var/lib/bnlab", "/var/cache/bnlab-cuda"]
EXPOSE 8000

# GET /api/health needs no token. Python, because the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BNLAB_PORT', '8000') + '/api/health', timeout=4)"]

CMD ["bnlab", "serve"]
