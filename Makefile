# Two commands on a fresh machine: `make demo` and `make test` (each sets up .venv first).
.PHONY: venv demo test bench clean
PY := .venv/bin/python

venv:
	@bash scripts/setup_env.sh

demo: venv
	@bash scripts/with_ros_env.sh .venv/bin/avsnet-launch --demo

test: venv
	@bash scripts/run_tests.sh

bench: venv
	@bash scripts/with_ros_env.sh $(PY) bench/run_all.py

clean:
	rm -rf build install log .pytest_cache
