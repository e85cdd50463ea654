"""Subjects: POST /api/v1/subjects (upsert a JSON array, 200), GET /api/v1/subjects,
GET/DELETE /api/v1/subjects/{idOrKey}."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from meterline.domain.meters import is_ulid
from meterline.domain.subjects import SubjectInput, subject_record
from meterline.domain.timeutil import parse_rfc3339, to_epoch_ms
from meterline.domain.validation import field_errors, invalid
from meterline.errors import FieldError, InvalidInput, NotFound
from meterline.services.meters import new_ulid
from meterline.storage.subjects_store import SubjectsStore

MAX_UPSERT = 100
_INPUTS = TypeAdapter(list[SubjectInput])


def parse_subjects(body: Any) -> list[SubjectInput]:
    """The body of an upsert: a JSON array of 1 to 100 subjects with distinct keys."""
    if not isinstance(body, list) or not 1 <= len(body) <= MAX_UPSERT:
        raise InvalidInput(f"the body must be a JSON array of 1 to {MAX_UPSERT} subjects",
                           [FieldError("subjects", f"must be an array of 1 to {MAX_UPSERT} subjects")])
    try:
        given = _INPUTS.validate_python(body)
    except ValidationError as exc:
        raise invalid(field_errors(exc, what="a subject", root="subject", indexed=True,
                                   aliases={name: info.alias or name
                                            for name, info in SubjectInput.model_fields.items()}),
                      "invalid subjects: ") from None
    keys = [subject.key for subject in given]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise InvalidInput(f"key {duplicates[0]!r} is given twice",
                           [FieldError("key", f"{key!r} is given twice") for key in duplicates])
    return given


def upsert_subjects(store: SubjectsStore, namespace: str, given: list[SubjectInput], now_ms: int
                    ) -> list[dict[str, Any]]:
    """Create or replace each subject by key; an existing subject keeps its id and createdAt."""
    records = []
    for subject in given:
        existing = store.get(namespace, subject.key)
        subject_id = existing["id"] if existing else new_ulid()
        created = to_epoch_ms(parse_rfc3339(existing["createdAt"])) if existing else now_ms
        records.append(subject_record(subject, subject_id, created, now_ms))
    store.put(namespace, records)
    return records


def _find(store: SubjectsStore, namespace: str, id_or_key: str) -> dict[str, Any]:
    found = store.get(namespace, id_or_key)
    if found is None and is_ulid(id_or_key):
        found = next((s for s in store.list(namespace) if s["id"] == id_or_key), None)
    if found is None:
        raise NotFound(f"there is no subject {id_or_key!r}", [FieldError("subjectIdOrKey", "no subject has this "
                                                                                          "id or key")])
    return found


def get_subject(store: SubjectsStore, namespace: str, id_or_key: str) -> dict[str, Any]:
    return _find(store, namespace, id_or_key)


def list_subjects(store: SubjectsStore, namespace: str) -> list[dict[str, Any]]:
    return sorted(store.list(namespace), key=lambda s: s["key"])


def delete_subject(store: SubjectsStore, namespace: str, id_or_key: str) -> None:
    """Forget a subject's name and metadata; its usage stays."""
    found = _find(store, namespace, id_or_key)
    if not store.delete(namespace, found["key"]):
        raise NotFound(f"there is no subject {id_or_key!r}")
