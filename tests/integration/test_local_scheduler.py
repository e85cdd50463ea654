"""The local scheduler fires the schedules moto's EventBridge Scheduler stores, as Scheduler would."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from meterline_local.scheduler import LocalScheduler

GROUP = "reports"
EXPORTER_ARN = "arn:aws:lambda:us-east-1:000000000000:function:exporter"
ROLE_ARN = "arn:aws:iam::000000000000:role/scheduler"


class FakeFunction:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.called = threading.Event()

    def invoke(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.called.set()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def client() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("scheduler", region_name="us-east-1")
        client.create_schedule_group(Name=GROUP)
        yield client


def create(client: Any, name: str, expression: str, *, target: str = EXPORTER_ARN, **extra: Any) -> None:
    client.create_schedule(
        Name=name, GroupName=GROUP, ScheduleExpression=expression, FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": target, "RoleArn": ROLE_ARN, "Input": json.dumps({"report": name})}, **extra,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_a_rate_schedule_fires_each_period_once_and_only_the_latest_missed_firing(client: Any) -> None:
    clock, exporter = Clock(), FakeFunction()
    start = clock.now + timedelta(minutes=1)
    create(client, "hourly", "rate(1 hour)", StartDate=start)
    scheduler = LocalScheduler(client, GROUP, {EXPORTER_ARN: exporter.invoke}, clock=clock)

    scheduler.tick()
    clock.now = start - timedelta(seconds=1)
    scheduler.tick()
    assert list(scheduler.fired) == []
    clock.now = start
    scheduler.tick()
    scheduler.tick()  # the same moment again: no second firing
    assert list(scheduler.fired) == [("hourly", start)]
    clock.now = start + timedelta(hours=3, minutes=20)  # three firings were missed
    scheduler.tick()
    assert list(scheduler.fired) == [("hourly", start), ("hourly", start + timedelta(hours=3))]
    assert wait_until(lambda: len(exporter.events) == 2)
    assert exporter.events == [{"report": "hourly"}, {"report": "hourly"}]


def test_a_changed_schedule_is_read_again_and_a_disabled_one_does_not_fire(client: Any) -> None:
    clock, exporter = Clock(), FakeFunction()
    start = clock.now + timedelta(minutes=1)
    create(client, "daily", "rate(1 day)", StartDate=start)
    scheduler = LocalScheduler(client, GROUP, {EXPORTER_ARN: exporter.invoke}, clock=clock)
    scheduler.tick()

    client.update_schedule(Name="daily", GroupName=GROUP, ScheduleExpression="rate(1 day)", StartDate=start,
                           FlexibleTimeWindow={"Mode": "OFF"}, State="DISABLED",
                           Target={"Arn": EXPORTER_ARN, "RoleArn": ROLE_ARN, "Input": "{}"})
    clock.now = start
    scheduler.tick()
    assert list(scheduler.fired) == []

    client.update_schedule(Name="daily", GroupName=GROUP, ScheduleExpression="rate(1 hour)", StartDate=start,
                           FlexibleTimeWindow={"Mode": "OFF"}, State="ENABLED",
                           Target={"Arn": EXPORTER_ARN, "RoleArn": ROLE_ARN, "Input": '{"report": "changed"}'})
    clock.now = start + timedelta(hours=1)  # the new period; the firing at `start` came before the change
    scheduler.tick()
    assert list(scheduler.fired) == [("daily", start + timedelta(hours=1))]
    assert wait_until(lambda: exporter.events == [{"report": "changed"}])


def test_end_date_one_time_schedules_and_delete_after_completion(client: Any) -> None:
    clock, exporter = Clock(), FakeFunction()
    start = clock.now + timedelta(minutes=1)
    once = (clock.now + timedelta(minutes=2)).replace(microsecond=0)
    create(client, "ending", "rate(1 hour)", StartDate=start, EndDate=start + timedelta(minutes=90))
    create(client, "once", f"at({once.strftime('%Y-%m-%dT%H:%M:%S')})", ActionAfterCompletion="DELETE")
    create(client, "cron", "cron(0 * * * ? *)")  # not fired locally: warned about, then ignored
    scheduler = LocalScheduler(client, GROUP, {EXPORTER_ARN: exporter.invoke}, clock=clock)
    scheduler.tick()

    clock.now = start + timedelta(hours=5)
    scheduler.tick()
    assert sorted(scheduler.fired) == [("ending", start + timedelta(hours=1)), ("once", once)]
    names = {s["Name"] for s in client.list_schedules(GroupName=GROUP)["Schedules"]}
    assert names == {"ending", "cron"}  # `once` completed and asked to be deleted
    scheduler.tick()
    assert len(scheduler.fired) == 2


def test_a_schedule_targeting_no_local_function_is_skipped(client: Any) -> None:
    clock = Clock()
    create(client, "elsewhere", "rate(1 minute)", StartDate=clock.now + timedelta(seconds=30),
           target="arn:aws:lambda:us-east-1:000000000000:function:unknown")
    scheduler = LocalScheduler(client, GROUP, {}, clock=clock)
    scheduler.tick()
    clock.now += timedelta(minutes=1)
    scheduler.tick()
    assert [name for name, _ in scheduler.fired] == ["elsewhere"]


def test_the_thread_fires_a_due_schedule_into_the_target_function_and_stops(client: Any) -> None:
    exporter = FakeFunction()
    scheduler = LocalScheduler(client, GROUP, {EXPORTER_ARN: exporter.invoke}, poll_interval_s=0.1)
    scheduler.start()
    try:
        create(client, "soon", "rate(1 minute)", StartDate=datetime.now(UTC) + timedelta(seconds=1))
        assert exporter.called.wait(5)
        assert exporter.events == [{"report": "soon"}]
    finally:
        scheduler.stop()
        scheduler.join(timeout=5)
    assert not scheduler.is_alive()
