# The two commands a newcomer needs: `make demo` and `make test`. Both install first.
.PHONY: install demo test lint bench

install:
	./scripts/install.sh

demo: install
	.venv/bin/sentinel demo

# What loads both cores by itself (`solo`) runs first, alone, on a quiet machine: run in the
# minutes right after the other tests, the largest demo failed 4 times in 4 here (its fleet not
# scraped healthy in time), later 0 in 5. Then two workers, a test file each (a file's fixtures
# are shared by its tests).
test: install
	.venv/bin/ruff check sentinel tests bench dashboards
	.venv/bin/mypy sentinel
	.venv/bin/lint-imports
	.venv/bin/python -m pytest -q -p no:cacheprovider -m solo
	.venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile -m "not solo"

lint: install
	.venv/bin/ruff check sentinel tests bench dashboards
	.venv/bin/mypy sentinel
	.venv/bin/lint-imports

bench: install
	.venv/bin/python bench/detect_decide.py
	.venv/bin/python bench/cloud_view.py
	.venv/bin/python bench/list_decode.py
	.venv/bin/python bench/alerts.py
	.venv/bin/python bench/registry.py
	.venv/bin/python bench/anomaly.py
	.venv/bin/python bench/anomaly_real.py
	.venv/bin/python bench/rollout.py
	.venv/bin/python bench/startup.py
	.venv/bin/python bench/takeover.py
	.venv/bin/python bench/crash_to_l2.py
	.venv/bin/python bench/api_gil.py
	.venv/bin/python bench/central_store.py
	.venv/bin/python bench/fleet.py
