# Set-up and entry points. `make demo` and `make test` work on a fresh Debian machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo_out

.PHONY: setup demo test lint bench bench-gpu clean

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
	$(BIN)/vggt-train run --config configs/train/demo.yaml --shards $(DEMO)/prepared --out $(DEMO)/run --overwrite
	$(BIN)/vggt-eval $(DEMO)/run --shards $(DEMO)/prepared --device cpu \
		--seq-len 4 --seq-stride 4 --out $(DEMO)/run/eval
	@echo "report: $(DEMO)/run/eval/report.md"
	rm -rf $(DEMO)/frames && mkdir -p $(DEMO)/frames
	cp $$(ls $(DEMO)/synthetic/KITTI-360/data_2d_raw/2013_05_28_drive_0002_sync/image_00/data_rect/*.png | head -n 10) $(DEMO)/frames/
	# known KITTI-360 camera-0 intrinsics: the demo's briefly trained tiny model predicts no usable field of view
	$(BIN)/vggt-infer $(DEMO)/run --images $(DEMO)/frames --out $(DEMO)/infer --force --device cpu \
		--seq-len 6 --stride 4 --intrinsics 552.554261,552.554261,682.049453,238.769549
	$(BIN)/python scripts/infer_figure.py $(DEMO)/infer --out $(DEMO)/infer/overview.png
	@echo "point cloud: $(DEMO)/infer/points.ply (overview picture: $(DEMO)/infer/overview.png)"

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python scripts/bench_build.py

clean:
	rm -rf $(DEMO) .pytest_cache

bench-gpu: setup
	$(BIN)/python scripts/bench_gpu.py --json bench_gpu.json
