# The two commands of the README: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0

.PHONY: venv install quickstart browser test bench evaluate shop-trial reliability clean

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

# The browser test drives Debian's Chromium; without root or apt it is skipped, with the reason.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null) \
	  || echo "Chromium could not be installed: the browser test will be skipped"; \
	else echo "no Chromium and no root apt-get: the browser test will be skipped"; fi

test: install browser
	$(VENV)/bin/pytest -q

# Benchmarks on a quiet machine (issue 8), then the table bench/README.md: about 10.5 minutes on 2 cores
# (12 the first time: the bert-base folder, its ONNX export and int8 check; `make quickstart` first). QUICK=1: small sizes, mostly the
# quickstart model, about 2 minutes, into bench/results/quick/.
bench: BENCH_OUT = bench/results$(if $(QUICK),/quick)
bench: install
	$(PY) bench/model_speed.py $(if $(QUICK),--quick --models quickstart) --out $(BENCH_OUT)/model.json
	$(PY) bench/padding.py $(if $(QUICK),--quick) --out $(BENCH_OUT)/padding.json
	$(PY) bench/train_speed.py $(if $(QUICK),--quick) --out $(BENCH_OUT)/train.json
	$(PY) bench/scaling.py $(if $(QUICK),--quick) --out $(BENCH_OUT)/scaling.json
	$(PY) bench/server_load.py $(if $(QUICK),--quick) --out $(BENCH_OUT)/server.json
	$(PY) bench/table.py --results $(BENCH_OUT) --out $(if $(QUICK),$(BENCH_OUT)/README.md,bench/README.md)

# How well the models label chats (dev, held-out, long and Traditional probes, corpus validation), each beside
# the character n-gram baseline trained on the same corpus: bench/results/quality.json and examples.txt; and how
# often they raise alarms on real chats (CSDS, STC-3): bench/results/false_alarms.json.
# `make quickstart` first; the longer recipe (configs/extended.yaml) is measured too when runs/extended/model exists.
evaluate: install
	$(PY) bench/quality.py --model quickstart=runs/quickstart/model $(if $(wildcard runs/extended/model),--model extended=runs/extended/model)
	$(PY) bench/examples.py --model runs/quickstart/model
	$(if $(wildcard ../shared/data/csds),$(PY) bench/false_alarms.py --model quickstart=runs/quickstart/model,@echo "no ../shared/data/csds: false alarms on real chats not measured")

# "Tune to your shop" end to end (README): CSDS val as the shop's chats, CSDS test as its traffic; trains
# runs/shop-trial/model (about 8 minutes) and writes bench/results/shop_trial.json. Needs ../shared/data/csds.
shop-trial: install
	$(PY) bench/shop_trial.py --alert-rate 0.005

# The slow checks (20 s of overload against `zhijian serve` with the tiny test model, in a temporary folder),
# then the same burst against the quickstart model into bench/results/overload.json (`make quickstart` first).
reliability: install
	$(VENV)/bin/pytest -q -m slow
	$(if $(wildcard runs/quickstart/model),$(PY) bench/overload.py --model runs/quickstart/model,@echo "no runs/quickstart/model: bench/results/overload.json not written")

clean:
	rm -rf runs .pytest_cache
