"""Delivering usage exports as Standard Webhooks: where they may go, how they are signed and sent,
and when a failed one is tried again."""

from meterline.webhooks.delivery import DEADLINE_MARGIN_SECONDS, WebhookAttempt, post_webhook
from meterline.webhooks.endpoints import EndpointPolicy, RefusedEndpoint
from meterline.webhooks.retry import RetryPolicy
from meterline.webhooks.signing import new_signing_secret, signature_headers

__all__ = [
    "DEADLINE_MARGIN_SECONDS",
    "EndpointPolicy",
    "RefusedEndpoint",
    "RetryPolicy",
    "WebhookAttempt",
    "new_signing_secret",
    "post_webhook",
    "signature_headers",
]
