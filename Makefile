# Two commands for a fresh machine: `make demo` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup sysdeps fashion-mnist hard-negatives medical-reduce adainf-cpu bench-imagededup clean
FMNIST := /usr/share/datasets/fashion-mnist

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

# Debian's Fashion-MNIST package (IDX files) for the Fashion-MNIST pipelines and tests; best effort
sysdeps:
	@test -d $(FMNIST) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) || \
	  echo "note: dataset-fashion-mnist not installed; Fashion-MNIST tests will be skipped"; }

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q

# Fashion-MNIST from Debian's dataset-fashion-mnist package (70,000 images)
fashion-mnist: $(STAMP) sysdeps
	$(BIN)/curate run pipelines/fashion_mnist.yaml

hard-negatives: $(STAMP) sysdeps
	$(BIN)/curate run pipelines/hard_negatives.yaml

medical-reduce: $(STAMP)
	$(BIN)/curate demo-data data/demo
	$(BIN)/curate run pipelines/medical_reduce.yaml

# the AdaInf pipeline at a CPU-sized budget (the YAML is sized for one GPU)
adainf-cpu: $(STAMP) sysdeps
	$(BIN)/curate run pipelines/adainf_inflate.yaml --run-dir runs/adainf_cpu \
	  --set inflate_train.steps=300 --set inflate_generate.n_images=2000 --set inflate_generate.steps=20

# imagededup's own PHash on dedup_quality.py's files: it needs torchvision and torch 2.14, so its own venv
bench-imagededup: $(STAMP) sysdeps
	test -x .venv-imagededup/bin/python || ($(PY) -m venv .venv-imagededup && \
	  .venv-imagededup/bin/pip install -q torch==2.14.1 torchvision==0.29.1 imagededup==0.3.3.post2)
	$(BIN)/python benchmarks/dedup_quality.py --texts 200 --export /tmp/curate_dq_files
	.venv-imagededup/bin/python benchmarks/imagededup_baseline.py /tmp/curate_dq_files

clean:
	rm -rf runs data
