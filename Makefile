# rednet-deploy — the user's interface. Every target is a thin wrapper over the `rednet-deploy` CLI or a build tool.
PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
CLI      := $(VENV)/bin/rednet-deploy
BUILD    ?= build
MODEL    ?= rednet50
PRECISION ?= fp32
DYNAMIC  ?= batch
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
# TensorRT headers (10.x or 11.x) for the plugin; a git-ignored third_party/ copy is used when present.
TENSORRT_INCLUDE_DIR ?= $(firstword $(wildcard third_party/tensorrt/include) $(wildcard /usr/include/x86_64-linux-gnu/NvInfer.h))
ORT_HEADERS_DIR := $(BUILD)/third_party/onnxruntime

.PHONY: help setup test export plugins engine parity bench bench-serve serve triton-repo asan-test gpu-check clean

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

test: $(VENV)/.installed  ## run the whole test suite (pytest, then the sanitizer run of the native op)
	$(PY) -m pytest -q
	@$(MAKE) --no-print-directory asan-test

export: $(VENV)/.installed  ## MODEL= [CHECKPOINT=] [OUT=] [PRECISION=fp32|fp16] [DYNAMIC=batch|all] [OPSET=] [INLINE=1]
	$(CLI) export $(MODEL) --precision $(PRECISION) --dynamic $(DYNAMIC) \
	  $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(if $(OUT),--out $(OUT)) $(if $(OPSET),--opset $(OPSET)) \
	  $(if $(INLINE),--inline-function)

plugins:  ## build the native libraries the toolchain allows (ONNX Runtime ops, CUDA kernels, TensorRT plugin)
	@mkdir -p $(BUILD); ort_root=$$(plugins/cmake/fetch_onnxruntime_headers.sh $(ORT_HEADERS_DIR)) || ort_root=; \
	torch_prefix=$$($(PY) -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null) || torch_prefix=; \
	cmake -S plugins -B $(BUILD)/plugins -DONNXRUNTIME_ROOT="$$ort_root" -DCMAKE_PREFIX_PATH="$$torch_prefix" \
	  $(if $(TENSORRT_INCLUDE_DIR),-DTENSORRT_INCLUDE_DIR=$(abspath $(TENSORRT_INCLUDE_DIR))) > $(BUILD)/cmake.log \
	  || { cat $(BUILD)/cmake.log; exit 1; }; grep '^-- rednet:' $(BUILD)/cmake.log
	cmake --build $(BUILD)/plugins -j $(JOBS)
	$(BUILD)/plugins/involution_cpu_sweep
	@if [ -x $(BUILD)/plugins/involution_trt_plugin_test ]; then $(BUILD)/plugins/involution_trt_plugin_test; fi

engine: $(VENV)/.installed  ## MODEL= [ONNX=] [PRECISION=] [MIN_BATCH=1 OPT_BATCH=8 MAX_BATCH=32] [OUT=]: TensorRT plan + sidecar
	$(CLI) engine $(MODEL) --precision $(PRECISION) --min-batch $(or $(MIN_BATCH),1) --opt-batch $(or $(OPT_BATCH),8) \
	  --max-batch $(or $(MAX_BATCH),32) $(if $(ONNX),--onnx $(ONNX)) $(if $(OUT),--out $(OUT))

parity: $(VENV)/.installed  ## MODEL= [CHECKPOINT=] [PRECISION=] [ONNX=]: PyTorch vs every backend present, table + JSON
	$(CLI) parity $(MODEL) --precision $(PRECISION) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(if $(ONNX),--onnx $(ONNX))

bench: $(VENV)/.installed  ## [THREADS=2]: op + model benchmarks on ONNX Runtime CPU -> bench/results/ort_cpu.{json,png}
	$(CLI) bench --threads $(or $(THREADS),2)

serve: $(VENV)/.installed  ## MODEL= [BACKEND=onnxruntime|tensorrt] [PORT=8000] [MAX_BATCH=] [MAX_DELAY_MS=] [HOST=] [TOKEN=]
	$(CLI) serve $(MODEL) --backend $(or $(BACKEND),onnxruntime) --port $(or $(PORT),8000) \
	  $(if $(MAX_BATCH),--max-batch $(MAX_BATCH)) $(if $(MAX_DELAY_MS),--max-delay-ms $(MAX_DELAY_MS)) \
	  $(if $(HOST),--host $(HOST)) $(if $(TOKEN),--token $(TOKEN)) $(if $(ONNX),--onnx $(ONNX)) $(if $(ENGINE),--engine $(ENGINE))

triton-repo: $(VENV)/.installed  ## MODEL= ENGINE= [ONNX=] [OUT=artifacts/triton]: Triton model repository on an engine
	$(CLI) triton-repo $(MODEL) --engine $(ENGINE) $(if $(ONNX),--onnx $(ONNX)) $(if $(OUT),--out $(OUT))

bench-serve: $(VENV)/.installed  ## [THREADS=2]: service throughput/latency vs concurrency, batching on/off -> bench/results/serve_cpu.{json,png}
	$(CLI) bench serve --threads $(or $(THREADS),2)

asan-test: $(VENV)/.installed  ## AddressSanitizer + UBSan build; runs the C++ sweep and the ONNX Runtime op sweep
	@mkdir -p $(BUILD); ort_root=$$(plugins/cmake/fetch_onnxruntime_headers.sh $(ORT_HEADERS_DIR)); \
	cmake -S plugins -B $(BUILD)/asan -DREDNET_SANITIZE=ON -DREDNET_CUDA=OFF -DREDNET_TORCH=OFF -DCMAKE_BUILD_TYPE=Debug \
	  -DONNXRUNTIME_ROOT="$$ort_root" > $(BUILD)/asan-cmake.log || { cat $(BUILD)/asan-cmake.log; exit 1; }
	cmake --build $(BUILD)/asan -j $(JOBS)
	$(BUILD)/asan/involution_cpu_sweep
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  REDNET_ORT_OPS_LIB=$(BUILD)/asan/librednet_ort_ops.so $(PY) -m pytest -q -p no:cacheprovider tests/test_op_backends.py

gpu-check:  ## on a GPU machine: build CUDA kernel + plugin there, GPU parity + plugin enqueue + benchmarks -> JSON
	@nvidia-smi -L > /dev/null 2>&1 || { echo "gpu-check: no NVIDIA GPU here (nvidia-smi failed); run it on a GPU machine" >&2; exit 3; }
	@mkdir -p $(BUILD)/gpu
	cmake -S plugins -B $(BUILD)/gpu -DCMAKE_CUDA_ARCHITECTURES=native \
	  $(if $(TENSORRT_INCLUDE_DIR),-DTENSORRT_INCLUDE_DIR=$(abspath $(TENSORRT_INCLUDE_DIR))) > $(BUILD)/gpu/cmake.log \
	  || { cat $(BUILD)/gpu/cmake.log; exit 1; }; grep '^-- rednet:' $(BUILD)/gpu/cmake.log
	cmake --build $(BUILD)/gpu -j $(JOBS)
	$(BUILD)/gpu/involution_cpu_sweep
	@if [ -x $(BUILD)/gpu/involution_trt_plugin_test ]; then $(BUILD)/gpu/involution_trt_plugin_test; fi
	PYTHONPATH=$(CURDIR) $(or $(GPU_PYTHON),python3) -m deploy.gpu_check --build $(BUILD)/gpu --out bench/results/gpu_check.json

clean:  ## remove build outputs (keeps .venv)
	rm -rf $(BUILD) artifacts
