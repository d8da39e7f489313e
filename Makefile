# The two commands a new user runs: `make quickstart` and `make test`.
# Both create .venv and install the project (CPU JAX) on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The [torch] extra: only tests/test_convert.py needs it (it skips without, except
# under CI=true). About a minute and 5.5 GB from this machine's local wheels.
$(VENV)/.torch-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test,torch]'
	touch $@

install-torch: $(VENV)/.torch-installed

quickstart: $(VENV)/.installed
	$(PY) -m cnn_arch.main --config=configs/quickstart.py --workdir=runs/quickstart

# Two workers, one test file each at a time: most of a test's time is single-threaded
# XLA compilation, so two share the 2-core CI machines well; loadfile keeps a file's
# module fixtures (trained workdirs) in one process.
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile

# The torchvision-equality cases that `make test` leaves out: with it, every converted
# model in every mode (eval 224, eval 199x257, train). CI runs both.
test-convert-slow: $(VENV)/.torch-installed
	CI=true $(PY) -m pytest -q -m slow tests/test_convert.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

.PHONY: install install-torch quickstart test test-convert-slow lint
