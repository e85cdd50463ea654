"""OpenMeter's dual-mode lists (features, entitlements, grants, subjects): with `page` or `pageSize` the
answer is `{totalCount, page, pageSize, items}`; without, a bare array cut by `limit` and `offset`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from meterline.domain.validation import QueryParameters, bounded_integer

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
DEFAULT_LIMIT = 100

T = TypeVar("T")


def _order(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in ("ASC", "DESC"):
        raise PydanticCustomError("order", "must be ASC or DESC")
    return value.upper()


# `order` of every list: ASC or DESC, any case.
SortOrder = Annotated[str, BeforeValidator(_order)]


class ListParameters(QueryParameters):
    """The paging and ordering parameters every dual-mode list takes."""

    page: Annotated[int | None, BeforeValidator(bounded_integer(1, 1_000_000))] = None
    page_size: Annotated[int | None, BeforeValidator(bounded_integer(1, MAX_PAGE_SIZE))] = Field(
        None, alias="pageSize")
    limit: Annotated[int, BeforeValidator(bounded_integer(1, MAX_PAGE_SIZE))] = DEFAULT_LIMIT
    offset: Annotated[int, BeforeValidator(bounded_integer(0, 10_000_000))] = 0
    order: SortOrder = "ASC"

    def answer(self, items: Sequence[T], key: Callable[[T], Any], shown: Callable[[T], Any]) -> Any:
        """`items` ordered by `key` (and `order`), as a page object or a bare array."""
        ordered = sorted(items, key=key, reverse=self.order == "DESC")
        if self.page is None and self.page_size is None:
            return [shown(item) for item in ordered[self.offset:self.offset + self.limit]]
        page, size = self.page or 1, self.page_size or DEFAULT_PAGE_SIZE
        chosen = ordered[(page - 1) * size:page * size]
        return {"totalCount": len(ordered), "page": page, "pageSize": size, "items": [shown(i) for i in chosen]}


def csv_values(value: Any) -> list[str] | None:
    """A repeatable query parameter (API Gateway joins repeats with commas) as its values."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise PydanticCustomError("values", "must be a string")
    return [part for part in value.split(",") if part]
