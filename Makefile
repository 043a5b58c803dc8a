# Two entry points (README): `make demo` runs the main job on the built-in default, `make test` runs the tests.
# Both create ./.venv on first use (launch/setup_venv.sh) and reuse it afterwards.
PY := .venv/bin/python

.PHONY: setup demo demo-gpt-sovits2 roundtrip test test-fast lint bench
setup:
	@bash launch/setup_venv.sh

# the built-in recipe end to end: corpus, preparation, training, averaging, export, synthesis, evaluation, report
demo: setup
	bash launch/recipes/builtin.sh --size tiny --work out/demo --parallel_train

demo-gpt-sovits2: setup
	bash launch/recipes/builtin.sh --size tiny --family gpt_sovits2 --work out/demo-gpt-sovits2 --parallel_train

# conversion check: random HF Qwen2 -> Orbax -> parity against transformers -> back to HF, bit for bit
roundtrip: setup
	$(PY) -m sovits2_jax.demo.roundtrip --config=configs/qwen2.py:tiny --workdir=out/roundtrip

lint: setup
	$(PY) -m ruff check .

test: setup lint
	$(PY) -m pytest -q -n 2 --durations=25 tests

# unit tests only (no trained fixtures, no subprocess runs): the quick check while editing
test-fast: setup lint
	$(PY) -m pytest -q -n 2 --durations=10 tests/unit

# every ours-vs-PyTorch benchmark, one process each, into one dated table (out/bench/); BENCH_ARGS=--quick for tiny sizes
bench: setup
	$(PY) -m sovits2_jax.bench.suite $(BENCH_ARGS)
