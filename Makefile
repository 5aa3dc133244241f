# Two entry points: `make run` (the main job) and `make test`. Each installs what it needs on first use:
# the Debian dataset package, a virtual environment, and the pinned CPU build of torch.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: run test deps clean bench sim-examples

run: $(STAMP) $(FMNIST)
	$(VENV)/bin/nitisim run

test: $(STAMP) $(FMNIST)
	$(PY) -m pytest -q -n 2

deps: $(STAMP) $(FMNIST)

$(FMNIST):
	@command -v apt-get >/dev/null || { echo "need apt-get to install dataset-fashion-mnist"; exit 2; }
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist

$(STAMP): pyproject.toml
	@[ -d $(VENV) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch lies on these machines' disk; a bare `torch` would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

bench: $(STAMP) $(FMNIST)
	$(PY) benchmarks/kernels.py && $(PY) benchmarks/simulator.py && $(PY) benchmarks/accuracy.py

# The simulator's report.md for every shipped accelerator on lenet and vgg-small-7 (docs/simulations/).
sim-examples: $(STAMP)
	mkdir -p docs/simulations
	for arch in configs/accelerators/*.yaml; do for model in lenet vgg-small-7; do \
	  name=$$(basename $$arch .yaml)-$$model; \
	  $(VENV)/bin/nitisim simulate $$arch --model $$model --batch 256 --out build/sim/$$name >/dev/null && \
	  cp build/sim/$$name/report.md docs/simulations/$$name.md || exit 1; done; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache nitisim-out
