# The two commands of the README: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0

.PHONY: venv install quickstart test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first: the CPU build lies on local disk; a bare `torch` would pull a multi-GB CUDA build.
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/zhijian data build --out data/corpus --seed 0
	$(VENV)/bin/zhijian train -c configs/quickstart.yaml
	$(VENV)/bin/zhijian score data/examples/refund.txt --model runs/quickstart/model

test: install
	$(VENV)/bin/pytest -q

clean:
	rm -rf runs .pytest_cache
