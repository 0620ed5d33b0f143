"""Set-based reads and writes of model rows the caller holds locked, compiled once per shape.

The order path writes the same few columns of the same few tables for every order. Through
the ORM each `save(update_fields=...)` builds and compiles a query (a third of an order's
time in the profile of docs/performance.md); `bulk_update` builds a CASE expression per field
and row. Here the SQL is made once per (model, fields) from the model's own `_meta` — table,
columns and their database types — so it cannot drift from the models, and one statement
writes any number of rows (`UPDATE ... FROM unnest(arrays)`).

Values go through each field's `get_db_prep_save`, so what is stored is what `save()` would
store. No model signals are sent: the models written here have none (tests/integration/test_rows.py
checks that), and `auto_now` fields are stamped like `save()` stamps them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, TypeVar

from django.db import connection, models
from django.db.models.signals import post_save, pre_save
from django.utils import timezone

M = TypeVar("M", bound=models.Model)


@cache
def _update_sql(model: type[models.Model], fields: tuple[str, ...], key: str) -> tuple[str, tuple[models.Field, ...]]:
    meta = model._meta
    key_field = meta.pk if key == "pk" else meta.get_field(key)
    columns = [meta.get_field(name) for name in fields]
    qn = connection.ops.quote_name
    assignments = ", ".join(f"{qn(f.column)} = v.{qn(f.column)}" for f in columns)
    arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in (key_field, *columns))
    names = ", ".join(qn(f.column) for f in (key_field, *columns))
    # Identifiers and types come from the models' _meta (quoted), never from input: S608 does not apply.
    sql = (f"UPDATE {qn(meta.db_table)} AS t SET {assignments} FROM unnest({arrays}) AS v({names}) "  # noqa: S608
           f"WHERE t.{qn(key_field.column)} = v.{qn(key_field.column)}")
    return sql, (key_field, *columns)


def rows_update(rows: Sequence[M], fields: Iterable[str], *, key: str = "pk", now: datetime | None = None) -> int:
    """Write `fields` of `rows` (instances of one model) with one UPDATE; returns the rows written.

    `key`: the column that finds each row (default the primary key; a unique field otherwise).
    `auto_now` fields among `fields` get `now` (default: the current time), in the instances too.
    """
    if not rows:
        return 0
    model = type(rows[0])
    sql, columns = _update_sql(model, tuple(fields), key)
    stamp = None
    for field in columns[1:]:
        if getattr(field, "auto_now", False):
            stamp = stamp or now or timezone.now()
            for row in rows:
                setattr(row, field.attname, stamp)
    params: list[list[Any]] = [
        [field.get_db_prep_save(getattr(row, field.attname), connection) for row in rows] for field in columns
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


@cache
def _lock_sql(model: type[models.Model], keys: tuple[str, ...]) -> tuple[str, tuple[models.Field, ...]]:
    meta = model._meta
    fields = tuple(meta.get_field(name) for name in keys)
    qn = connection.ops.quote_name
    arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields)
    columns = ", ".join(qn(f.column) for f in fields)
    # Identifiers and types from the models' _meta (quoted), never from input.
    sql = (f"SELECT * FROM {qn(meta.db_table)} WHERE ({columns}) IN (SELECT * FROM unnest({arrays})) "  # noqa: S608
           f"ORDER BY {columns} FOR UPDATE")
    return sql, fields


def rows_lock(model: type[M], keys: Sequence[str], values: Iterable[tuple[Any, ...]]) -> list[M]:
    """Lock the rows of `model` whose `keys` columns match one of `values`, in `keys` order.

    One statement for any number of rows; the fixed order (sorted by `keys`) is what keeps two
    transactions that lock overlapping sets from deadlocking. Rows that do not exist are not
    created (the caller creates them and locks again).
    """
    wanted = sorted(set(values))
    if not wanted:
        return []
    sql, fields = _lock_sql(model, tuple(keys))
    params = [[field.get_db_prep_value(row[i], connection) for row in wanted] for i, field in enumerate(fields)]
    return list(model.objects.raw(sql, params))


def has_save_signals(model: type[models.Model]) -> bool:
    """True when something listens to `model`'s pre_save or post_save (rows_update would bypass it)."""
    return pre_save.has_listeners(model) or post_save.has_listeners(model)
