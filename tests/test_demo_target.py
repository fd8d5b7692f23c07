"""`make demo` (read, not run: `make -n` prints its commands) seeds a month of traffic on an empty store, starts
the MLflow UI next to the web and the worker, and gives them its URL so that failing runs link to it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import REPO


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_seeds_traffic_and_starts_the_mlflow_ui_with_its_url_given_to_the_app():
    commands = subprocess.run(["make", "-n", "demo", "MLFLOW_PORT=5123", "PORT=8123"], cwd=REPO, capture_output=True,
                              text=True, timeout=60, check=True).stdout
    assert "seed_demo_traffic --if-empty" in commands
    assert "create_default_monitors" in commands
    assert "mine_gaps --days 30" in commands  # the gap report has something to show at once
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5123" in commands
    assert 'export MLFLOW_UI_URL="http://127.0.0.1:5123"' in commands  # before the web and the worker start
    assert commands.index("export MLFLOW_UI_URL") < commands.index("gunicorn intentsite.wsgi")
    assert "MLflow UI  http://127.0.0.1:5123" in commands and "export TOKEN=" in commands
