"""The example API's one route: it knows nothing of metering or entitlements. The authorizer put the
caller's subject in the request context."""

from __future__ import annotations

import json
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    subject = event["requestContext"]["authorizer"]["lambda"]["subject"]
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"hello": subject})}
