# Two commands for a fresh machine: `make demo` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup fashion-mnist clean

$(BIN)/python:
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "curate needs Python >= 3.11"'
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[medical,dev]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/curate demo-data data/demo
	$(BIN)/curate run pipelines/demo.yaml --run-dir runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Fashion-MNIST from Debian's dataset-fashion-mnist package (70,000 images)
fashion-mnist: $(STAMP)
	@test -d /usr/share/datasets/fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)
	$(BIN)/curate run pipelines/fashion_mnist.yaml --run-dir runs/fashion_mnist

clean:
	rm -rf runs data
