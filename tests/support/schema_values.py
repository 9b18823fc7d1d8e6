"""Hypothesis strategies for any value a JSON schema admits, extremes included (huge and negative integers, infinite
and NaN numbers, naive datetimes and the years 1 and 9999, long strings): what a stranger or an old writer could have
put in the stream. Used to show that the folds are total: no event the schema admits makes one raise."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

_INTEGERS = st.one_of(
    st.integers(min_value=-3, max_value=1000),
    st.sampled_from([-(2**63), -1, 0, 1, 2**31, 2**53 + 1, 2**63, 10**30]),
    st.integers(),
)
_FLOATS = st.one_of(
    st.floats(min_value=-10.0, max_value=1e6),
    st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e308, -1e308, 5e-324, -0.0]),
    st.floats(),
)
_ZONES = st.sampled_from(
    [None, timezone.utc, timezone(timedelta(hours=23, minutes=59)), timezone(timedelta(hours=-23, minutes=-59))]
)
_DATETIMES = st.one_of(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 1, 2), timezones=st.just(timezone.utc)),
    st.datetimes(timezones=_ZONES),
    st.sampled_from([datetime.min, datetime.max, datetime.max.replace(tzinfo=timezone.utc)]),
)


def _text(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low = schema.get("minLength", 0)
    high = schema.get("maxLength")
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda s: len(s) >= low and (high is None or len(s) <= high)
        )
    short = st.text(min_size=low, max_size=min(high if high is not None else 40, 40))
    if high is None or high > 40:
        longer = st.integers(min_value=max(low, 41), max_value=min(high or 20_000, 20_000)).map(lambda n: "x" * n)
        return st.one_of(short, short, longer)
    return short


def values(schema: dict[str, Any], defs: dict[str, Any] | None = None, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of ``schema`` (pydantic's JSON schema of a model or union; ``$ref`` resolved in its ``$defs``)."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return st.deferred(lambda: values(defs[schema["$ref"].split("/")[-1]], defs, depth + 1))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([values(option, defs, depth) for option in schema[key]])
    kind = schema.get("type")
    if kind is None:  # Any
        return _json(depth)
    if isinstance(kind, list):
        return st.one_of([values({**schema, "type": k}, defs, depth) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None or high is not None:
            return st.integers(min_value=low, max_value=high)
        return _INTEGERS
    if kind == "number":
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None or high is not None:
            return st.floats(min_value=low, max_value=high, allow_nan=False)
        return _FLOATS
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date-time":
            return _DATETIMES
        if fmt == "date":
            return st.dates()
        return _text(schema)
    if kind == "array":
        items = schema.get("items", {})
        high = min(schema.get("maxItems", 4), 4)
        return st.lists(values(items, defs, depth + 1), min_size=min(schema.get("minItems", 0), high), max_size=high)
    if kind == "object":
        properties = schema.get("properties")
        if not properties:
            extra = schema.get("additionalProperties", {})
            inner = values(extra, defs, depth + 1) if isinstance(extra, dict) and extra else _json(depth + 1)
            return st.dictionaries(st.text(max_size=12), inner, max_size=3)
        required = set(schema.get("required", ()))
        fields = {name: values(sub, defs, depth + 1) for name, sub in properties.items()}
        return st.fixed_dictionaries(
            {name: fields[name] for name in fields if name in required},
            optional={name: fields[name] for name in fields if name not in required},
        )
    raise AssertionError(f"a schema this generator does not know: {schema}")


def _json(depth: int) -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), _INTEGERS, _FLOATS, st.text(max_size=20))
    if depth > 3:
        return leaves
    return st.recursive(
        leaves,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
        max_leaves=6,
    )
