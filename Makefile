# BN Lab. Two commands matter: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install whenever pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format system-deps mnist bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

## make run: install into .venv and serve the dashboard at http://localhost:8000
run: $(STAMP)
	$(BIN)/bnlab serve --host $(HOST) --port $(PORT)

## make test: install (with dev extras and system test tools), lint, fetch MNIST, run every test
# Two pytest workers, a whole file each: most tests wait on servers, workers and the
# browser, so two files at once fit 2 cores; a file's fixtures (a Ray cluster, a
# browser) stay in one worker.
test: $(STAMP) system-deps lint mnist
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The tests read the real MNIST and never download it themselves: fetch it here,
# through the product's own loader (checksums, BNLAB_MIRRORS, progress bar), into
# the directory they read (BNLAB_DATA_DIR, else the per-user cache). CI has its
# copy beside the checkout and must never download: there it only verifies.
mnist: $(STAMP)
	$(BIN)/python -m bnlab.model.data $(if $(CI),--offline)

# The page's JavaScript linter (Biome, pinned in package.json and package-lock.json):
# installed by `npm ci` whenever the lock file is newer than what node_modules holds.
BIOME := node_modules/.bin/biome
$(BIOME): package.json package-lock.json | system-deps
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: $(STAMP) $(BIOME)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIOME) lint frontend/js

format: $(STAMP)
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

bench: $(STAMP)
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.overhead
	$(BIN)/python -m bench.reproduce
	$(BIN)/python -m bench.service
	$(BIN)/python -m bench.ray
	$(BIN)/python -m bench.ray_node_loss

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info node_modules
