"""`GET /api/intent/review-queue/`: unlabelled detections for reviewers, by strategy."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiExample
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from intentsite.serializers import QueryCharField, QueryChoiceField, QueryIntegerField, StrictSerializer, api_schema

from .selectors import ReviewFilters, Strategy, review_queue_list

LABEL_PERMISSION = "intent.label_detections"


class CanLabelDetections(BasePermission):
    """Reviewers: users with `intent.label_detections` (anonymous 401, others 403)."""

    message = "Reviewing needs the permission intent.label_detections."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.has_perm(LABEL_PERMISSION))


class AlternativeSerializer(serializers.Serializer):
    class Meta:
        ref_name = "ReviewAlternative"

    intent = serializers.CharField()
    probability = serializers.FloatField()


class ContextSerializer(serializers.Serializer):
    class Meta:
        ref_name = "ReviewContext"

    user_role = serializers.CharField(allow_blank=True)
    current_module = serializers.CharField(allow_blank=True)
    current_tab = serializers.CharField(allow_blank=True)


class ReviewItemSerializer(serializers.Serializer):
    class Meta:
        ref_name = "ReviewItem"

    request_id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    message = serializers.CharField(allow_null=True, help_text=(
        "Redacted; null when messages are not stored (INTENT_STORE_MESSAGES=0) or past their retention."))
    detected_intent = serializers.CharField()
    confidence = serializers.FloatField()
    alternatives = AlternativeSerializer(many=True, help_text="The local model's ranking, best first, up to 5.")
    margin = serializers.FloatField(allow_null=True, help_text="Top minus second probability of that ranking.")
    local_intent = serializers.CharField(allow_null=True, help_text=(
        "What the local model answers, beside an LM's answer (null when the local model answered)."))
    context = ContextSerializer()
    model_name = serializers.CharField()
    prompt_version = serializers.CharField()
    status = serializers.CharField()
    error_category = serializers.CharField(allow_null=True)


class ReviewQueueSerializer(serializers.Serializer):
    class Meta:
        ref_name = "ReviewQueue"

    strategy = serializers.CharField()
    days = serializers.IntegerField()
    messages_stored = serializers.BooleanField(help_text="INTENT_STORE_MESSAGES: false means no item has text.")
    count = serializers.IntegerField()
    items = ReviewItemSerializer(many=True)


class ReviewQueueApi(APIView):
    """Unlabelled detections worth a label. Label one through `POST /api/intent/feedback`: it leaves the queue.
    `random` marks what it serves as sampled: the overview's `sampled_accuracy` counts only those labels."""

    permission_classes = [CanLabelDetections]
    throttle_scope = "analytics"

    class FilterSerializer(StrictSerializer):
        class Meta:
            ref_name = "ReviewQueueFilter"

        strategy = QueryChoiceField(choices=[strategy.value for strategy in Strategy], default=Strategy.UNCERTAIN.value,
                                    help_text="`uncertain`: smallest margin between the local model's top two "
                                              "intents first; `random`: a uniform sample of the period; "
                                              "`disagreement`: the LM and the local model answered differently.")
        limit = QueryIntegerField(min_value=1, max_value=100, default=20, help_text="How many items (1–100).")
        days = QueryIntegerField(min_value=1, max_value=90, default=7,
                                 help_text="Detections of the last this many days (1–90).")
        module = QueryCharField(max_length=100, help_text="Only detections in this module.")
        user_role = QueryCharField(max_length=100, help_text="Only detections for this user role.")
        model_name = QueryCharField(max_length=200, help_text="Only detections of this model.")
        prompt_version = QueryCharField(max_length=32, help_text="Only detections of this prompt version.")

    @api_schema(
        operation_id="intent_review_queue",
        summary="Detections to label, by strategy",
        parameters=[FilterSerializer],
        responses={200: ReviewQueueSerializer},
        errors=(400, 401, (403, "The user lacks the permission intent.label_detections."), 429),
        examples=[OpenApiExample("Response", response_only=True, value={
            "strategy": "uncertain", "days": 7, "messages_stored": True, "count": 1, "items": [{
                "request_id": "6f1c3e0a-8d3b-4c1e-9a57-2d1f0b7a9c11", "created_at": "2026-11-30T10:02:11Z",
                "message": "send [email] the statement", "detected_intent": "transfer", "confidence": 0.41,
                "alternatives": [{"intent": "transfer", "probability": 0.41}, {"intent": "pay_bill", "probability": 0.38}],
                "margin": 0.03, "local_intent": None,
                "context": {"user_role": "customer", "current_module": "banking", "current_tab": "accounts"},
                "model_name": "local/tfidf-linear", "prompt_version": "3fa2c81d09be", "status": "success",
                "error_category": None}]})],
    )
    def get(self, request):
        serializer = self.FilterSerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        filters = ReviewFilters(days=data["days"], current_module=data.get("module", ""),
                                user_role=data.get("user_role", ""), model_name=data.get("model_name", ""),
                                prompt_version=data.get("prompt_version", ""))
        items = review_queue_list(strategy=Strategy(data["strategy"]), limit=data["limit"], filters=filters)
        return Response({
            "strategy": data["strategy"],
            "days": data["days"],
            "messages_stored": settings.INTENT_STORE_MESSAGES,
            "count": len(items),
            "items": [_item(detail) for detail in items],
        })


def _item(detail) -> dict:
    return {
        "request_id": str(detail.request_id),
        "created_at": detail.created_at.isoformat().replace("+00:00", "Z"),
        "message": detail.message or None,
        "detected_intent": detail.detected_intent,
        "confidence": detail.confidence,
        "alternatives": [{"intent": intent, "probability": probability} for intent, probability in detail.alternatives],
        "margin": detail.margin,
        "local_intent": detail.local_intent or None,
        "context": {"user_role": detail.user_role, "current_module": detail.current_module,
                    "current_tab": detail.current_tab},
        "model_name": detail.model_name,
        "prompt_version": detail.prompt_version,
        "status": detail.status,
        "error_category": detail.error_category or None,
    }
