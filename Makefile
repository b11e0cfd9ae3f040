# BN Lab. Two commands matter: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# RAY=1: `make run` installs Ray too (`pip install 'bnlab[ray]'`), for --executor ray.
RAY ?=
# GPU=1: `make run` installs TensorFlow's CUDA libraries too (`pip install 'bnlab[gpu]'`,
# a few GB; docs/gpu.md), without which TensorFlow trains on the CPU. The default where
# the NVIDIA driver lists a GPU (`nvidia-smi -L`); GPU=0 installs without them.
GPU ?= $(if $(shell nvidia-smi -L 2>/dev/null | grep '^GPU '),1,0)
comma := ,

# What .venv holds, one stamp per install: `serve` (BN Lab and what serving needs),
# `ray` (that and Ray), `dev` (that and the test tools). Each includes the ones before
# it, so a target needing `serve` is content with any of them: `make run` after
# `make test` installs nothing, `make test` after `make run` adds the test tools.
# With GPU=1 each of them has CUDA's libraries too (`gpu`, `gpu,ray`, `gpu,dev`).
# A stamp is named by pyproject.toml's checksum: a changed one installs again.
SUM := $(shell cksum pyproject.toml | cut -d' ' -f1)
stamp = $(VENV)/.installed-$(1)-$(SUM)
# The first of these installs that is there, else the first one (to be made).
installed = $(firstword $(wildcard $(foreach set,$(1),$(call stamp,$(set)))) $(call stamp,$(firstword $(1))))
SETS := $(if $(RAY),ray dev,serve ray dev)
ifeq ($(GPU),1)
SETS := $(patsubst gpu$(comma)serve,gpu,$(addprefix gpu$(comma),$(SETS)))
endif
SERVE := $(call installed,$(SETS))
DEV := $(call installed,dev)

.PHONY: install run test lint format system-deps mnist bench clean

## make install: what `make run` installs, without serving (the default goal)
install: $(SERVE)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-%-$(SUM): pyproject.toml | $(BIN)/python
	$(if $(findstring gpu,$*),@echo "installing TensorFlow's CUDA libraries too ('bnlab[gpu]', a few GB) for the NVIDIA GPU; GPU=0 installs without them")
	$(BIN)/python -m pip install --quiet -e '.$(if $(filter serve,$*),,[$*])'
	@rm -f $(filter-out %-$(SUM),$(wildcard $(VENV)/.installed-*))
	touch $@

## make run: install into .venv and serve the dashboard at http://localhost:8000
run: $(SERVE)
	$(BIN)/bnlab serve --host $(HOST) --port $(PORT)

## make test: install (with dev extras and system test tools), lint, fetch MNIST, run every test
# Two pytest workers, a whole file each: most tests wait on servers, workers and the
# browser, so two files at once fit 2 cores; a file's fixtures (a Ray cluster, a
# browser) stay in one worker.
test: $(DEV) system-deps lint mnist
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The tests read the real MNIST and never download it themselves: fetch it here,
# through the product's own loader (checksums, BNLAB_MIRRORS, progress bar), into
# the directory they read (BNLAB_DATA_DIR, else the per-user cache). CI has its
# copy beside the checkout and must never download: there it only verifies.
mnist: $(DEV)
	$(BIN)/python -m bnlab.model.data $(if $(CI),--offline)

# The page's JavaScript linter (Biome, pinned in package.json and package-lock.json):
# installed by `npm ci` whenever the lock file is newer than what node_modules holds.
BIOME := node_modules/.bin/biome
$(BIOME): package.json package-lock.json | system-deps
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: $(DEV) $(BIOME)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIOME) lint frontend/js

format: $(DEV)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Debian's Chromium drives the browser tests (Playwright cannot download one
# here); docker-compose validates the compose file offline; npm installs the linter.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

bench: $(DEV)
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.overhead
	$(BIN)/python -m bench.reproduce
	$(BIN)/python -m bench.service
	$(BIN)/python -m bench.ray
	$(BIN)/python -m bench.ray_node_loss

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info node_modules
