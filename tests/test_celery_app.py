"""The Celery app as a process starts it: kombu's SQLAlchemy broker models are defined at startup, both at once, in
the starting thread (a web process's request thread importing MLflow between kombu's two lazy definitions got a
500: "expression 'Message' failed to locate a name")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_the_embedded_brokers_models_are_defined_when_django_starts(broker_url):
    code = ("import django, json; django.setup(); "
            "from kombu.transport.sqlalchemy.models import class_registry; "
            "print(json.dumps(sorted(name for name in class_registry if not name.startswith('_'))))")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "intentsite.settings", "CELERY_BROKER_URL": broker_url}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    defined = json.loads(done.stdout.strip().splitlines()[-1])
    assert defined == (["Message", "Queue"] if broker_url.startswith("sqla+") else [])
