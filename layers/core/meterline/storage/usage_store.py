"""The usage table: everything derived from the events (the event index now; counters later)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from meterline.domain.event_index import EventRef, IndexPage
from meterline.storage.dynamo import dynamodb_client, table_name
from meterline.storage.tables import USAGE_TABLE

_INDEX = "evidx"


def index_partition(namespace: str, day: str) -> str:
    return f"{namespace}#{_INDEX}#{day}"


class UsageStore:
    def __init__(self, client: Any = None, table: str | None = None, retention_days: int = 400) -> None:
        self._client = client
        self._table = table
        self._retention_s = retention_days * 86_400

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = dynamodb_client()
        return self._client

    @property
    def table(self) -> str:
        if self._table is None:
            self._table = table_name(USAGE_TABLE)
        return self._table

    def put_index_pages(self, pages: Sequence[IndexPage], now_ms: int) -> None:
        """Write index pages. A page's key is derived from its batch, so a redelivered batch
        overwrites its own pages instead of adding new ones."""
        expires = str(now_ms // 1000 + self._retention_s)
        for page in pages:
            self.client.put_item(
                TableName=self.table,
                Item={
                    "pk": {"S": index_partition(page.namespace, page.day)},
                    "sk": {"S": f"{page.hour:02d}#{page.page_id}"},
                    "refs": {"S": orjson.dumps([ref.as_row() for ref in page.refs]).decode()},
                    "expiresAt": {"N": expires},
                },
            )

    def iter_index_hours(self, namespace: str, day: str, max_hour: int, min_hour: int
                         ) -> Iterator[tuple[int, list[EventRef]]]:
        """Yield (hour, refs of all pages of that hour) for one day, newest hour first."""
        current_hour: int | None = None
        refs: list[EventRef] = []
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {
                ":pk": {"S": index_partition(namespace, day)},
                ":lo": {"S": f"{min_hour:02d}#"},
                ":hi": {"S": f"{max_hour:02d}#\U0010ffff"},
            },
            "ScanIndexForward": False,
        }
        while True:
            response = self.client.query(**request)
            for item in response.get("Items", []):
                hour = int(item["sk"]["S"][:2])
                if current_hour is not None and hour != current_hour:
                    yield current_hour, refs
                    refs = []
                current_hour = hour
                refs.extend(EventRef.from_row(row) for row in orjson.loads(item["refs"]["S"]))
            last = response.get("LastEvaluatedKey")
            if not last:
                break
            request["ExclusiveStartKey"] = last
        if current_hour is not None:
            yield current_hour, refs
