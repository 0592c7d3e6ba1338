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
	$(PY) -m pip install -q -c constraints.txt -e '.[torch,onnxruntime,tensorflow,tflite,mxnet,openvino,precision,tensorrt,real,html,test]'
	touch $(STAMP)

parity: $(STAMP)
	$(PY) -m pytest --parity --hypothesis-profile=ci -p no:randomly $(PARITY_ARGS)

test: $(STAMP)
	$(PY) -m pytest tests -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .parity-cache reports/*.json reports/*.html reports/failures .hypothesis
