# Two entry points for a newcomer; each builds its own virtual environment on first use.
#   make demo  - forecast the bundled sample series with the bundled model and its defaults: median and
#                10-90 % bands from 64 sample paths (CSV + PNG in out/)
#   make test  - the full test suite, with the PyTorch reference for parity tests
PYTHON ?= python3
# pip compiles bytecode on one core (torch's install: 44 s, 13 s without); the test environment compiles it
# afterwards on every core instead, so that the test processes do not each compile what they import.
PIP_INSTALL = pip install -q --no-compile

.PHONY: demo test clean

demo: .venv-demo/.installed
	mkdir -p out
	.venv-demo/bin/toto-jax forecast --input toto_jax/assets/sample_nab_cpu.csv --horizon 96 \
		--output out/forecast.csv --plot out/forecast.png --overwrite

# One worker per core; a test file stays on one worker, so its compiled programs and fixtures are shared.
test: .venv-test/.installed .venv-test/pandas3/.installed
	.venv-test/bin/python -m pytest -q -n auto --dist loadfile --durations=20

.venv-demo/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-demo
	.venv-demo/bin/$(PIP_INSTALL) --upgrade pip
	.venv-demo/bin/$(PIP_INSTALL) -e .
	touch $@

# toto-ts pins versions that do not install here, and toto-2 (the Toto 2.0 reference) declares Python >= 3.12
# though it runs on 3.11: both go in without their dependencies, which the `test` extra lists itself.
.venv-test/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-test
	.venv-test/bin/$(PIP_INSTALL) --upgrade pip
	.venv-test/bin/$(PIP_INSTALL) torch==2.13.0
	.venv-test/bin/$(PIP_INSTALL) -e '.[test]'
	.venv-test/bin/$(PIP_INSTALL) --no-deps toto-ts==0.2.0
	.venv-test/bin/$(PIP_INSTALL) --no-deps --ignore-requires-python toto-2==2.0.0 dd-unit-scaling==0.1.0
	.venv-test/bin/python -c "import compileall, sys; compileall.compile_dir(sys.prefix + '/lib', quiet=2, workers=0)"
	touch $@

# The test extra pins pandas 2 (gluonts, statsforecast); pandas 3 goes beside it, without dependencies, for
# tests/test_tabular.py's pandas-3 subprocess (PYTHONPATH=.venv-test/pandas3). Rebuilt with the venv.
.venv-test/pandas3/.installed: .venv-test/.installed
	rm -rf .venv-test/pandas3
	.venv-test/bin/$(PIP_INSTALL) --no-deps --target .venv-test/pandas3 'pandas>=3,<4'
	touch $@

clean:
	rm -rf .venv-demo .venv-test out
