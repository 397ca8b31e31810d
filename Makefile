# Two commands on a fresh machine: `make demo` and `make test` (each sets up .venv first).
.PHONY: venv demo test test-repeat bench clean
PY := .venv/bin/python

venv:
	@bash scripts/setup_env.sh

demo: venv
	@bash scripts/with_ros_env.sh .venv/bin/avsnet-launch --demo

test: venv
	@bash scripts/run_tests.sh

# The process-level node tests N times (LOAD=1: with a CPU-bound process beside them). Use before stopping.
N ?= 20
LOAD ?= 0
test-repeat: venv
	@bash scripts/test_repeat.sh $(N) $(LOAD)

bench: venv
	@bash scripts/with_ros_env.sh $(PY) bench/run_all.py

clean:
	rm -rf build install log .pytest_cache
