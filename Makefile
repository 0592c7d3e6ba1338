# Two commands do everything on a fresh machine:
#   make parity   set up .venv, run the parity matrix on every available device
#   make test     set up .venv, run the harness's own tests
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PARITY_ARGS ?=
# Runs with a bytecode cache outside the sources, for every process it starts. Where
# PYTHONDONTWRITEBYTECODE is set (this machine and its CI set it), every process (pytest, each
# xdist worker, each isolation worker, each pytest a test starts) compiled the harness again, and
# hypothesis too: pytest rewrites the asserts of every module of a plugin's package, and caches the
# result only as bytecode. That was 1.0 s of a 3.4 s one-case run (docs/reference/benchmarks.md). Not for
# the install: pip's own compiled files stay in the venv.
RUN := env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(CURDIR)/.pycache $(PY)

.PHONY: install parity test test-slow bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Every extra pyproject.toml declares (a new backend's extra needs no line here).
	$(PY) -m pip install -q -c constraints.txt -e ".[$$($(PY) -c 'import tomllib; print(",".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]))')]"
	# onnx2tf imports tf_keras, whose one requirement is `tensorflow`: pip would add that second
	# TensorFlow beside tensorflow-cpu. Installed without it; tensorflow-cpu 2.21 is what it runs on.
	$(PY) -m pip install -q --no-deps tf_keras==2.21.0
	touch $(STAMP)

# Every core (pytest-xdist, one worker per core; worker isolation holds under it): on 2 cores the
# core matrix took 0.63x the wall time of one process cold, 0.83x warm (docs/reference/benchmarks.md).
# PARITY_ARGS="-n 0" runs it in one process.
parity: $(STAMP)
	$(RUN) -m pytest --parity --hypothesis-profile=ci -p no:randomly -n auto $(PARITY_ARGS)

# The fast gate (under 10 minutes on 2 cores); the tests marked slow (real networks, whole
# matrices, reruns, time limits) run in test-slow, which CI runs after it.
test: $(STAMP)
	$(RUN) -m pytest tests -q -n 2 --dist worksteal -m "not slow"

test-slow: $(STAMP)
	$(RUN) -m pytest tests -q -n 2 --dist worksteal -m slow

bench: $(STAMP)
	$(RUN) benchmarks/run.py

clean:
	rm -rf $(VENV) .pycache .parity-cache reports/*.json reports/*.html reports/failures .hypothesis
