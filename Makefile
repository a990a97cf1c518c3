# Two commands on a fresh machine: `make demo` and `make test`. pip alone, no apt, no torch.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED ?= ../shared
DEMO_OUT ?= demo-out

.PHONY: demo test lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	@# one OpenCV: a venv from before the switch to the headless build holds opencv-python, whose
	@# files overlap opencv-python-headless's; remove both (and scenedetect) so cv2 comes back whole
	@if $(PY) -m pip show -q opencv-python >/dev/null 2>&1; then \
	  $(PY) -m pip uninstall -y -q opencv-python opencv-python-headless scenedetect; fi
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check farm actors deploy cli tests bench
	$(VENV)/bin/mypy

test: $(STAMP) lint
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m bench.demo --media $(SHARED)/media --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
