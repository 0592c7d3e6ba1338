# Two commands do everything on a fresh machine:
#   make parity   set up .venv, run the parity matrix on every available device
#   make test     set up .venv, run the harness's own tests
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PARITY_ARGS ?=

.PHONY: install parity test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[torch,onnxruntime,tensorflow,tflite,mxnet,openvino,mnn,ncnn,onnx2tf,precision,tensorrt,real,html,test]'
	# onnx2tf imports tf_keras, whose one requirement is `tensorflow`: pip would add that second
	# TensorFlow beside tensorflow-cpu. Installed without it; tensorflow-cpu 2.21 is what it runs on.
	$(PY) -m pip install -q --no-deps tf_keras==2.21.0
	touch $(STAMP)

# Every core (pytest-xdist, one worker per core; worker isolation holds under it): on 2 cores the
# core matrix took 0.63x the wall time of one process cold, 0.83x warm (README, Benchmarks).
# PARITY_ARGS="-n 0" runs it in one process.
parity: $(STAMP)
	$(PY) -m pytest --parity --hypothesis-profile=ci -p no:randomly -n auto $(PARITY_ARGS)

test: $(STAMP)
	$(PY) -m pytest tests -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .parity-cache reports/*.json reports/*.html reports/failures .hypothesis
