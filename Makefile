# Set-up and entry points. `make demo` and `make test` work on a fresh Debian machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo_out

.PHONY: setup demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	@if ! ldconfig -p | grep -q libusb-1.0; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libusb-1.0-0; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq libusb-1.0-0; fi; fi
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/kitti360-prep synth --out $(DEMO)/synthetic
	$(BIN)/kitti360-prep build --root $(DEMO)/synthetic/KITTI-360 --out $(DEMO)/prepared --workers 2
	$(BIN)/kitti360-prep stats $(DEMO)/prepared --plots $(DEMO)/prepared/plots
	$(BIN)/vggt-train run --config configs/train/demo.yaml --shards $(DEMO)/prepared --out $(DEMO)/run
	$(BIN)/vggt-eval $(DEMO)/run --shards $(DEMO)/prepared --device cpu \
		--seq-len 4 --seq-stride 4 --out $(DEMO)/run/eval
	@echo "report: $(DEMO)/run/eval/report.md"

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python scripts/bench_build.py

clean:
	rm -rf $(DEMO) .pytest_cache
