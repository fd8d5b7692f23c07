"""The Celery application: configured from Django settings (`CELERY_*`), tasks found in the apps."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "intentsite.settings")

app = Celery("intentsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _tune_embedded_broker(sender, **kwargs):
    if str(sender.conf.broker_url).startswith("sqla+sqlite"):
        from .sqlite import sqlalchemy_sqlite_tune

        sqlalchemy_sqlite_tune()
