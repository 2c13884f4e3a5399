# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet -c constraints.txt
# The generators' wheels declare heavy, wrong dependencies (wandb, a CUDA torch): --no-deps.
WEIGHTS := generateme==0.1.2 gan_face_generate==1.1.1 omniart_eye_generator==0.1

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) --no-deps $(WEIGHTS)
	$(PIP) -e ".[test]"
	touch $@

demo: install
	$(VENV)/bin/panda demo --out out/demo

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/fit_speed.py

clean:
	rm -rf $(VENV) out .pytest_cache
