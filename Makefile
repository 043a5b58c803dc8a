# Two entry points (README): `make demo` runs the main job on the built-in default, `make test` runs the tests.
# Both create ./.venv on first use (launch/setup_venv.sh) and reuse it afterwards.
PY := .venv/bin/python

.PHONY: setup demo test lint bench
setup:
	@bash launch/setup_venv.sh

demo: setup
	$(PY) -m sovits2_jax.demo --config=configs/qwen2.py:tiny --workdir=out/demo

lint: setup
	$(PY) -m ruff check .

test: setup lint
	$(PY) -m pytest -q -n 2 --durations=25 tests

bench: setup
	$(PY) -m sovits2_jax.bench.qwen2
