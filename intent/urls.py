from django.urls import path

from .apis import IntentDetectApi, IntentFeedbackApi
from .review.apis import ReviewQueueApi

app_name = "intent"

urlpatterns = [
    path("detect", IntentDetectApi.as_view(), name="detect"),
    path("feedback", IntentFeedbackApi.as_view(), name="feedback"),
    path("review-queue/", ReviewQueueApi.as_view(), name="review-queue"),
]
