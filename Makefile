# intentsite: `make demo` runs the service, `make test` runs the suite. Both install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
PORT   ?= 8000
# Test processes (pytest-xdist): the suite waits on workers and servers a lot, so two share 2 cores well.
TEST_WORKERS ?= 2
MLFLOW_PORT ?= 5000
# Failing runs in the analytics link to this MLflow UI (make demo starts one here).
MLFLOW_UI_URL ?= http://127.0.0.1:$(MLFLOW_PORT)

export LITELLM_LOCAL_MODEL_COST_MAP := True
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: install demo test lint bench soak screenshot clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

# A random SECRET_KEY for this checkout, made once (settings read it when SECRET_KEY is not set).
var/secret_key:
	@mkdir -p var
	@umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(50))" > $@

install: $(STAMP) var/secret_key

demo: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py mlflow_init
	$(BIN)/python manage.py collectstatic --noinput -v 0
	$(BIN)/python manage.py load_intent_catalog
	@user=$$($(BIN)/python manage.py create_demo_user) && echo "$$user" && \
	$(BIN)/python manage.py seed_demo_traffic --if-empty && \
	$(BIN)/python manage.py create_default_monitors && \
	$(BIN)/python manage.py create_default_boards && \
	$(BIN)/python manage.py mine_gaps --days 30 && \
	$(BIN)/python manage.py sync_prompt_registry && \
	echo "" && \
	echo "  API        http://127.0.0.1:$(PORT)/api/intent/detect   (docs: http://127.0.0.1:$(PORT)/api/docs/)" && \
	echo "  Admin      http://127.0.0.1:$(PORT)/admin/   (Detection analytics: a month of demo traffic)" && \
	echo "  MLflow UI  $(MLFLOW_UI_URL)   (ready ~30 s after the rest)" && \
	echo "             runs: MLflow UI → Model training (top left) → Experiments → intent_detection → Runs" && \
	echo "             (MLflow 3 opens on its GenAI pages; failing runs in the analytics link to theirs)" && \
	echo "  Try it     export TOKEN=$$(echo "$$user" | sed -n 's/^API token: //p')" && \
	echo "             curl -s -H \"Authorization: Token \$$TOKEN\" -H 'Content-Type: application/json' \\" && \
	echo "               -d '{\"message\": \"move 100 dollars to savings\"}' http://127.0.0.1:$(PORT)/api/intent/detect" && \
	echo "  Stop       Ctrl-C" && \
	echo ""
	@bash -c 'trap "kill 0" EXIT; export MLFLOW_UI_URL="$(MLFLOW_UI_URL)"; \
		MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1 & \
		$(BIN)/celery -A intentsite worker --beat --loglevel INFO --concurrency 2 & \
		$(BIN)/gunicorn intentsite.wsgi --bind 0.0.0.0:$(PORT) --workers 2 --threads 4 --access-logfile - ; '

test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/local_model.py

# The distributed profile (PostgreSQL, its own Redis, mlflow server, gunicorn, workers, beat) under steady load and
# four faults; exits non-zero on any lost or duplicated run. SOAK_ARGS="--short" is the ~3-minute CI version.
soak: install
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# docs/dashboard.png (the admin's "Detection analytics" page, filtered, two prompt versions compared) and
# docs/board.png (a custom board), over a demo-like month, in headless Chromium.
screenshot: install
	DASHBOARD_SCREENSHOT=docs/dashboard.png BOARD_SCREENSHOT=docs/board.png \
		$(BIN)/python -m pytest -q tests/analytics/test_dashboard.py -k screenshot

clean:
	rm -rf $(VENV) var db.sqlite3 mlflow.db mlruns
