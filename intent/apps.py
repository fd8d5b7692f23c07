from django.apps import AppConfig


class IntentConfig(AppConfig):
    name = "intent"
    verbose_name = "Intent detection"
