"""Settings that refuse to run insecurely: no SECRET_KEY outside DEBUG stops the process; the documented production
variables pass `check --deploy` with no warning."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

PRODUCTION = {"SECRET_KEY": "x7Gq2-production-key-" + "k" * 40 + "-9dWm", "DEBUG": "0", "SECURE_SSL_REDIRECT": "1",
              "SECURE_PROXY_SSL_HEADER": "1", "SECURE_HSTS_SECONDS": "31536000", "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
              "SECURE_HSTS_PRELOAD": "1", "SECURE_COOKIES": "1", "ALLOWED_HOSTS": "intents.example.com"}


def manage(*args: str, tmp_path, **env: str) -> subprocess.CompletedProcess:
    environment = {name: value for name, value in os.environ.items() if name not in ("SECRET_KEY", "DEBUG")}
    environment.update({"SECRET_KEY_FILE": str(tmp_path / "no-such-file"), "INTENTSITE_VAR_DIR": str(tmp_path / "var"),
                        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", **env})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=120)


def test_without_a_secret_key_and_without_debug_nothing_starts(tmp_path):
    done = manage("check", tmp_path=tmp_path)
    assert done.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set" in done.stderr


def test_debug_may_run_on_the_development_key_and_a_key_file_is_read(tmp_path):
    assert manage("check", tmp_path=tmp_path, DEBUG="1").returncode == 0
    key_file = tmp_path / "secret"
    key_file.write_text("from-a-file-" + "z" * 50 + "\n")
    done = manage("shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)", tmp_path=tmp_path,
                  SECRET_KEY_FILE=str(key_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "from-a-file-" + "z" * 50


def test_the_documented_production_settings_pass_check_deploy(tmp_path):
    done = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, **PRODUCTION)
    assert done.returncode == 0, done.stdout + done.stderr
    without_tls = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path,
                         SECRET_KEY=PRODUCTION["SECRET_KEY"])
    assert without_tls.returncode != 0  # the checks do look: HSTS, secure cookies, SSL redirect
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in without_tls.stderr + without_tls.stdout
