# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
DEMO := out/demo
TEST_WORKERS ?= 2  # pytest-xdist workers, one test file each at a time: CLI calls and Ray waits overlap on 2 cores
FORMATS = $(shell $(BIN)/resnet-edge formats --cpu --names)  # every format whose runtime runs on a CPU (the registry's rows)

.PHONY: install demo test test-fast bench bench-scale lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps "pnnx>=20250503"  # NCNN's converter binary; its metadata asks for torch, unneeded
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	@mkdir -p $(DEMO)
	$(BIN)/resnet-edge train --model resnet18 --data digits --input-size 32 --epochs 5 --out $(DEMO)/resnet18_digits.keras
	$(BIN)/resnet-edge info $(DEMO)/resnet18_digits.keras
	$(BIN)/resnet-edge export $(DEMO)/resnet18_digits.keras --format $(FORMATS) --calib-data digits --out $(DEMO)
	$(BIN)/python tools/digits_samples.py $(DEMO)/samples --count 8
	$(BIN)/resnet-edge predict $(DEMO)/resnet18_digits_int8.tflite $(DEMO)/samples --top-k 3
	$(BIN)/resnet-edge optimize $(DEMO)/resnet18_digits.keras --formats $(FORMATS) --max-drop 1 --out $(DEMO)/optimized

test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

bench: install
	$(BIN)/python benchmarks/run.py --out benchmarks/results

bench-scale: install
	$(BIN)/python benchmarks/scale.py --out benchmarks/results

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf out .pytest_cache .ruff_cache
