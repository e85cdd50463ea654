"""The local event source mapping reproduces Lambda's DynamoDB Streams semantics."""

from __future__ import annotations

from typing import Any

from meterline_local.stream_poller import StreamPoller, StreamSettings


def records(n: int) -> list[dict[str, Any]]:
    return [{"eventID": str(i), "eventName": "INSERT", "dynamodb": {"SequenceNumber": f"{i:021d}"}}
            for i in range(n)]


def seqs(batch: list[dict[str, Any]]) -> list[int]:
    return [int(r["dynamodb"]["SequenceNumber"]) for r in batch]


def poller(invoke, **settings: Any) -> StreamPoller:
    return StreamPoller(None, "arn", invoke, StreamSettings(retry_delay_s=0, **settings))


def test_partial_failure_retries_from_the_first_failed_record() -> None:
    calls: list[list[int]] = []

    def invoke(event: dict) -> dict:
        batch = event["Records"]
        calls.append(seqs(batch))
        if len(calls) == 1:  # records 3 and 5 fail the first time
            return {"batchItemFailures": [{"itemIdentifier": batch[5]["dynamodb"]["SequenceNumber"]},
                                          {"itemIdentifier": batch[3]["dynamodb"]["SequenceNumber"]}]}
        return {"batchItemFailures": []}

    p = poller(invoke)
    p.deliver(records(8))
    assert calls == [list(range(8)), [3, 4, 5, 6, 7]]
    assert p.stats.records_delivered == 8 and p.stats.retries == 1


def test_function_error_bisects_until_the_poison_record_is_isolated() -> None:
    calls: list[list[int]] = []

    def invoke(event: dict) -> dict:
        calls.append(seqs(event["Records"]))
        if 5 in calls[-1]:
            raise RuntimeError("boom")
        return {"batchItemFailures": []}

    p = poller(invoke, max_retries=2)
    p.deliver(records(8))
    assert calls[:4] == [list(range(8)), [0, 1, 2, 3], [4, 5, 6, 7], [4, 5]]
    assert [4] in calls and [6, 7] in calls
    assert [seqs(b) for b in p.stats.failed_batches] == [[5]]
    assert calls.count([5]) == 3  # the first try and two retries
    assert p.stats.records_delivered == 7


def test_unknown_item_identifier_fails_the_whole_batch() -> None:
    calls: list[list[int]] = []

    def invoke(event: dict) -> dict:
        calls.append(seqs(event["Records"]))
        return {"batchItemFailures": [{"itemIdentifier": "nope"}]} if len(calls) == 1 else {}

    p = poller(invoke)
    p.deliver(records(3))
    assert calls == [[0, 1, 2], [0, 1, 2]]


def test_exhausted_retries_go_to_the_on_failure_destination() -> None:
    def invoke(event: dict) -> dict:
        return {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["dynamodb"]["SequenceNumber"]}]}

    p = poller(invoke, max_retries=3)
    p.deliver(records(4))
    assert [seqs(b) for b in p.stats.failed_batches] == [[3]]
