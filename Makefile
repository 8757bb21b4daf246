# rednet-deploy — the user's interface. Every target is a thin wrapper over the `rednet-deploy` CLI or a build tool.
PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
CLI      := $(VENV)/bin/rednet-deploy
BUILD    ?= build
MODEL    ?= rednet50
PRECISION ?= fp32
DYNAMIC  ?= batch

.PHONY: help setup test export plugins clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

setup: $(VENV)/.installed  ## create .venv, install pinned dependencies, build native libraries where possible
	@$(MAKE) --no-print-directory plugins

test: $(VENV)/.installed  ## run the whole test suite
	$(PY) -m pytest -q

export: $(VENV)/.installed  ## MODEL= [CHECKPOINT=] [OUT=] [PRECISION=fp32|fp16] [DYNAMIC=batch|all] [OPSET=]
	$(CLI) export $(MODEL) --precision $(PRECISION) --dynamic $(DYNAMIC) \
	  $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(if $(OUT),--out $(OUT)) $(if $(OPSET),--opset $(OPSET))

plugins:  ## build the native libraries (ONNX Runtime custom ops, CUDA kernels, TensorRT plugin) that the toolchain allows
	@echo "plugins: no native libraries yet"

clean:  ## remove build outputs (keeps .venv)
	rm -rf $(BUILD) artifacts
