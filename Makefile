# The two commands of the README's Quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the releases this project is built and tested with.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install test demo docs clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test,demo]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) -m archive_restore.demo

# docs/commands.md from the command line's own --help (a test fails when they disagree).
docs: install
	$(PY) -m archive_restore.cli.reference

clean:
	rm -rf $(VENV) build *.egg-info

# Everything that needs a GPU, in one run, into gpu-check.json (dev/gpu_check.py). On a machine
# without one: `make gpu-check DEVICE=cpu` runs the same parts at small sizes (CI does, so it cannot rot).
DEVICE ?= cuda
.PHONY: gpu-check
gpu-check: install
	$(PY) dev/gpu_check.py --device $(DEVICE) $(if $(filter cpu,$(DEVICE)),--dry --out gpu-check-cpu.json,)

# Mutation testing of the job core with mutmut (dev/mutate.py): one module after another, one mutant at
# a time, then the kill rate per module. Not part of `make test`: ~3,750 mutants, each running tests
# (a sample of 60 took 1-8 minutes here). MODULES="codes store" runs those only, `$(PY) dev/mutate.py
# --report` prints what has run so far.
MODULES ?=
.PHONY: mutate
mutate: install
	$(PY) -m pip install --quiet -e '.[mutate]'
	$(PY) dev/mutate.py $(MODULES)
