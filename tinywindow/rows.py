"""Set-based reads and writes of model rows the caller holds locked, and hot reads, compiled once per shape.

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

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from django.db.models.query import get_related_populators
from django.db.models.signals import post_save, pre_save
from django.db.transaction import TransactionManagementError
from django.utils import timezone

M = TypeVar("M", bound=models.Model)


@cache
def _update_sql(model: type[models.Model], fields: tuple[str, ...], key: str,
                unchanged: tuple[str, ...] = ()) -> tuple[str, tuple[models.Field, ...]]:
    meta = model._meta
    key_field = meta.pk if key == "pk" else meta.get_field(key)
    columns = [meta.get_field(name) for name in fields]
    guards = [meta.get_field(name) for name in unchanged]
    qn = connection.ops.quote_name
    assignments = ", ".join(f"{qn(f.column)} = v.{qn(f.column)}" for f in columns)
    arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in (key_field, *columns, *guards))
    names = ", ".join([qn(f.column) for f in (key_field, *columns)] + [qn("was_" + f.column) for f in guards])
    # Identifiers and types come from the models' _meta (quoted), never from input: S608 does not apply.
    sql = (f"UPDATE {qn(meta.db_table)} AS t SET {assignments} FROM unnest({arrays}) AS v({names}) "  # noqa: S608
           f"WHERE t.{qn(key_field.column)} = v.{qn(key_field.column)}")
    sql += "".join(f" AND t.{qn(f.column)} IS NOT DISTINCT FROM v.{qn('was_' + f.column)}" for f in guards)
    if guards:
        sql += f" RETURNING t.{qn(key_field.column)}"
    return sql, (key_field, *columns, *guards)


def rows_update(rows: Sequence[M], fields: Iterable[str], *, key: str = "pk", now: datetime | None = None) -> int:
    """Write `fields` of `rows` (instances of one model) with one UPDATE; returns the rows written.

    `key`: the column that finds each row (default the primary key; a unique field otherwise).
    `auto_now` fields among `fields` get `now` (default: the current time), in the instances too.
    """
    if not rows:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(*_update_statement(rows, tuple(fields), key, (), now))
        return cursor.rowcount


def rows_update_unchanged(rows: Sequence[M], fields: Iterable[str], *, unchanged: Iterable[str],
                          key: str = "pk", now: datetime | None = None) -> set[Any]:
    """`rows_update` without a lock: each row is written only where its `unchanged` columns
    still hold the values the instance has (what the caller read, unlocked). Returns the keys
    of the rows written; a row missing from it was changed meanwhile (or deleted), and the
    caller decides again under a lock. One statement for any number of rows, where a lock per
    row would be three round trips each (SELECT ... FOR UPDATE, UPDATE, COMMIT)."""
    guards = tuple(unchanged)
    fields = tuple(fields)
    if not guards or set(guards) & set(fields):
        raise ValueError("`unchanged` must name columns that are not written")
    if not rows:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(*_update_statement(rows, fields, key, guards, now))
        return {value for (value,) in cursor.fetchall()}


def _update_statement(rows: Sequence[M], fields: tuple[str, ...], key: str, unchanged: tuple[str, ...],
                      now: datetime | None) -> tuple[str, list[list[Any]]]:
    model = type(rows[0])
    sql, columns = _update_sql(model, fields, key, unchanged)
    stamp = None
    for field in columns[1:len(fields) + 1]:
        if getattr(field, "auto_now", False):
            stamp = stamp or now or timezone.now()
            for row in rows:
                setattr(row, field.attname, stamp)
    params: list[list[Any]] = [
        [field.get_db_prep_save(getattr(row, field.attname), connection) for row in rows] for field in columns
    ]
    return sql, params


@cache
def _lock_sql(model: type[models.Model], keys: tuple[str, ...]) -> tuple[str, tuple[models.Field, ...]]:
    meta = model._meta
    fields = tuple(meta.get_field(name) for name in keys)
    qn = connection.ops.quote_name
    arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields)
    columns = ", ".join(qn(f.column) for f in fields)
    # The model's columns by name, not `*`: a prepared statement (settings: DB_PREPARED_STATEMENTS)
    # of `SELECT *` fails once a migration adds a column while the process runs ("cached plan
    # must not change result type"). Identifiers and types from the models' _meta (quoted).
    selected = ", ".join(qn(f.column) for f in meta.concrete_fields)
    sql = (f"SELECT {selected} FROM {qn(meta.db_table)} WHERE ({columns}) IN (SELECT * FROM unnest({arrays})) "  # noqa: S608
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


# --- reads of a fixed shape, compiled once ---------------------------------------------------------

# Probe values stand for a compiled query's parameters while it is compiled, then are found in
# its parameter list: unusual enough never to equal a constant of the query itself.
_PROBES: dict[type, Callable[[int], Any]] = {
    int: lambda i: -7_352_000_000_000_000 - i,
    str: lambda i: f"\x1ftinywindow-probe-{i}\x1f",
    datetime: lambda i: datetime(1901, 2, 3, 4, 5, 6, 700_000 + i, tzinfo=UTC),
    Decimal: lambda i: Decimal(f"-7352000000.{i + 1:010d}"),
}


class CompiledQuery:
    """A read whose shape never changes, built with the ORM and compiled to SQL once per process;
    each run binds new values. Django builds and compiles a queryset on every evaluation, which on
    the order path costs more than the query itself (about 0.3 ms against 0.2 ms for a one-row
    read on loopback, docs/performance.md).

        _HELD = CompiledQuery(lambda agent_id, symbol: Position.objects.filter(agent_id=agent_id,
                              symbol=symbol), agent_id=int, symbol=str)
        positions = _HELD.instances(agent_id=7, symbol="BTC/USDT")

    `build` gets one probe value per named parameter (of the type given: int, str, datetime or
    Decimal) and returns the queryset; the probes are then found in the compiled parameters, and
    each run puts the real values in their places. A parameter the ORM turns into something else
    (or drops) cannot be found: that is an error at first use, never a silently wrong query.
    Lists, None and LIMIT are part of the shape, not parameters. Rows come back through the same
    converters and model construction (`from_db`, `select_related`, annotations) as the ORM's.
    """

    def __init__(self, build: Callable[..., models.QuerySet], **parameters: type) -> None:
        unknown = [name for name, kind in parameters.items() if kind not in _PROBES]
        if unknown:
            raise TypeError(f"CompiledQuery parameters must be one of {sorted(t.__name__ for t in _PROBES)}: "
                            f"{', '.join(unknown)}")
        self._build = build
        self._parameters = parameters
        self._compiled: dict[str, tuple] = {}  # by database alias

    def _compile(self, using: str) -> tuple:
        probes = {name: _PROBES[kind](i) for i, (name, kind) in enumerate(self._parameters.items())}
        queryset = self._build(**probes).using(using)
        compiler = queryset.query.get_compiler(using=using)
        sql, params = compiler.as_sql()
        by_probe = {(type(value), value): name for name, value in probes.items()}
        slots = [by_probe.get((type(param), param)) for param in params]
        missing = set(probes) - set(slots)
        if missing:
            raise TypeError(f"CompiledQuery: parameter(s) {', '.join(sorted(missing))} not found in the compiled "
                            "query (transformed by the ORM?); pass them another way")
        locks = bool(queryset.query.select_for_update)
        # What SQLCompiler.results_iter works out on every call (a tenth of a millisecond for a
        # 26-column page): the columns' converters, usually none.
        converters = compiler.get_converters([column[0] for column in compiler.select[:compiler.col_count]])
        compiled = (sql, tuple(params), tuple(slots), compiler, queryset._iterable_class is models.query.ModelIterable,
                    locks, converters)
        self._compiled[using] = compiled
        return compiled

    def _fetch(self, values: dict[str, Any], using: str) -> tuple[Any, list[tuple]]:
        if set(values) != set(self._parameters):
            raise TypeError(f"CompiledQuery takes {', '.join(self._parameters)}; got {', '.join(values)}")
        db = connections[using]
        if not db.in_atomic_block and using in self._compiled and self._compiled[using][5]:
            # What Django checks when it compiles a select_for_update(): a lock outside a
            # transaction would be released at once. (The first compile checks it itself.)
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        sql, params, slots, compiler, _, _, converters = self._compiled.get(using) or self._compile(using)
        bound = [param if slot is None else values[slot] for param, slot in zip(params, slots, strict=True)]
        with db.cursor() as cursor:
            cursor.execute(sql, bound)
            rows = cursor.fetchall()
        if compiler.has_extra_select:  # columns selected only to order by (as the ORM trims them)
            rows = [row[:compiler.col_count] for row in rows]
        if converters:  # as results_iter() converts them (each row then a list)
            rows = list(compiler.apply_converters(rows, converters))
        return compiler, rows

    def rows(self, *, using: str = DEFAULT_DB_ALIAS, **values: Any) -> list[tuple]:
        """The selected columns of each row, converted as the ORM converts them (in select order)."""
        return self._fetch(values, using)[1]

    def instances(self, *, using: str = DEFAULT_DB_ALIAS, **values: Any) -> list[models.Model]:
        """Model instances, as iterating the queryset gives them (the queryset must return models)."""
        if not (self._compiled.get(using) or self._compile(using))[4]:
            raise TypeError("CompiledQuery.instances needs a queryset of models (not values())")
        compiler, rows = self._fetch(values, using)
        # What django.db.models.query.ModelIterable does with a compiler's rows.
        select, klass_info, annotation_col_map = compiler.select, compiler.klass_info, compiler.annotation_col_map
        model = klass_info["model"]
        first, last = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        attnames = [column[0].target.attname for column in select[first:last]]
        populators = get_related_populators(klass_info, select, using)
        objects = []
        for row in rows:
            obj = model.from_db(using, attnames, row[first:last])
            for populator in populators:
                populator.populate(row, obj)
            for name, position in annotation_col_map.items():
                setattr(obj, name, row[position])
            objects.append(obj)
        return objects


class PagedQuery:
    """A filtered list read that a keyset paginator (tinywindow.throttling.CursorPagination) pages
    through, compiled once per shape: which filters are given, the order, the cursor's
    comparison and the slice. Per request only the values change, so the ORM's compile of a
    26-column page (a seventh of `GET /api/orders`'s time, issue 10) is done once per process.

        ORDER_PAGES = PagedQuery(Order, lambda **filters: orders_list(base=ORDER_ROWS.base, **filters))
        page = paginator.paginate_queryset(ORDER_PAGES.where(agent_id=7, symbol="BTC/USDT"), request)

    `where()` stands in for the QuerySet that DRF's CursorPagination drives: `order_by()` (its
    ordering or the reverse), `filter()` of the ordering's first field against the cursor's
    position, and one slice, which runs the read (a CompiledQuery, so rows come back as the
    queryset's own would). Filter values are of CompiledQuery's parameter types; None means not
    given. Anything else DRF might ask of a QuerySet is an AttributeError, not
    a silently different page.
    """

    MAX_SHAPES = 512  # 7 optional filters × 3 cursor states × a few page sizes; beyond it, start again

    def __init__(self, model: type[models.Model], build: Callable[..., models.QuerySet]) -> None:
        self.model = model
        self._build = build
        self._shapes: dict[tuple, CompiledQuery] = {}

    def where(self, **filters: Any) -> _Page:
        return _Page(self, {name: value for name, value in filters.items() if value is not None})

    def _run(self, filters: dict[str, Any], ordering: tuple[str, ...], position: tuple[str, Any] | None,
             window: slice) -> list[tuple]:
        kinds = tuple(sorted((name, _probe_kind(value)) for name, value in filters.items()))
        lookup = None if position is None else position[0]
        shape = (kinds, ordering, lookup, window.start, window.stop)
        compiled = self._shapes.get(shape)
        if compiled is None:
            if len(self._shapes) >= self.MAX_SHAPES:
                self._shapes.clear()
            parameters = dict(kinds)
            if position is not None:
                parameters["cursor_position"] = _probe_kind(position[1])
            compiled = self._shapes[shape] = CompiledQuery(
                functools.partial(self._shape_queryset, ordering, lookup, window), **parameters)
        values = dict(filters)
        if position is not None:
            values["cursor_position"] = position[1]
        return compiled.rows(**values)

    def _shape_queryset(self, ordering: tuple[str, ...], lookup: str | None, window: slice,
                        **probes: Any) -> models.QuerySet:
        position = probes.pop("cursor_position", None)
        queryset = self._build(**probes).order_by(*ordering)
        if lookup is not None:
            queryset = queryset.filter(**{lookup: position})
        return queryset[window]


class _Page:
    """One request's PagedQuery.where(): what the paginator asked for, run at the slice."""

    def __init__(self, paged: PagedQuery, filters: dict[str, Any], ordering: tuple[str, ...] = (),
                 position: tuple[str, Any] | None = None) -> None:
        self.model = paged.model
        self._paged, self._filters, self._ordering, self._position = paged, filters, ordering, position

    def order_by(self, *fields: str) -> _Page:
        return _Page(self._paged, self._filters, tuple(fields), self._position)

    def filter(self, **lookup: Any) -> _Page:  # noqa: A003 - the QuerySet method it stands in for
        (name, value), = lookup.items()  # the cursor's one comparison
        field_name, _, comparison = name.rpartition("__")
        if self._position is not None or comparison not in ("lt", "gt") or not self._ordering \
                or field_name != self._ordering[0].lstrip("-"):
            raise TypeError(f"PagedQuery pages by its ordering's first field only, got filter({name}=...)")
        value = self.model._meta.get_field(field_name).to_python(value)
        return _Page(self._paged, self._filters, self._ordering, (name, value))

    def __getitem__(self, window: slice) -> list[tuple]:
        if not isinstance(window, slice) or window.step is not None or not self._ordering:
            raise TypeError("PagedQuery is read by one slice of an ordered page")
        return self._paged._run(self._filters, self._ordering, self._position, window)


def _probe_kind(value: Any) -> type:
    """The CompiledQuery parameter type of a filter value (bool, an int, is none of them)."""
    for kind in _PROBES:
        if isinstance(value, kind) and not isinstance(value, bool):
            return kind
    raise TypeError(f"PagedQuery filters take {', '.join(t.__name__ for t in _PROBES)} values, "
                    f"got {type(value).__name__}")


# --- sets of states fixed in the code, written into the SQL -----------------------------------------

_CONSTANT = re.compile(r"[A-Za-z_]+")


def constant_in(column: str, values: Iterable[str]) -> str:
    """`column IN ('a', 'b')` with the values written into the statement, for a set fixed in the
    code (order states, breaker states) that a query must find through an index whatever the plan.

    Every statement is prepared (DB_PREPARED_STATEMENTS) and, once it has run a few times in a
    connection, PostgreSQL may plan it once for any parameter value (a generic plan). It keeps that
    plan when it looks no dearer than the plans made for the values, which is what happens to an
    EXISTS or a LIMIT: for `status = $1` the plan guesses a share of rows from the column's number
    of distinct values alone, expects an early match, and scans the table. A partial index is then
    out of reach too (`$1` need not match its predicate). Seen: the engine's look for other
    `pending` orders took 0.35 ms for its first ten runs and 28–34 ms from then on, at 200,000
    orders; the gate's look for open breakers scanned 10,000 states per order (docs/scaling.md).
    With the values in the SQL, every plan knows them.

    `column` is SQL as written (quoted where needed); values must be plain words, since they are
    not parameters."""
    return f"{column} IN ({_literals(values)})"


def constant_in_filter(field: str, values: Iterable[str]) -> models.Func:
    """`constant_in` as an ORM condition on a model field, its table named the way the ORM names it
    wherever the condition lands (a subquery's U0 included): `.filter(constant_in_filter("status",
    ["pending"]))`."""
    return models.Func(models.F(field), template=f"%(expressions)s IN ({_literals(values)})",
                       output_field=models.BooleanField())


def _literals(values: Iterable[str]) -> str:
    values = sorted({str(value) for value in values})
    if not values or not all(_CONSTANT.fullmatch(value) for value in values):
        raise ValueError(f"constant_in takes plain words, not {values!r}")
    return ", ".join(f"'{value}'" for value in values)
