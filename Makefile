# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch; on a machine with an NVIDIA GPU the plain requirement is used instead.
TORCH_CPU ?= torch==2.13.0

.PHONY: demo test bench lint format clean venv

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	  echo "GPU found: installing the default torch build"; \
	else \
	  echo "No GPU: installing the CPU build of torch ($(TORCH_CPU))"; \
	  $(PIP) install --quiet "$(TORCH_CPU)"; \
	fi
	$(PIP) install --quiet -e ".[dev,ray]"
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) evaluate.py

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: venv
	$(PY) -m bench

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
