# Two commands a newcomer needs: `make demo` (the notebooks on the built-in synthetic set) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .  # the engine and its neighbours, importable by name (pyproject.toml)
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py $(DEMO_FLAGS)

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf data/synthetic models/*.pt models/*.pth runs
