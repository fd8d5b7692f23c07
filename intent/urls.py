from django.urls import path

from .apis import IntentDetectApi, IntentFeedbackApi
from .experiments import apis as experiments
from .review.apis import ReviewQueueApi

app_name = "intent"

urlpatterns = [
    path("detect", IntentDetectApi.as_view(), name="detect"),
    path("feedback", IntentFeedbackApi.as_view(), name="feedback"),
    path("review-queue/", ReviewQueueApi.as_view(), name="review-queue"),
    path("experiments/", experiments.ExperimentListApi.as_view(), name="experiments"),
    path("experiments/<str:pk>/", experiments.ExperimentDetailApi.as_view(), name="experiment"),
    path("experiments/<str:pk>/start", experiments.ExperimentStartApi.as_view(), name="experiment-start"),
    path("experiments/<str:pk>/stop", experiments.ExperimentStopApi.as_view(), name="experiment-stop"),
    path("experiments/<str:pk>/promote", experiments.ExperimentPromoteApi.as_view(), name="experiment-promote"),
    path("experiments/<str:pk>/results", experiments.ExperimentResultsApi.as_view(), name="experiment-results"),
]
