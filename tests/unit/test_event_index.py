from meterline.domain.event_index import EventRef


def test_refs_sort_by_time_then_ingestion_then_key() -> None:
    refs = [EventRef(2, 1, "s", "b", "x"), EventRef(1, 9, "s", "z", "x"), EventRef(2, 1, "s", "a", "x"),
            EventRef(2, 0, "t", "a", "y")]
    assert sorted(refs, key=EventRef.sort_key) == [refs[1], refs[3], refs[2], refs[0]]
