# Two entry points: `make demo` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
QUICK  ?=
SEEDS  ?=
PRETRAIN ?=
PRETRAIN_MINUTES ?=
DISTIL_MINUTES   ?=

.PHONY: demo test install system-deps clean-demo

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP) system-deps

# espeak-ng and flite synthesise the offline corpus; install them from Debian when missing.
system-deps:
	@bash scripts/install_system_deps.sh

test: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) scripts/demo.py $(if $(QUICK),--quick,) $(if $(PRETRAIN),--pretrain,) \
		$(if $(SEEDS),--seeds $(SEEDS),) $(if $(PRETRAIN_MINUTES),--pretrain-minutes $(PRETRAIN_MINUTES),) \
		$(if $(DISTIL_MINUTES),--distil-minutes $(DISTIL_MINUTES),)

clean-demo:
	rm -rf data/mini_superb data/mini_superb_tiny results/demo results/demo_quick
