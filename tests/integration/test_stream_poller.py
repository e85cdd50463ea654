"""The local event source mapping reproduces Lambda's DynamoDB Streams semantics."""

from __future__ import annotations

import os
from typing import Any

import pytest

from meterline_local.stream_poller import FaultPlan, InjectedWriteError, StreamPoller, StreamSettings
from tests.conftest import scan_all


def records(n: int) -> list[dict[str, Any]]:
    return [{"eventID": str(i), "eventName": "INSERT", "dynamodb": {"SequenceNumber": f"{i:021d}"}}
            for i in range(n)]


def seqs(batch: list[dict[str, Any]]) -> list[int]:
    return [int(r["dynamodb"]["SequenceNumber"]) for r in batch]


def poller(invoke, faults: FaultPlan | None = None, **settings: Any) -> StreamPoller:
    return StreamPoller(None, "arn", invoke, StreamSettings(retry_delay_s=0, **settings), faults=faults)


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


# --- fault injection ---------------------------------------------------------------------------

USAGE = os.environ["USAGE_TABLE"]


def writing(client: Any, calls: list[list[int]]) -> Any:
    """A function that writes one item per record (pk: the record, sk: the invocation)."""

    def invoke(event: dict) -> dict:
        calls.append(seqs(event["Records"]))
        for seq in calls[-1]:
            client.put_item(TableName=USAGE, Item={"pk": {"S": f"r{seq}"}, "sk": {"S": str(len(calls))}})
        return {"batchItemFailures": []}

    return invoke


def landed(client: Any) -> set[tuple[int, int]]:
    """(record, invocation) of every item written."""
    return {(int(i["pk"]["S"][1:]), int(i["sk"]["S"])) for i in scan_all(client, USAGE)}


def test_fail_after_k_writes_lets_k_writes_land_and_refuses_the_rest(aws) -> None:
    calls: list[list[int]] = []
    p = poller(writing(aws, calls), faults=FaultPlan(fail_after_writes=2, client=aws))
    p.deliver(records(4))
    assert calls == [[0, 1, 2, 3], [0, 1], [2, 3]]  # failed part-way, then bisected
    assert landed(aws) == {(0, 1), (1, 1), (0, 2), (1, 2), (2, 3), (3, 3)}
    assert p.stats.writes == [2, 2, 2] and p.stats.faults_injected == 1 and p.stats.bisects == 1
    assert p.stats.records_delivered == 4 and p.stats.failed_batches == []


def test_fail_after_zero_writes_refuses_every_write_of_the_invocation(aws) -> None:
    calls: list[list[int]] = []
    p = poller(writing(aws, calls), bisect_on_error=False, faults=FaultPlan(fail_after_writes=0, client=aws))
    p.deliver(records(3))
    assert calls == [[0, 1, 2], [0, 1, 2]]
    assert landed(aws) == {(0, 2), (1, 2), (2, 2)}
    assert p.stats.writes == [0, 3] and p.stats.retries == 1


def test_a_refused_write_is_a_client_error_the_function_may_handle(aws) -> None:
    from botocore.exceptions import ClientError

    seen: list[str] = []

    def invoke(event: dict) -> dict:
        try:
            aws.put_item(TableName=USAGE, Item={"pk": {"S": "a"}, "sk": {"S": "b"}})
        except ClientError as exc:
            seen.append(exc.response["Error"]["Code"])
            assert isinstance(exc, InjectedWriteError)
            raise
        return {}

    p = poller(invoke, faults=FaultPlan(fail_after_writes=0, client=aws))
    p.deliver(records(1))
    assert seen == ["InternalServerError"] and p.stats.invocations == 2


def test_crash_after_a_write_lands_it_and_cannot_be_swallowed(aws) -> None:
    calls: list[list[int]] = []
    write = writing(aws, calls)

    def invoke(event: dict) -> dict:
        try:
            return write(event)
        except Exception:  # a function that swallows errors still dies with its process
            return {"batchItemFailures": []}

    p = poller(invoke, faults=FaultPlan(crash_after_write=2, invocations=frozenset({1, 3}), client=aws))
    p.deliver(records(4))
    # invocation 1 died after its 2nd write landed; bisected: [0, 1] went fine, [2, 3] died after its 2nd
    # write too and was bisected again
    assert calls == [[0, 1, 2, 3], [0, 1], [2, 3], [2], [3]]
    assert landed(aws) == {(0, 1), (1, 1), (0, 2), (1, 2), (2, 3), (3, 3), (2, 4), (3, 5)}
    assert p.stats.writes == [2, 2, 2, 1, 1] and p.stats.faults_injected == 2 and p.stats.retries == 0
    assert p.stats.bisects == 2 and p.stats.records_delivered == 4


def test_injected_faults_hit_only_the_invocations_named(aws) -> None:
    calls: list[list[int]] = []
    p = poller(writing(aws, calls), bisect_on_error=False, max_retries=2,
               faults=FaultPlan(crash_after_write=1, invocations=None, client=aws))
    p.deliver(records(2))
    assert calls == [[0, 1]] * 3 and p.stats.faults_injected == 3
    assert [seqs(b) for b in p.stats.failed_batches] == [[0, 1]]  # every try died: the on-failure destination
    # the hooks are gone once the invocation is over
    aws.put_item(TableName=USAGE, Item={"pk": {"S": "r9"}, "sk": {"S": "9"}})


def test_processed_records_reported_as_failed_are_retried_from_there(aws) -> None:
    calls: list[list[int]] = []
    p = poller(writing(aws, calls), faults=FaultPlan(report_failures_from=2, client=aws))
    p.deliver(records(5))
    assert calls == [[0, 1, 2, 3, 4], [2, 3, 4]]
    assert p.stats.faults_injected == 1 and p.stats.retries == 1 and p.stats.records_delivered == 5


def test_redelivery_of_succeeded_batches_in_every_shape(aws) -> None:
    calls: list[list[int]] = []

    def invoke(event: dict) -> dict:
        calls.append(seqs(event["Records"]))
        return {"batchItemFailures": []}

    plan = FaultPlan(redeliver=("whole", "first_half", "second_half", "shifted"), client=aws)
    p = poller(invoke, batch_size=4, faults=plan)
    p.deliver_records(records(7))
    assert calls == [
        [0, 1, 2, 3], [0, 1, 2, 3], [0, 1], [2, 3], [2, 3, 4, 5],
        [4, 5, 6], [4, 5, 6], [4], [5, 6], [5, 6],
    ]
    assert p.stats.redeliveries == 8 and p.stats.writes == [0] * 10


def test_without_a_plan_nothing_is_hooked(aws) -> None:
    calls: list[list[int]] = []
    p = poller(writing(aws, calls))
    p.deliver(records(2))
    assert p.stats.writes == [] and p.stats.faults_injected == 0 and landed(aws) == {(0, 1), (1, 1)}


@pytest.mark.parametrize("bad", [{"fail_after_writes": -1}, {"crash_after_write": 0}, {"report_failures_from": -1},
                                 {"redeliver": ("twice",)}])
def test_fault_plans_are_checked(bad: dict) -> None:
    with pytest.raises(ValueError):
        FaultPlan(**bad)
