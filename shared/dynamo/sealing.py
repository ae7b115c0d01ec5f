"""Finding and replacing the secret fields of items and updates: pure, no keys, no I/O.

Which fields are secrets is declared per entity in ``mapping`` (``EntitySpec.secrets``, dotted
paths into the item such as ``vapi.api_key``). The repositories seal and open them with a box
(``shared.secret_box``) in three steps: `item_secrets` / `field_secrets` list what is there,
the box turns each value into its new form (sync or awaited, the only part that differs between
the two repositories), and `with_item_values` / `with_field_values` put the results back. Only the
dicts on a changed path are copied; the caller's item is never modified.

Two shapes are walked: a stored item in attribute-value form (``{"vapi": {"M": {"api_key":
{"S": ...}}}}``), and the plain values an UpdateItem sets (``{"vapi": {"api_key": ...}}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.secret_box import SecretRef

__all__ = ["field_secrets", "item_secrets", "with_field_values", "with_item_values"]

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]


def _item_leaf(item: Mapping[str, Any], path: str) -> str | None:
    *parents, leaf = path.split(".")
    node: Mapping[str, Any] | None = item
    for part in parents:
        node = (node.get(part) or {}).get("M") if node is not None else None
    value = (node.get(leaf) or {}).get("S") if node is not None else None
    return value if isinstance(value, str) else None


def item_secrets(item: Mapping[str, Any], paths: tuple[str, ...]) -> list[tuple[SecretRef, str]]:
    """The secrets present in a stored item, path by path (its ``pk``/``sk`` name them)."""
    if not paths:
        return []
    pk, sk = (str((item.get(name) or {}).get("S", "")) for name in ("pk", "sk"))
    found = []
    for path in paths:
        value = _item_leaf(item, path)
        if value:
            found.append((SecretRef(pk, sk, path), value))
    return found


def with_item_values(item: Item, values: Mapping[str, str]) -> Item:
    """A copy of ``item`` with the string at each path (from `item_secrets`) replaced."""
    out = dict(item)
    for path, value in values.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            inner = dict(node[part]["M"])
            node[part] = {"M": inner}
            node = inner
        node[leaf] = {"S": value}
    return out


def field_secrets(
    item_key: Mapping[str, Any], fields: Mapping[str, Any], paths: tuple[str, ...]
) -> list[tuple[SecretRef, str]]:
    """The secrets an update would set: ``fields`` maps attribute names to plain values."""
    if not paths:
        return []
    pk, sk = item_key["pk"]["S"], item_key["sk"]["S"]
    found = []
    for path in paths:
        *parents, leaf = path.split(".")
        node: Any = fields
        for part in parents:
            node = node.get(part) if isinstance(node, Mapping) else None
        value = node.get(leaf) if isinstance(node, Mapping) else None
        if isinstance(value, str) and value:
            found.append((SecretRef(pk, sk, path), value))
    return found


def with_field_values(fields: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``fields`` with the string at each path (from `field_secrets`) replaced."""
    out = dict(fields)
    for path, value in values.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            inner = dict(node[part])
            node[part] = inner
            node = inner
        node[leaf] = value
    return out
