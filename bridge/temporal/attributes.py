"""Search attributes from plain Python values: the type each value gets in Temporal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from bridge.exceptions import BadInputError

__all__ = ["typed_search_attributes"]


def typed_search_attributes(values: Mapping[str, Any]) -> TypedSearchAttributes:
    """Type plain Python values as search attributes.

    ``str`` becomes a keyword, ``bool`` a bool, ``int`` an int, ``float`` a double,
    ``datetime`` (timezone-aware) a datetime and a sequence of ``str`` a keyword list.

    Args:
        values: Search attribute names and values, as resolved from an event.

    Returns:
        The typed search attributes.

    Raises:
        BadInputError: A value has no search attribute type (or is a naive datetime).
    """
    pairs: list[SearchAttributePair[Any]] = []
    for name, value in values.items():
        key: SearchAttributeKey[Any]
        # bool before int: bool is a subclass of int.
        if isinstance(value, bool):
            key = SearchAttributeKey.for_bool(name)
        elif isinstance(value, int):
            key = SearchAttributeKey.for_int(name)
        elif isinstance(value, float):
            key = SearchAttributeKey.for_float(name)
        elif isinstance(value, datetime):
            if value.tzinfo is None:
                raise BadInputError(f"search attribute {name!r}: datetime without timezone")
            key = SearchAttributeKey.for_datetime(name)
        elif isinstance(value, str):
            key = SearchAttributeKey.for_keyword(name)
        elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
            key = SearchAttributeKey.for_keyword_list(name)
            value = list(value)
        else:
            raise BadInputError(
                f"search attribute {name!r}: no search attribute type for {type(value).__name__}"
            )
        pairs.append(SearchAttributePair(key, value))
    return TypedSearchAttributes(pairs)
