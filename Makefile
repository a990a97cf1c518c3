# Two commands on a fresh machine: `make demo` and `make test`. pip alone, no apt, no torch.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED ?= ../shared
DEMO_OUT ?= demo-out

# insightface 2.1 (the SCRFD, ArcFace and inswapper classes; code only, no weights) declares
# opencv-python and onnxruntime: installed with --no-deps so there stays one OpenCV (the headless
# one) and one onnxruntime. Its other needs (onnx, scipy, scikit-image, requests) are ours too.
INSIGHTFACE := insightface==2.1

.PHONY: demo test lint setup setup-gpu clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	@# one OpenCV: a venv from before the switch to the headless build holds opencv-python, whose
	@# files overlap opencv-python-headless's; remove both (and scenedetect) so cv2 comes back whole
	@if $(PY) -m pip show -q opencv-python >/dev/null 2>&1; then \
	  $(PY) -m pip uninstall -y -q opencv-python opencv-python-headless scenedetect; fi
	@# Bytecode is compiled here, at install: with PYTHONDONTWRITEBYTECODE set (as on these
	@# machines) nothing is written at import time, and every Ray worker would recompile.
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps $(INSIGHTFACE)
	touch $(STAMP)

# The GPU build of onnxruntime in place of the CPU one: both own the same files, so remove both
# and reinstall the GPU build alone (pip then reports onnxruntime as missing; that is expected).
setup-gpu: $(STAMP)
	$(PY) -m pip uninstall -y -q onnxruntime onnxruntime-gpu
	$(PY) -m pip install --quiet --no-deps "onnxruntime-gpu>=1.20"
	$(PY) -c "import onnxruntime as ort; print('onnxruntime', ort.__version__, ort.get_available_providers())"

lint: $(STAMP)
	$(VENV)/bin/ruff check farm actors deploy cli tests bench
	$(VENV)/bin/mypy

test: $(STAMP) lint
	$(PY) -m pytest -q --durations=30

demo: $(STAMP)
	$(PY) -m bench.demo --media $(SHARED)/media --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
