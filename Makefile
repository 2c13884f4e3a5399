# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet -c constraints.txt
# The generators' wheels declare heavy, wrong dependencies (wandb, a CUDA torch): --no-deps.
WEIGHTS := generateme==0.1.2 gan_face_generate==1.1.1 omniart_eye_generator==0.1
# Landmark models for the ROIR benchmark's region masks: MediaPipe 0.10.21 is the last release that
# bundles its models (it declares numpy<2 but runs with numpy 2); facenet-pytorch only for onet.pt.
LANDMARKS := mediapipe==0.10.21 facenet-pytorch==2.6.0
LANDMARK_DEPS := absl-py attrs flatbuffers "protobuf>=4.25.3,<5" opencv-python-headless matplotlib

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) $(LANDMARK_DEPS)
	$(PIP) -e ".[test]"
	@# last, and without dependency resolution: pip then does not list the wheels' unwanted requirements as errors
	$(PIP) --no-deps $(WEIGHTS) $(LANDMARKS)
	touch $@

demo: install
	$(VENV)/bin/panda demo --out out/demo

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/fit_speed.py

clean:
	rm -rf $(VENV) out .pytest_cache
