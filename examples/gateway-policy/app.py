"""A small Lambda API (Powertools, API Gateway HTTP API) metered by Meterline's gateway policy.

Every successful request becomes one `request` event, the event the example meters count
(`api_requests_total` by method and route; `api_request_ingress_bytes` and `api_request_duration_seconds`
from its data). With REQUIRED_FEATURES="feature-a,feature-b" a caller needs access to those features, or the
request is answered 403 before the route runs. Callers are identified by the `sub` claim of the API's JWT
authorizer.

Environment: METERLINE_URL, METERLINE_API_KEY (a key with the admin scope when features are checked: the
policy both reads entitlements and ingests events), REQUIRED_FEATURES, ACCESS_CACHE_SECONDS (default 5).
`run_local.py` beside this file invokes it with API Gateway events against `make dev`.
"""

from __future__ import annotations

import os
import time

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline_client import Meterline
from meterline_client.gateway import MeteringPolicy, set_meters

logger = Logger(service="example-api")
# Made once per Lambda environment: its buffer and connections are reused by every invocation.
meterline = Meterline(source="example-api", cache_seconds=float(os.environ.get("ACCESS_CACHE_SECONDS", "5")))

app = APIGatewayHttpResolver()
app.use(middlewares=[MeteringPolicy(
    client=meterline,
    meter={"type": "request"},
    meter_on_status_codes="200-299",
    required_entitlements=[key for key in os.environ.get("REQUIRED_FEATURES", "").split(",") if key],
    subject_path=".sub",
)])


@app.get("/items/<item_id>")
def get_item(item_id: str) -> dict[str, str]:
    return {"id": item_id, "name": f"item {item_id}"}


@app.post("/summaries")
def summarize() -> dict[str, str | int]:
    started = time.perf_counter()
    text = app.current_event.body or ""
    summary = " ".join(text.split()[:8])
    # This route's event also carries what the request cost: the example meters sum these two.
    set_meters(app, {"type": "request", "data": {"ingress_bytes": len(text.encode()),
                                                 "duration_seconds": round(time.perf_counter() - started, 6)}})
    return {"summary": summary, "words": len(text.split())}


@logger.inject_lambda_context
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
