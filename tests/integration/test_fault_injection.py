"""Fault injection: whatever Lambda's DynamoDB Streams delivery does to the processor, the numbers the
query API reports equal a recount of the raw events (exactly-once counting, late events, recount).

Events go in through the real ingest handler; the events table's stream goes to the real processor
handler through the local StreamPoller (Lambda's batches, checkpoints, bisect and retries) with a
FaultPlan: an invocation fails after each of its writes in turn, dies right after each write landed,
reports processed records as failed, or has its batches delivered again, whole or in part. The
processor runs on a simulated clock (30 s per invocation) with the compactor running between
invocations, so a batch retried across the on-time/late line is covered too. Queries are checked
twice: right after delivery (the compactor behind: pending late quarters, unfolded quarters, the raw
tail) and once the compactor has caught up.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
import orjson
import pytest

from functions.api import handler as api
from functions.ingest import handler as ingest
from functions.processor import handler as processor
from meterline.domain.events import StoredEvent
from meterline.domain.meters import Meter
from meterline.domain.query_plan import UsageQuery
from meterline.domain.slots import Horizons
from meterline.domain.timeutil import DAY_MS, HOUR_MS, QUARTER_MS, floor_to, format_ms, parse_rfc3339, to_epoch_ms
from meterline.domain.windows import WindowSize
from meterline.errors import NotFound
from meterline.processing import stream_batch
from meterline.services.compaction import Compactor
from meterline.services.meter_source import meter_catalog
from meterline.services.recount import Recounter
from meterline.services.usage_query import UsageReader
from meterline.settings import compaction_timing
from meterline.storage.events_store import EventsStore, stored_event_from_item
from meterline.storage.usage_store import UsageStore
from meterline_local.lambda_runtime import LocalFunction, LocalLambdaContext
from meterline_local.stream_poller import FaultPlan, StreamPoller, StreamSettings
from tests.conftest import scan_events
from tests.integration.http import call
from tests.integration.test_counting_recount import as_result, assert_same, recount

EVENTS = os.environ["EVENTS_TABLE"]
HOUR = 3_600_000


def ms(stamp: str) -> int:
    return to_epoch_ms(parse_rfc3339(stamp))


# The processor's clock when the first batch arrives: quarter 21:30 is still on time (until 21:46:30,
# grace 180 s less the 90 s write margin), so a retry two steps later finds it late; the compactor folds
# it at 21:48.
START = ms("2024-03-09T21:45:30Z")
STEP_MS = 30_000
CAUGHT_UP = START + 2 * HOUR


def _event(i: int, type_: str, time: str, subject: str, **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"evt-{i}", "source": "svc", "type": type_, "subject": subject,
            "time": time, "data": data}


# Late ones (the day before, already rolled into day slots; a quarter already folded), on-time ones,
# numeric strings, a value that is not a number, an event no meter counts, two subject buckets.
WORKLOAD = [
    _event(1, "prompt", "2024-03-08T23:59:59.999Z", "customer-1", tokens="100", model="gpt4", type="input"),
    _event(2, "prompt", "2024-03-09T21:05:10.500Z", "customer-2", tokens=250, model="gpt4", type="output"),
    _event(3, "request", "2024-03-09T21:05:00Z", "customer-1", method="GET", route="/a", duration_seconds=0.5,
           ingress_bytes="1024"),
    _event(4, "login", "2024-03-09T21:05:30Z", "customer-2", session_id="s2"),
    _event(5, "prompt", "2024-03-09T21:31:00Z", "customer-1", tokens="lots", model="gpt4", type="input"),
    _event(6, "prompt", "2024-03-09T21:31:20Z", "customer-1", tokens="12.5", model="llama", type="input"),
    _event(7, "request", "2024-03-09T21:32:10Z", "customer-2", method="POST", route="/b", duration_seconds=1.25,
           ingress_bytes=2048),
    _event(8, "login", "2024-03-09T21:33:00Z", "customer-1", session_id="s1"),
    _event(9, "login", "2024-03-09T21:34:00Z", "customer-1", session_id="s1"),
    _event(10, "unknown_type", "2024-03-09T21:35:00Z", "customer-1", anything=1),
    _event(11, "prompt", "2024-03-09T21:44:59.999Z", "customer-2", tokens=7, type="output"),
]
SLUGS = ["tokens_total", "api_requests_total", "api_request_duration_seconds", "api_request_ingress_bytes",
         "unique_sessions_total"]
# DynamoDB writes the processor makes for WORKLOAD in one batch at START, each a BatchWriteItem: the
# raw pages (by counter set or shared, minute and subject bucket), and
# the work lists (manifests by event quarter, a late list and its per-namespace copy).
# test_every_write_position_is_covered checks it, so the positions below are all of them; the redelivery
# tests use batches of 4 records, where the writes fall differently.
METERED = [event for event in WORKLOAD if event["type"] != "unknown_type"]
WRITES_PER_BATCH = 2


def post(events: list[dict[str, Any]], function: Any = ingest) -> None:
    reply = call(function, "POST", "/api/v1/events", body=events, content_type="application/cloudevents-batch+json")
    assert reply.status == 204, reply.body


def ingest_workload() -> None:
    """One request per event, so the stream order (and with it which write is the k-th) is fixed; then
    retries of some of them with other content, which must change nothing."""
    for event in WORKLOAD:
        post([event])
    post([{**WORKLOAD[1], "subject": "mallory", "data": {"tokens": 10**6}}, {**WORKLOAD[6], "type": "prompt"}])


class Pipeline:
    """The processor behind a StreamPoller on a simulated clock, and the compactor running between its
    invocations. The compactor and the reader use a client of their own, so the fault plan (hooked on
    the processor's client) counts the processor's writes only."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, faults: FaultPlan | None = None, **settings: Any) -> None:
        self.clock = START
        monkeypatch.setattr(processor, "now_ms", lambda: self.clock)
        monkeypatch.setattr(stream_batch, "now_ms", lambda: self.clock)
        self.store = UsageStore(client=boto3.client("dynamodb", region_name="us-east-1"))
        self.timing = compaction_timing()
        # as if the compactor had been running all along: folded up to its horizons at START
        quarter = floor_to(START - self.timing.grace_ms, QUARTER_MS)
        self.store.set_compaction_state(Horizons(
            quarter=quarter, hour=floor_to(quarter, HOUR_MS), day=floor_to(quarter, DAY_MS),
            late_through=floor_to(START - self.timing.write_margin_ms, QUARTER_MS)))
        self.compactor = Compactor(self.store, meter_catalog, self.timing)
        arn = boto3.client("dynamodb", region_name="us-east-1").describe_table(TableName=EVENTS)["Table"][
            "LatestStreamArn"]
        self.poller = StreamPoller(boto3.client("dynamodbstreams", region_name="us-east-1"), arn, self._invoke,
                                   StreamSettings(retry_delay_s=0, **settings), faults=faults)

    def _invoke(self, event: dict[str, Any]) -> Any:
        self.compactor.run(self.clock)
        self.clock += STEP_MS
        return processor.handler(event, LocalLambdaContext("processor"))

    def deliver(self) -> None:
        while self.poller.poll_once():
            pass

    def catch_up(self) -> None:
        self.clock = CAUGHT_UP
        assert self.compactor.run_until_caught_up(self.clock).caught_up


def meters() -> dict[str, Meter]:
    return {m.slug: m for m in meter_catalog("default").meters}


def queries(meter: Meter) -> list[UsageQuery]:
    """Totals, HOUR windows on half hours (Asia/Kolkata), DAY windows of a +02:00 zone (Africa/Cairo,
    whose day ends at 22:00 UTC) and MINUTE windows with a millisecond edge. Each ends soon after the
    events: the reader reads raw rows per quarter-hour between the compactor's horizon and `to`."""
    keys = list(meter.group_by)
    return [
        UsageQuery(ms("2024-03-08T00:00:00Z"), ms("2024-03-09T22:00:00Z"), None, "UTC", None, ["subject", *keys]),
        UsageQuery(ms("2024-03-08T23:30:00Z"), ms("2024-03-09T22:30:00Z"), WindowSize.HOUR, "Asia/Kolkata", None,
                   keys),
        UsageQuery(ms("2024-03-07T22:00:00Z"), ms("2024-03-09T22:00:00Z"), WindowSize.DAY, "Africa/Cairo",
                   ["customer-1"], keys[:1]),
        UsageQuery(ms("2024-03-09T21:00:00Z"), ms("2024-03-09T21:50:00.500Z"), WindowSize.MINUTE, "UTC", None, []),
    ]


def raw_events(client: Any) -> list[StoredEvent]:
    return [stored_event_from_item(item) for item in scan_events(client, EVENTS)]


def assert_counts_equal_recount(client: Any, store: UsageStore, now_ms: int) -> None:
    events = raw_events(client)
    reader = UsageReader(store)
    by_slug = meters()
    for slug in SLUGS:
        meter = by_slug[slug]
        for query in queries(meter):
            rows = reader.query("default", meter, query, now_ms)
            assert_same(as_result(rows), recount(meter, events, query))


def assert_api_equals_recount(client: Any) -> None:
    """The same through GET /api/v1/meters/{slug}/query (the compactor has caught up)."""
    events = raw_events(client)
    by_slug = meters()
    for slug in SLUGS:
        meter = by_slug[slug]
        query = queries(meter)[1]
        params = {"from": "2024-03-08T23:30:00Z", "to": "2024-03-09T22:30:00Z", "windowSize": "HOUR",
                  "windowTimeZone": "Asia/Kolkata"}
        if meter.group_by:
            params["groupBy"] = ",".join(meter.group_by)  # as API Gateway joins repeated parameters
        reply = call(api, "GET", f"/api/v1/meters/{slug}/query", query=params)
        assert reply.status == 200, reply.body
        assert_same(as_result(reply.json()["data"]), recount(meter, events, query))


def run(aws: Any, monkeypatch: pytest.MonkeyPatch, faults: FaultPlan | None, **settings: Any) -> Pipeline:
    ingest_workload()
    pipeline = Pipeline(monkeypatch, faults, **settings)
    pipeline.deliver()
    stats = pipeline.poller.stats
    assert stats.failed_batches == []
    assert stats.records_delivered >= len(WORKLOAD)
    assert_counts_equal_recount(aws, pipeline.store, pipeline.clock)  # the compactor behind
    pipeline.catch_up()
    assert_counts_equal_recount(aws, pipeline.store, pipeline.clock)
    return pipeline


def test_every_write_position_is_covered(aws, monkeypatch) -> None:
    pipeline = run(aws, monkeypatch, FaultPlan())
    stats = pipeline.poller.stats
    assert stats.invocations == 1 and stats.faults_injected == 0
    assert stats.writes == [WRITES_PER_BATCH], "update WRITES_PER_BATCH: the processor's writes changed"
    assert_api_equals_recount(aws)


@pytest.mark.parametrize("k", range(WRITES_PER_BATCH))
def test_invocation_failing_after_each_write(aws, monkeypatch, k: int) -> None:
    """Writes 1..k land, the rest of the batch's writes are refused; Lambda bisects and retries."""
    pipeline = run(aws, monkeypatch, FaultPlan(fail_after_writes=k))
    stats = pipeline.poller.stats
    assert stats.faults_injected >= 1 and stats.writes[0] == k and stats.bisects >= 1


@pytest.mark.parametrize("k", range(1, WRITES_PER_BATCH + 1))
def test_invocation_crashing_after_each_write(aws, monkeypatch, k: int) -> None:
    """Write k lands and the invocation dies; Lambda bisects, and the first half dies at its k-th write
    too (if it makes that many): the halves rewrite what landed under other batch ids."""
    pipeline = run(aws, monkeypatch, FaultPlan(crash_after_write=k, invocations=frozenset({1, 2})))
    stats = pipeline.poller.stats
    assert stats.faults_injected >= 1 and stats.writes[0] == k and stats.bisects >= 1


@pytest.mark.parametrize("k", sorted({1, WRITES_PER_BATCH // 2, WRITES_PER_BATCH}))
def test_invocation_crashing_and_retried_whole(aws, monkeypatch, k: int) -> None:
    """Without BisectBatchOnFunctionError, Lambda retries the whole batch: it dies at write k twice."""
    pipeline = run(aws, monkeypatch, FaultPlan(crash_after_write=k, invocations=frozenset({1, 2})),
                   bisect_on_error=False)
    stats = pipeline.poller.stats
    assert stats.faults_injected == 2 and stats.writes[:2] == [k, k] and stats.retries == 2


@pytest.mark.parametrize("position", [0, 1, 5, len(WORKLOAD) - 1])
def test_processed_records_reported_as_failed(aws, monkeypatch, position: int) -> None:
    """A response names records it did process as failures: they are processed again from there."""
    pipeline = run(aws, monkeypatch, FaultPlan(report_failures_from=position, invocations=frozenset({1, 2})))
    stats = pipeline.poller.stats
    # the retry (the records from `position` on) is reported failing from `position` on too, if it has that many
    again = position < len(WORKLOAD) - position
    assert stats.faults_injected == 1 + again and stats.retries == 1 + again


@pytest.mark.parametrize("shapes", [("whole",), ("first_half", "second_half"), ("shifted", "whole")])
def test_redelivered_batches(aws, monkeypatch, shapes: tuple[str, ...]) -> None:
    pipeline = run(aws, monkeypatch, FaultPlan(redeliver=shapes, crash_after_write=2,
                                               invocations=frozenset({2})), batch_size=4)
    stats = pipeline.poller.stats
    assert stats.redeliveries == 3 * len(shapes) and stats.faults_injected == 1


def test_duplicated_and_concurrent_ingestion(aws, monkeypatch) -> None:
    """8 clients send the same batch at once (and one of them again later): every event is stored and
    counted once."""
    function = LocalFunction("ingest", "functions.ingest.handler", concurrency=8)
    environment = type("Environment", (), {"handler": staticmethod(lambda event, context: function.invoke(event))})
    barrier = threading.Barrier(8)
    failures: list[BaseException] = []

    def send() -> None:
        try:
            barrier.wait()
            post(WORKLOAD, environment)
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    post([{**event, "data": {"tokens": 1, "session_id": "other"}} for event in WORKLOAD])
    stored = raw_events(aws)
    assert sorted(e.id for e in stored) == sorted(e["id"] for e in WORKLOAD)
    assert {e.id: e.data for e in stored} == {e["id"]: e["data"] for e in WORKLOAD}

    pipeline = Pipeline(monkeypatch, FaultPlan(redeliver=("whole",), crash_after_write=5), batch_size=5)
    pipeline.deliver()
    assert pipeline.poller.stats.failed_batches == []
    assert_counts_equal_recount(aws, pipeline.store, pipeline.clock)
    pipeline.catch_up()
    assert_counts_equal_recount(aws, pipeline.store, pipeline.clock)
    assert_api_equals_recount(aws)


ON_DYNAMODB_LOCAL = pytest.mark.parametrize("aws", ["dynamodb_local"], indirect=True)


@ON_DYNAMODB_LOCAL
@pytest.mark.parametrize("k", sorted({1, WRITES_PER_BATCH // 2, WRITES_PER_BATCH}))
def test_crashes_on_dynamodb_local(aws, monkeypatch, k: int) -> None:
    """The local stack's engine, its real stream: write k lands, the invocation dies, Lambda bisects."""
    pipeline = run(aws, monkeypatch, FaultPlan(crash_after_write=k, invocations=frozenset({1, 2})))
    assert pipeline.poller.stats.writes[0] == k and pipeline.poller.stats.bisects >= 1
    assert_api_equals_recount(aws)


@ON_DYNAMODB_LOCAL
def test_refused_writes_and_redeliveries_on_dynamodb_local(aws, monkeypatch) -> None:
    pipeline = run(aws, monkeypatch, FaultPlan(fail_after_writes=WRITES_PER_BATCH // 3, redeliver=("shifted", "whole"),
                                               invocations=frozenset({1, 3})), batch_size=4)
    assert pipeline.poller.stats.faults_injected >= 1 and pipeline.poller.stats.redeliveries >= 2
    assert_api_equals_recount(aws)


@ON_DYNAMODB_LOCAL
def test_duplicated_and_concurrent_ingestion_on_dynamodb_local(aws, monkeypatch) -> None:
    test_duplicated_and_concurrent_ingestion(aws, monkeypatch)


def test_batches_dropped_past_the_retry_limit_are_repaired_by_recount(aws, monkeypatch) -> None:
    """A systemic fault outlasts the stream mapping's retries: two batches are given up (their rows never
    written). The numbers are then short; a recount of the range from the events table
    (read through the time index), and the compactor re-folding what it touched, makes every query equal
    a recount of the raw events again; a second recount changes nothing."""
    ingest_workload()
    pipeline = Pipeline(monkeypatch, batch_size=4)
    delivered = [0]
    process = pipeline._invoke

    def invoke(event: dict[str, Any]) -> Any:
        delivered[0] += 1
        if delivered[0] in (2, 3):  # given up: on AWS, a record past its maximum age goes to the on-failure queue
            return {"batchItemFailures": []}
        return process(event)

    pipeline.poller.invoke = invoke
    pipeline.deliver()
    pipeline.catch_up()
    events = raw_events(aws)
    tokens = meters()["tokens_total"]
    whole_range = queries(tokens)[0]
    short = as_result(UsageReader(pipeline.store).query("default", tokens, whole_range, pipeline.clock))
    assert short != recount(tokens, events, whole_range)  # the fault lost usage

    recounter = Recounter(EventsStore(), pipeline.store, meter_catalog)
    start, end = ms("2024-03-08T00:00:00Z"), ms("2024-03-10T00:00:00Z")
    report = recounter.run("default", start, end, CAUGHT_UP)
    # the hours with events; only events some meter counts are read (not evt-10, of an unknown type)
    assert report.complete and report.events == len(METERED) and report.hours == 2
    pipeline.clock = CAUGHT_UP + HOUR
    assert pipeline.compactor.run_until_caught_up(pipeline.clock).caught_up
    assert_counts_equal_recount(aws, pipeline.store, pipeline.clock)
    assert_api_equals_recount(aws)
    listed = call(api, "GET", "/api/v1/events", query={"from": "2024-03-08T00:00:00Z", "to": "2024-03-10T00:00:00Z"})
    assert sorted(e["event"]["id"] for e in listed.json()) == sorted(e["id"] for e in WORKLOAD)

    again = recounter.run("default", start, end, CAUGHT_UP + HOUR, meter_slug="tokens_total")
    assert again.complete and again.events == sum(1 for e in WORKLOAD if e["type"] == "prompt")
    assert pipeline.compactor.run_until_caught_up(CAUGHT_UP + 2 * HOUR).caught_up
    assert_counts_equal_recount(aws, pipeline.store, CAUGHT_UP + 2 * HOUR)


def on_failure_message(records: list[dict[str, Any]], stream_arn: str, shard_id: str) -> dict[str, Any]:
    """What Lambda puts on the on-failure queue for a batch it gave up on, as an SQS record for the replay
    function (the documented shape: the batch's shard and sequence-number range, not its records)."""
    arrival = [format_ms(int(r["dynamodb"]["ApproximateCreationDateTime"]) * 1000) for r in records]
    body = orjson.dumps({
        "requestContext": {"requestId": "c9b8d7e6", "functionArn": "arn:aws:lambda:us-east-1:1:function:processor",
                           "condition": "RecordAgeExceeded", "approximateInvokeCount": 7},
        "version": "1.0", "timestamp": arrival[-1],
        "DDBStreamBatchInfo": {"shardId": shard_id, "startSequenceNumber": records[0]["dynamodb"]["SequenceNumber"],
                               "endSequenceNumber": records[-1]["dynamodb"]["SequenceNumber"],
                               "approximateArrivalOfFirstRecord": arrival[0],
                               "approximateArrivalOfLastRecord": arrival[-1], "batchSize": len(records),
                               "streamArn": stream_arn},
    }).decode()
    return {"messageId": f"m-{records[0]['dynamodb']['SequenceNumber']}", "receiptHandle": "r", "body": body,
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1", "SenderId": "lambda",
                           "ApproximateFirstReceiveTimestamp": "1"},
            "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:1:processor-failures", "awsRegion": "us-east-1"}


def test_batches_given_up_are_replayed_from_the_stream_by_the_on_failure_queue(aws, monkeypatch) -> None:
    """Two batches are given up; the replay function, handed the on-failure messages (shard and sequence
    range only), reads them back from the stream and processes them: every query equals a recount of the
    raw events; replaying again changes nothing; a batch the stream no longer holds stays on the queue."""
    from functions.replay import handler as replay

    ingest_workload()
    pipeline = Pipeline(monkeypatch, batch_size=4)
    streams = boto3.client("dynamodbstreams", region_name="us-east-1")
    [shard] = streams.describe_stream(StreamArn=pipeline.poller.stream_arn)["StreamDescription"]["Shards"]
    given_up: list[dict[str, Any]] = []
    delivered = [0]
    process = pipeline._invoke

    def invoke(event: dict[str, Any]) -> Any:
        delivered[0] += 1
        if delivered[0] in (2, 3):
            given_up.append(on_failure_message(event["Records"], pipeline.poller.stream_arn, shard["ShardId"]))
            return {"batchItemFailures": []}
        return process(event)

    pipeline.poller.invoke = invoke
    pipeline.deliver()
    pipeline.catch_up()
    tokens = meters()["tokens_total"]
    whole_range = queries(tokens)[0]
    short = as_result(UsageReader(pipeline.store).query("default", tokens, whole_range, pipeline.clock))
    assert short != recount(tokens, raw_events(aws), whole_range)

    for _ in range(2):  # SQS delivers at least once
        assert replay.handler({"Records": given_up}, LocalLambdaContext("replay")) == {"batchItemFailures": []}
        pipeline.clock += HOUR
        assert pipeline.compactor.run_until_caught_up(pipeline.clock).caught_up
        assert_counts_equal_recount(aws, pipeline.store, pipeline.clock)
    assert_api_equals_recount(aws)

    gone = orjson.loads(given_up[0]["body"])
    gone["DDBStreamBatchInfo"]["shardId"] = "shardId-00000000000000000000-00000000"  # trimmed long ago
    expired = {**given_up[0], "messageId": "m-expired", "body": orjson.dumps(gone).decode()}
    assert replay.handler({"Records": [expired]}, LocalLambdaContext("replay")) == {
        "batchItemFailures": [{"itemIdentifier": "m-expired"}]}


def test_recount_stops_at_its_deadline_and_resumes(aws, monkeypatch) -> None:
    ingest_workload()
    recounter = Recounter(EventsStore(), UsageStore(), meter_catalog)
    calls = iter(range(100))
    first = recounter.run("default", ms("2024-03-08T00:00:00Z"), ms("2024-03-10T00:00:00Z"), CAUGHT_UP,
                          out_of_time=lambda: next(calls) >= 1)
    assert not first.complete and first.next_ms == ms("2024-03-09T21:00:00Z") and first.hours == 1
    rest = recounter.run("default", first.next_ms, ms("2024-03-10T00:00:00Z"), CAUGHT_UP)
    assert rest.complete and first.events + rest.events == len(METERED)
    with pytest.raises(NotFound):
        recounter.run("default", first.next_ms, ms("2024-03-10T00:00:00Z"), CAUGHT_UP, meter_slug="no_such_meter")


def test_recount_command_against_a_deployed_stack(aws, monkeypatch, capsys) -> None:
    """`meterline recount --stack`: the tables come from the stack's outputs (CloudFormation stubbed, as for
    `meterline keys`); a stack without them is one line and status 2."""
    import boto3
    from botocore.stub import Stubber

    from meterline_local.cli import main

    ingest_workload()
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    stubs = Stubber(cloudformation)
    outputs = [{"OutputKey": f"{name}TableName", "OutputValue": os.environ[f"{name.upper()}_TABLE"]}
               for name in ("Events", "Usage", "Catalog")]
    described = {"Stacks": [{"StackName": "Meterline-prod", "CreationTime": "2026-01-01T00:00:00Z",
                             "StackStatus": "CREATE_COMPLETE", "Outputs": outputs}]}
    stubs.add_response("describe_stacks", described, {"StackName": "Meterline-prod"})
    stubs.add_response("describe_stacks", {"Stacks": [{**described["Stacks"][0], "Outputs": outputs[2:]}]},
                       {"StackName": "Meterline-keys-only"})
    stubs.activate()
    real_client = boto3.client
    monkeypatch.setattr(boto3, "client", lambda service, *args, **kwargs: cloudformation
                        if service == "cloudformation" else real_client(service, *args, **kwargs))
    window = ["--from", "2024-03-08T00:00:00Z", "--to", "2024-03-10T00:00:00Z"]
    assert main(["recount", "--namespace", "default", *window, "--stack", "Meterline-prod"]) == 0
    assert f"{len(METERED)} events in 2 hours with events" in capsys.readouterr().out
    assert main(["recount", "--namespace", "default", *window, "--stack", "Meterline-keys-only"]) == 2
    assert "no EventsTableName, UsageTableName output" in capsys.readouterr().err
