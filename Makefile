# Set-up and entry points.  Every target installs what it needs first.
PYTHON ?= python3
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: install data run test test-fast bench

install:
	$(PYTHON) -m pip install -q -e ".[test]"

# Debian's Fashion-MNIST (real data, no internet needed beyond the package mirror).
data:
	@if [ ! -d $(FASHION_DIR) ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist) || \
	  echo "warning: could not install dataset-fashion-mnist; tests that need it will fail"; \
	fi

run: install
	$(PYTHON) train/meta.py

# the whole suite (what CI runs), on two worker processes
test: install data
	TF_CPP_MIN_LOG_LEVEL=2 $(PYTHON) -m pytest -q -n 2 --dist loadfile tests

# the edit loop: no test marked slow or starting other processes
test-fast: install data
	TF_CPP_MIN_LOG_LEVEL=2 $(PYTHON) -m pytest -q -n 2 --dist loadfile -m "not slow and not process" tests

bench: install data
	$(PYTHON) benchmarks/inner_step.py
	$(PYTHON) benchmarks/data.py
	$(PYTHON) benchmarks/meta_step.py
	$(PYTHON) benchmarks/resume.py
	$(PYTHON) benchmarks/state_layout.py
	$(PYTHON) benchmarks/state_layout_step.py
