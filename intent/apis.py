"""HTTP interface of intent detection: validate, call one service, serialize."""

from drf_spectacular.utils import OpenApiExample
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import APIView

from intentsite.serializers import OptionalCharField, StrictCharField, StrictSerializer, StrictUUIDField, api_schema

from .program.errors import ERROR_CATEGORIES
from .selectors import intent_name_known
from .services import detection_feedback_create, intent_detect


class IntentDetectApi(APIView):
    throttle_scope = "detect"

    class InputSerializer(StrictSerializer):
        class Meta:
            ref_name = "IntentDetect"

        message = StrictCharField(min_length=1, max_length=4000)
        user_role = OptionalCharField(max_length=100)
        current_module = OptionalCharField(max_length=100)
        current_tab = OptionalCharField(max_length=100)
        subject_id = OptionalCharField(max_length=100, help_text=(
            "Who is asking (a user or session id of yours): a sticky experiment keeps each subject on one arm. Only "
            "an HMAC of it is kept."))

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "IntentDetection"

        request_id = serializers.UUIDField()
        intent = serializers.CharField(help_text="A catalog intent, or `out_of_scope`.")
        confidence = serializers.FloatField(min_value=0, max_value=1)
        requires_workflow = serializers.BooleanField()
        workflow_template = serializers.CharField(allow_null=True)
        agent_template = serializers.CharField(allow_null=True)
        reasoning = serializers.CharField()
        model_name = serializers.CharField(help_text="The configured model.")
        answered_by = serializers.CharField(help_text=(
            "The model whose answer this is: `model_name`, or the local backend when the LM failed."))
        prompt_version = serializers.CharField()
        category_source = serializers.ChoiceField(choices=["database", "fallback"])
        fallback_used = serializers.BooleanField(help_text="True when the LM failed and the local backend answered.")
        error_category = serializers.ChoiceField(choices=ERROR_CATEGORIES, allow_null=True)
        response_time_ms = serializers.FloatField()
        experiment = serializers.CharField(allow_null=True, help_text=(
            "The running A/B experiment (its name) whose arm answered, or null."))
        variant = serializers.CharField(allow_null=True, help_text="That arm: `control` or a variant's name.")

    @api_schema(
        operation_id="intent_detect",
        summary="Detect the intent of a chat message",
        request=InputSerializer,
        responses={200: OutputSerializer},
        errors=(400, 401, 403, 413, 415, 429),
        examples=[
            OpenApiExample(
                "Request",
                request_only=True,
                value={"message": "move 200 dollars to my savings account", "user_role": "customer",
                       "current_module": "banking", "current_tab": "accounts"},
            ),
            OpenApiExample(
                "Response",
                response_only=True,
                value={"request_id": "6f1c3e0a-8d3b-4c1e-9a57-2d1f0b7a9c11", "intent": "transfer",
                       "confidence": 0.91, "requires_workflow": True, "workflow_template": "money_transfer",
                       "agent_template": None, "reasoning": "Closest catalog intent by TF-IDF n-grams, word vectors and ...",
                       "model_name": "local/tfidf-linear", "answered_by": "local/tfidf-linear",
                       "prompt_version": "3fa2c81d09be",
                       "category_source": "database", "fallback_used": False, "error_category": None,
                       "response_time_ms": 0.84, "experiment": None, "variant": None},
            ),
        ],
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = intent_detect(**serializer.validated_data, user=request.user)
        detection = result.detection
        data = {
            "request_id": result.request_id,
            "intent": detection.intent,
            "confidence": detection.confidence,
            "requires_workflow": detection.requires_workflow,
            "workflow_template": detection.workflow_template,
            "agent_template": detection.agent_template,
            "reasoning": detection.reasoning,
            "model_name": detection.model_name,
            "answered_by": detection.answered_by,
            "prompt_version": detection.prompt_version,
            "category_source": detection.category_source,
            "fallback_used": detection.fallback_used,
            "error_category": detection.error_category,
            "response_time_ms": detection.response_time_ms,
            "experiment": result.experiment or None,
            "variant": result.variant or None,
        }
        return Response(self.OutputSerializer(data).data, status=status.HTTP_200_OK)


class IntentNotInCatalog(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "intent_not_in_catalog"


class IntentFeedbackApi(APIView):
    """A user says which intent a detection should have had; it is recorded on that detection's MLflow run. Only
    the user who asked for the detection, or a reviewer (permission `intent.label_detections`), may label it;
    for anyone else it does not exist (404, as an unknown id)."""

    throttle_scope = "feedback"

    class InputSerializer(StrictSerializer):
        class Meta:
            ref_name = "IntentFeedback"

        request_id = StrictUUIDField(help_text="The `request_id` a detection answered.")
        correct_intent = StrictCharField(max_length=100, help_text="A catalog intent, or `out_of_scope`.")
        comment = OptionalCharField(max_length=500)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "IntentFeedbackRecorded"

        request_id = serializers.UUIDField()
        detected_intent = serializers.CharField()
        expected_intent = serializers.CharField()
        is_correct = serializers.BooleanField()
        comment = serializers.CharField(allow_blank=True)
        revision = serializers.IntegerField(help_text="How many times this detection got feedback (latest wins).")
        state = serializers.CharField(help_text="`pending` until written to the MLflow run, then `logged`.")

    @api_schema(
        operation_id="intent_feedback",
        summary="Tell which intent a detection should have had",
        request=InputSerializer,
        responses={202: OutputSerializer},
        errors=(400, 401, 403, (404, "No detection with this request_id that this user may label."),
                (409, "`correct_intent` is not an intent of the active catalog (nor `out_of_scope`)."), 413, 415, 429),
        examples=[
            OpenApiExample(
                "Request", request_only=True,
                value={"request_id": "6f1c3e0a-8d3b-4c1e-9a57-2d1f0b7a9c11", "correct_intent": "pay_bill",
                       "comment": "I wanted to pay the electricity bill"},
            ),
        ],
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if not intent_name_known(name=data["correct_intent"]):
            # Well-formed, but not in the catalog as it is now (which a schema cannot list): a conflict, not a 400.
            raise IntentNotInCatalog({"correct_intent": [
                f"{data['correct_intent']!r} is not an intent of the active catalog (nor out_of_scope)."]})
        feedback = detection_feedback_create(
            request_id=data["request_id"], expected_intent=data["correct_intent"], comment=data["comment"],
            user=request.user,
        )  # an unknown detection (or someone else's) raises DetectionNotFound: a 404 by the exception handler
        return Response(self.OutputSerializer(feedback).data, status=status.HTTP_202_ACCEPTED)
