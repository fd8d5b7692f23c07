from django.urls import path

from .apis import IntentDetectApi, IntentFeedbackApi

app_name = "intent"

urlpatterns = [
    path("detect", IntentDetectApi.as_view(), name="detect"),
    path("feedback", IntentFeedbackApi.as_view(), name="feedback"),
]
