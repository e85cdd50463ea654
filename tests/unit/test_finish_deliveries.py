"""Ending a sender batch's deliveries together (ReportsStore.finish_deliveries): transactions of at most 100
items, one counter update per run, and a delivery that has already ended left out, never counted twice."""

from __future__ import annotations

from meterline.domain.exports import Delivery, DeliveryStatus, Run, RunPhase, Trigger
from meterline.storage.reports_store import Finish, ReportsStore
from tests.fakes import CostModelDynamoDB

NOW = 1_715_000_000_000


def _store_with_runs(subjects: int) -> tuple[ReportsStore, list[Run]]:
    store = ReportsStore(client=CostModelDynamoDB({"catalog": ("pk", "sk")}), table="catalog")
    runs = [Run(id=f"run-{i}", report_id="rep", window_start_ms=NOW, window_end_ms=NOW + 1, trigger=Trigger.SCHEDULE,
                phase=RunPhase.DELIVERING, requested_ms=NOW, subjects=subjects) for i in range(2)]
    for run in runs:
        store.create_run("ns", run)
        store.add_deliveries("ns", run, [Delivery(f"s{k}", f"msg_{k}") for k in range(subjects)], NOW)
    return store, runs


def _finish(run: Run, subject: str, succeeded: bool = True) -> Finish:
    return Finish("ns", "rep", run.id, subject, succeeded, 1, 204 if succeeded else 500, None if succeeded else "500")


def test_a_large_batch_is_ended_in_transactions_of_at_most_100_items_with_one_counter_update_per_run() -> None:
    store, (first, second) = _store_with_runs(120)
    finishes = [_finish(first, f"s{k}", succeeded=k % 10 != 0) for k in range(120)] + [_finish(second, "s0")]
    calls: list[int] = []
    transact = store.client.transact_write_items
    store.client.transact_write_items = lambda TransactItems: (calls.append(len(TransactItems)),  # type: ignore
                                                                transact(TransactItems=TransactItems))[1]
    assert store.finish_deliveries(finishes, NOW) == set(range(121))
    assert calls == [100, 24]  # 99 deliveries + 1 run; 22 deliveries + 2 runs
    run = store.get_run("ns", "rep", first.id)
    assert run is not None and (run.succeeded, run.failed) == (108, 12)
    other = store.get_run("ns", "rep", second.id)
    assert other is not None and (other.succeeded, other.failed) == (1, 0)
    statuses = {d.subject: d.status for d in store.list_runs("ns", "rep", 10)[-1].deliveries}
    assert statuses["s0"] is DeliveryStatus.FAILED and statuses["s1"] is DeliveryStatus.SUCCEEDED


def test_deliveries_that_have_already_ended_are_left_out_and_the_rest_counted_once() -> None:
    store, (run, _) = _store_with_runs(5)
    assert store.finish_delivery("ns", "rep", run.id, "s2", succeeded=True, attempt=1, status_code=204, error=None,
                                 now_ms=NOW)
    ended = store.finish_deliveries([_finish(run, f"s{k}") for k in range(5)] + [_finish(run, "s4")], NOW)
    assert ended == {0, 1, 3, 4}  # s2 had ended; s4's second finish found it ended by its first
    stored = store.get_run("ns", "rep", run.id)
    assert stored is not None and (stored.succeeded, stored.failed) == (5, 0)
    assert store.finish_deliveries([_finish(run, "s0", succeeded=False)], NOW) == set()
    stored = store.get_run("ns", "rep", run.id)
    assert stored is not None and (stored.succeeded, stored.failed) == (5, 0)
