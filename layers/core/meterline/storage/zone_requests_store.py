"""Which zone day phases usage queries ask for (meterline.domain.slots.ZoneDays), in the catalog table:
the functions that answer queries may write there, and the compactor reads it.

Layout: pk = "zonedays#requested", sk = "{phase in minutes, 4 digits}", with `requestedAt` (epoch ms) and
`expiresAt` (TTL, ZONE_REQUEST_MS after the request). One small partition for the whole stack: a phase is
built for every namespace once any query asks for it (it costs one slot write per subject with usage and
zone day, like the UTC day level), and dropped when nobody has asked for it for ZONE_REQUEST_MS.
"""

from __future__ import annotations

from meterline.domain.slots import ZONE_REQUEST_MS
from meterline.domain.timeutil import MINUTE_MS
from meterline.storage.dynamo import TableAdapter
from meterline.storage.tables import CATALOG_TABLE

ZONE_REQUESTS = "zonedays#requested"


class ZoneRequests(TableAdapter):
    spec = CATALOG_TABLE

    def request(self, phase_ms: int, now_ms: int) -> None:
        """Ask for the zone days of a phase (an overwrite: asking again renews the request)."""
        self.client.put_item(TableName=self.table, Item={
            "pk": {"S": ZONE_REQUESTS}, "sk": {"S": f"{phase_ms // MINUTE_MS:04d}"},
            "requestedAt": {"N": str(now_ms)}, "expiresAt": {"N": str((now_ms + ZONE_REQUEST_MS) // 1000)}})

    def requested(self, now_ms: int) -> dict[int, int]:
        """The phases asked for and not expired (TTL deletes expired items late): phase -> when."""
        return {int(item["sk"]["S"]) * MINUTE_MS: int(item["requestedAt"]["N"])
                for item in self.partition_items(ZONE_REQUESTS, consistent=False)
                if int(item["expiresAt"]["N"]) * 1000 > now_ms}
