from django.urls import path

from .apis import IntentDetectApi

app_name = "intent"

urlpatterns = [
    path("detect", IntentDetectApi.as_view(), name="detect"),
]
