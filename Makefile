# Two commands on a fresh machine (each does its own set-up):
#   make quickstart   run the main job: a whole RLHF round on the embedded defaults
#   make test         run the test suite
.PHONY: quickstart smollm2-round test test-fast test-real bootstrap system-deps lint

VENV ?= .venv
PY := $(VENV)/bin/python

bootstrap:
	@scripts/bootstrap.sh

# Debian packages the labeling service and browser tests use (skipped when present).
system-deps:
	@scripts/system-deps.sh

quickstart: bootstrap system-deps
	$(VENV)/bin/rlhf pipeline configs/quickstart.yaml

# The same round on the real SmolLM2-135M-Instruct model (fetched once); about an hour on 2 CPU cores.
smollm2-round: bootstrap system-deps
	@scripts/fetch-smollm2.sh >/dev/null
	$(VENV)/bin/rlhf pipeline configs/smollm2/round.yaml

test: bootstrap system-deps
	$(PY) -m pytest -q

test-fast: bootstrap
	$(PY) -m pytest -q -m "not slow and not real"

# The tier on the real SmolLM2-135M-Instruct model (part of make test too).
test-real: bootstrap
	$(PY) -m pytest -q -m real

lint: bootstrap
	$(VENV)/bin/ruff check rlhf tests
