"""The queue messages of usage exports: what the producers put on SQS is what the consumers parse."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from meterline.domain.exports import DeliveryMessage, ExportRequest


def test_an_export_request_travels_in_the_api_s_field_names() -> None:
    request = ExportRequest(namespace="default", report="daily", report_id="01R", run_id="01U")
    assert orjson.loads(request.body()) == {"namespace": "default", "report": "daily", "reportId": "01R",
                                            "runId": "01U"}
    assert ExportRequest.model_validate_json(request.body()) == request


@pytest.mark.parametrize("missing", ["namespace", "report", "reportId", "runId"])
def test_an_export_request_without_a_field_is_refused(missing: str) -> None:
    body = {"namespace": "default", "report": "daily", "reportId": "01R", "runId": "01U"}
    del body[missing]
    with pytest.raises(ValidationError, match=missing):
        ExportRequest.model_validate_json(orjson.dumps(body))


def test_a_delivery_message_refuses_a_negative_attempt() -> None:
    message = {"namespace": "default", "report": "daily", "reportId": "01R", "runId": "01U", "subject": "s",
               "webhookId": "msg_1", "attempt": -1, "payload": {}}
    with pytest.raises(ValidationError, match="attempt"):
        DeliveryMessage.model_validate(message)
    assert DeliveryMessage.model_validate({**message, "attempt": 2}).attempt == 2
