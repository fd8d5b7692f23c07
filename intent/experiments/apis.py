"""Live prompt experiments over HTTP: staff read; creating, changing and running one needs `intent.change_experiment`."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_view
from rest_framework import generics, serializers
from rest_framework.generics import get_object_or_404
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.monitors.apis import KnownQueryParameters, Pagination, name_taken
from intentsite.serializers import api_schema

from ..models import Experiment
from .results import experiment_results_get
from .serializers import ActionSerializer, ExperimentSerializer, PromoteSerializer
from .services import (
    ExperimentConflict,
    experiment_create,
    experiment_promote,
    experiment_start,
    experiment_stop,
    experiment_update,
)

READ_ERRORS = (400, 401, 403, 429)
WRITE_ERRORS = (400, 401, 403, (409, "The name is taken, a channel no plugin loads, an unknown prompt version, weights "
                                     "that leave the control nothing, or the experiment's state does not allow it."),
                413, 415, 429)
ACTION_ERRORS = (400, 401, 403, 404, (409, "Not in a state that allows it, an arm that cannot answer here, or a "
                                           "running A/B experiment on overlapping traffic."), 413, 415, 429)


class ExperimentPermission(BasePermission):
    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_staff):
            return False
        return request.method in SAFE_METHODS or user.has_perm("intent.change_experiment")


class ExperimentBaseApi(KnownQueryParameters):
    permission_classes = [ExperimentPermission]
    throttle_scope = "analytics"


@extend_schema_view(
    get=api_schema(responses={200: ExperimentSerializer(many=True)}, errors=READ_ERRORS, summary="List experiments"),
    post=api_schema(responses={201: ExperimentSerializer}, errors=WRITE_ERRORS, summary="Create an experiment (draft)"),
)
class ExperimentListApi(ExperimentBaseApi, generics.ListCreateAPIView):
    """Live prompt experiments, newest first; a new one is a draft until started."""

    known_query_parameters = ("limit", "offset")
    serializer_class = ExperimentSerializer
    pagination_class = Pagination
    queryset = Experiment.objects.order_by("-created_at", "-id")

    def perform_create(self, serializer) -> None:
        with name_taken("An experiment"):
            serializer.instance = experiment_create(created_by=self.request.user, **serializer.validated_data)


@extend_schema_view(
    get=api_schema(responses={200: ExperimentSerializer}, errors=(*READ_ERRORS, 404), summary="An experiment"),
    patch=api_schema(responses={200: ExperimentSerializer}, errors=(*WRITE_ERRORS, 404),
                     summary="Change an experiment (its design only while a draft)"),
    put=api_schema(responses={200: ExperimentSerializer}, errors=(*WRITE_ERRORS, 404), summary="Replace a draft"),
    delete=api_schema(responses={204: None}, errors=(*READ_ERRORS, 404, (409, "It is running: stop it first.")),
                      summary="Delete an experiment that is not running"),
)
class ExperimentDetailApi(ExperimentBaseApi, generics.RetrieveUpdateDestroyAPIView):
    """One experiment: its design (changed only while a draft), status, arms and decision."""

    serializer_class = ExperimentSerializer
    queryset = Experiment.objects.all()

    def perform_update(self, serializer) -> None:
        with name_taken("An experiment"):
            serializer.instance = experiment_update(experiment=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: Experiment) -> None:
        if instance.status == Experiment.Status.RUNNING:
            raise ExperimentConflict(f"Experiment {instance.name} is running: stop it first")
        instance.delete()


class _ActionApi(ExperimentBaseApi, APIView):
    """An action on one experiment; answers the experiment as it is after it."""

    input_serializer: type[serializers.Serializer] = ActionSerializer

    def act(self, experiment: Experiment, data: dict) -> Experiment:
        raise NotImplementedError

    def post(self, request, pk: str):
        experiment = get_object_or_404(Experiment, pk=pk)
        data = self.input_serializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        experiment = self.act(experiment, data.validated_data)
        return Response(ExperimentSerializer(experiment, context={"request": request}).data)


class ExperimentStartApi(_ActionApi):
    @api_schema(request=None, responses={200: ExperimentSerializer}, errors=ACTION_ERRORS,
                summary="Start a draft experiment")
    def post(self, request, pk: str):
        return super().post(request, pk)

    def act(self, experiment, data):
        return experiment_start(experiment=experiment)


class ExperimentStopApi(_ActionApi):
    @api_schema(request=ActionSerializer, responses={200: ExperimentSerializer}, errors=ACTION_ERRORS,
                summary="Stop a running experiment (all traffic back to the active version)")
    def post(self, request, pk: str):
        return super().post(request, pk)

    def act(self, experiment, data):
        return experiment_stop(experiment=experiment, reason=data["reason"])


class ExperimentPromoteApi(_ActionApi):
    input_serializer = PromoteSerializer

    @api_schema(request=PromoteSerializer, responses={200: ExperimentSerializer}, errors=ACTION_ERRORS,
                summary="Activate the winner's prompt version and end the experiment")
    def post(self, request, pk: str):
        return super().post(request, pk)

    def act(self, experiment, data):
        return experiment_promote(experiment=experiment, variant=data["variant"])


class ResultsSerializer(serializers.Serializer):
    experiment = serializers.DictField()
    horizon = serializers.DictField(help_text="The fixed horizon: the decision is taken once every arm reached it.")
    arms = serializers.ListField(child=serializers.DictField(), help_text=(
        "Per arm: runs, labelled, metrics {value, low, high} (95 % or 1 - alpha intervals), and for variants the "
        "difference from control per compared metric {diff, low, high, p_value, relative, significant, provisional}."))
    runs_needed_per_variant = serializers.IntegerField(allow_null=True, help_text=(
        "Runs (labelled runs for accuracy) per arm to detect `minimum_effect` with 80 % power at alpha."))
    guardrails = serializers.ListField(child=serializers.DictField())
    decision = serializers.DictField()
    daily = serializers.ListField(child=serializers.DictField())
    computed_at = serializers.DateTimeField()


class ExperimentResultsApi(ExperimentBaseApi, APIView):
    """Per arm the runs, the primary metric and the guardrails with intervals; per variant the difference from control
    with its interval and p-value; the runs still needed; the guardrail checks; the fixed-horizon decision."""

    @api_schema(responses={200: ResultsSerializer}, errors=(*READ_ERRORS, 404),
                summary="An experiment's results: per arm, differences from control, the decision")
    def get(self, request, pk: str):
        experiment = get_object_or_404(Experiment, pk=pk)
        return Response(ResultsSerializer(experiment_results_get(experiment=experiment)).data)
