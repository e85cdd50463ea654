from meterline.domain.event_index import MAX_PAGE_BYTES, build_pages
from meterline.domain.events import StoredEvent
from meterline.domain.timeutil import parse_rfc3339, to_epoch_ms


def stored(i: int, time: str, namespace: str = "default", source: str = "s") -> StoredEvent:
    return StoredEvent(namespace, f"id-{i}", source, "prompt", "customer", to_epoch_ms(parse_rfc3339(time)),
                       0, None)


def test_pages_group_by_namespace_day_and_hour() -> None:
    events = [stored(1, "2024-01-01T00:10:00Z"), stored(2, "2024-01-01T00:59:59.999Z"),
              stored(3, "2024-01-01T01:00:00Z"), stored(4, "2023-12-31T23:00:00Z"),
              stored(5, "2024-01-01T00:20:00Z", namespace="other")]
    pages = build_pages(events, "batch")
    summary = sorted((p.namespace, p.day, p.hour, tuple(r.id for r in p.refs)) for p in pages)
    assert summary == [
        ("default", "2023-12-31", 23, ("id-4",)),
        ("default", "2024-01-01", 0, ("id-1", "id-2")),
        ("default", "2024-01-01", 1, ("id-3",)),
        ("other", "2024-01-01", 0, ("id-5",)),
    ]
    assert len({p.page_id for p in pages}) == len(pages)


def test_large_hours_are_split_into_bounded_pages() -> None:
    events = [stored(i, "2024-01-01T00:00:00Z", source="s" * 200) for i in range(3000)]
    pages = build_pages(events, "b")
    assert len(pages) > 1
    assert sum(len(p.refs) for p in pages) == 3000
    for page in pages:
        assert sum(48 + len(r.source) + len(r.id) + len(r.subject) for r in page.refs) <= MAX_PAGE_BYTES
