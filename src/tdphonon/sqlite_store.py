"""A maggma ``Store`` in one SQLite file: indexed lookups, several processes at once.

:class:`SQLiteStore` keeps each document as JSON text in a table of an SQLite database
(the standard library's :mod:`sqlite3`; no server). The values of the *indexed fields*
(the store's key, its ``last_updated_field`` and the ``indexes`` it is given, or later
:meth:`SQLiteStore.ensure_index`) go into a second table, one row per value (each element
of an array too, as MongoDB's multikey indexes), indexed by field and value. A query
takes its candidate documents from that table when its criteria name an indexed field
with a value or ``$in`` values, and decodes only those; the full MongoDB criteria are then
applied in Python (mongomock's filtering, the same as maggma's ``MemoryStore``). So
looking a job up by ``uuid`` costs the same in a store of ten documents or of a million,
while any criteria work (a field without index is a scan).

Several processes can read and write the same file: the database is in WAL mode (readers
do not wait for writers), each write is one transaction that waits up to ``timeout``
seconds for another process's, and an upsert (:meth:`SQLiteStore.update`) finds and
replaces its document inside that transaction. The file must be on a local disk (WAL
needs shared memory between processes: not on NFS). Several stores (collections) can
share one file, e.g. a jobflow ``JobStore``'s documents and its arrays.

Documents are stored as :func:`monty.json.jsanitize` leaves them (numpy arrays as lists,
``MSONable`` objects as their dicts, as maggma's ``MongoStore`` does); ``datetime``,
``bytes`` and ``ObjectId`` values come back as such (MongoDB extended JSON tags inside).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from maggma.core import Sort, Store, StoreError
from monty.json import jsanitize

__all__ = ["DEFAULT_TIMEOUT_S", "SQLiteStore"]

#: Seconds a write waits for another process's transaction before giving up.
DEFAULT_TIMEOUT_S = 60.0

#: Documents decoded per database round trip when a query reads them.
_BATCH = 64

#: Values of one ``$in`` per SQL statement (SQLite's limit on parameters is far above).
_MAX_IN = 500

#: Candidate rows counted, at most, to choose which indexed condition drives a lookup.
_ESTIMATE_LIMIT = 64

#: Name of the table listing the indexed fields of every collection of a file.
_INDEX_TABLE = "_indexed_fields"

_MISSING = object()
_INT64 = 2**63


# -- documents as JSON text -----------------------------------------------------------------


def _json_default(value: Any) -> Any:
    """MongoDB extended JSON for what jsanitize(allow_bson=True) leaves: datetime, bytes, ObjectId."""
    if isinstance(value, datetime):
        return {"$date": value.isoformat()}
    if isinstance(value, (bytes, bytearray)):
        return {"$binary": base64.b64encode(bytes(value)).decode("ascii")}
    from bson import ObjectId

    if isinstance(value, ObjectId):
        return {"$oid": str(value)}
    raise TypeError(f"cannot store a {type(value).__name__} in an SQLiteStore document")


def _object_hook(obj: dict) -> Any:
    if len(obj) == 1:
        ((tag, value),) = obj.items()
        if tag == "$date" and isinstance(value, str):
            return datetime.fromisoformat(value)
        if tag == "$binary" and isinstance(value, str):
            return base64.b64decode(value)
        if tag == "$oid" and isinstance(value, str):
            from bson import ObjectId

            return ObjectId(value)
    return obj


def _encode(doc: dict) -> tuple[dict, str, int]:
    """The document as stored, its JSON text, and 1 if it holds tagged values (else 0).

    What JSON holds as it is (jobflow's documents, sanitised already) is written without
    another pass of :func:`monty.json.jsanitize`; anything else (numpy arrays, MSONable
    objects) is sanitised first, as maggma's ``MongoStore`` does.
    """
    tagged = []

    def default(value: Any) -> Any:
        tagged.append(True)
        return _json_default(value)

    try:
        text = json.dumps(doc, default=default, separators=(",", ":"))
    except TypeError:
        doc, tagged = jsanitize(doc, allow_bson=True, recursive_msonable=True), []
        text = json.dumps(doc, default=default, separators=(",", ":"))
    return doc, text, int(bool(tagged))


def _decode(text: str, tagged: int) -> dict:
    return json.loads(text, object_hook=_object_hook) if tagged else json.loads(text)


# -- indexed values -------------------------------------------------------------------------

# Kinds of indexed values: MongoDB's equality never matches across kinds.
_STRING, _NUMBER, _BOOL, _DATE, _NULL, _OTHER = "s", "n", "b", "d", "z", "x"

#: Kinds whose SQL equality is MongoDB's equality (a lookup needs no check in Python).
_EXACT_KINDS = (_STRING, _NUMBER, _BOOL)


def _utc_iso(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat()


def _index_value(value: Any) -> tuple[str, Any]:
    """``(kind, SQL value)`` of a scalar; kind ``x`` for what is not indexed by value."""
    if value is None:
        return _NULL, 0
    if isinstance(value, bool):
        return _BOOL, int(value)
    if isinstance(value, str):
        return _STRING, value
    if isinstance(value, int):
        return (_NUMBER, value) if -_INT64 <= value < _INT64 else (_OTHER, "")
    if isinstance(value, float):
        return (_NUMBER, value) if not math.isnan(value) else (_OTHER, "")
    if isinstance(value, datetime):
        return _DATE, _utc_iso(value)
    return _OTHER, ""


def _field_values(doc: Any, parts: list[str]) -> Iterator[Any]:
    """The values of a dotted field in ``doc`` as MongoDB matches them.

    Arrays on the way are traversed (``a.b`` of ``{"a": [{"b": 1}, {"b": 2}]}`` is 1 and
    2; a numeric part also indexes the array), and an array at the end gives its elements.
    """
    if not parts:
        if isinstance(doc, (list, tuple)):
            yield from doc
        else:
            yield doc
        return
    if isinstance(doc, dict):
        if parts[0] in doc:
            yield from _field_values(doc[parts[0]], parts[1:])
    elif isinstance(doc, (list, tuple)):
        if parts[0].isdigit() and int(parts[0]) < len(doc):
            yield from _field_values(doc[int(parts[0])], parts[1:])
        for item in doc:
            if isinstance(item, dict):
                yield from _field_values(item, parts)


def _index_entries(doc: dict, fields: Iterable[str]) -> set[tuple[str, str, Any]]:
    """``(field, kind, value)`` of every indexed value of ``doc``."""
    entries = set()
    for field in fields:
        for value in _field_values(doc, field.split(".")):
            entries.add((field, *_index_value(value)))
    return entries


# -- criteria -------------------------------------------------------------------------------


def _wanted_values(condition: Any) -> tuple[list[tuple[str, Any]] | None, bool]:
    """The values a field must have under ``condition``, and whether that is all it says.

    Returns ``(None, False)`` when the condition is not equality or ``$in`` on scalars
    (then the index is of no use for it); the values are ``(kind, SQL value)``.
    """
    operators = isinstance(condition, dict) and any(str(k).startswith("$") for k in condition)
    if not operators:
        values, alone = [condition], True
    elif "$eq" in condition:
        values, alone = [condition["$eq"]], len(condition) == 1
    elif isinstance(condition.get("$in"), (list, tuple)):
        values, alone = list(condition["$in"]), len(condition) == 1
    else:
        return None, False
    wanted = []
    for value in values:
        kind, sql = _index_value(value)
        if kind in (_NULL, _OTHER):  # None also matches a missing field; lists, dicts...
            return None, False
        wanted.append((kind, sql))
        alone = alone and kind in _EXACT_KINDS
    return wanted, alone


def _conditions(
    criteria: dict | None, indexed: set[str]
) -> tuple[list[tuple[str, list[tuple[str, Any]]]], bool]:
    """Conditions on indexed fields that candidates must meet, and whether they are exact.

    Exact: the criteria say nothing else (no check in Python needed).
    """
    conditions: list[tuple[str, list[tuple[str, Any]]]] = []
    exact = True
    for field, condition in (criteria or {}).items():
        if field == "$and" and isinstance(condition, list):
            for part in condition:
                more, part_exact = _conditions(part if isinstance(part, dict) else None, indexed)
                conditions += more
                exact = exact and part_exact and isinstance(part, dict)
            continue
        if field.startswith("$") or field not in indexed:
            exact = False
            continue
        wanted, alone = _wanted_values(condition)
        if wanted is None:
            exact = False
            continue
        conditions.append((field, wanted))
        # a numeric part ('a.0.b') may match in ways the index does not reproduce exactly
        exact = exact and alone and not any(p.isdigit() for p in field.split("."))
    return conditions, exact


def _condition_sql(alias: str, field: str, wanted: list[tuple[str, Any]]) -> tuple[str, list]:
    """SQL for ``alias`` rows of the key table that hold one of the ``wanted`` values."""
    by_kind: dict[str, list] = {}
    for kind, value in wanted:
        by_kind.setdefault(kind, []).append(value)
    if not by_kind:
        return "0", []
    parts, params = [], [field]
    for kind, values in by_kind.items():
        marks = ",".join("?" * len(values))
        parts.append(f"({alias}.kind = ? AND {alias}.value IN ({marks}))")
        params += [kind, *values]
    return f"{alias}.field = ? AND ({' OR '.join(parts)})", params


def _project(doc: dict, properties: dict | None) -> dict:
    """MongoDB projection (inclusion or exclusion of dotted fields) of ``doc``."""
    if not properties:
        return doc
    spec: dict = {}
    include = None
    for field, flag in properties.items():
        if field == "_id":
            continue
        if include is not None and bool(flag) != include:
            raise ValueError("a projection cannot mix including and excluding fields")
        include = bool(flag)
        node = spec
        *parents, last = field.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if child is True:  # the whole parent is projected already
                break
            node = child
        else:
            node[last] = True
    if include is None:  # only _id
        if properties["_id"]:
            return {"_id": doc["_id"]} if "_id" in doc else {}
        return {k: v for k, v in doc.items() if k != "_id"}
    projected = _project_spec(doc, spec, include)
    if include and properties.get("_id", 1) and "_id" in doc:
        projected["_id"] = doc["_id"]
    elif not include and not properties.get("_id", 1):
        projected.pop("_id", None)
    return projected


def _project_spec(doc: dict, spec: dict, include: bool) -> dict:
    result = {}
    for key, value in doc.items():
        sub = spec.get(key, _MISSING)
        if isinstance(sub, dict):
            if isinstance(value, dict):
                result[key] = _project_spec(value, sub, include)
            elif isinstance(value, list):
                result[key] = [
                    _project_spec(item, sub, include) if isinstance(item, dict) else item
                    for item in value
                    if isinstance(item, dict) or not include
                ]
            elif not include:
                result[key] = value
        elif (sub is not _MISSING) == include:
            result[key] = value
    return result


def _sort(docs: list[dict], sort: dict[str, Sort | int]) -> list[dict]:
    """Documents in MongoDB's order for ``sort`` (missing values first when ascending)."""
    from mongomock.filtering import resolve_sort_key

    for field, direction in reversed(list(sort.items())):
        descending = (
            Sort(direction).value < 0 if isinstance(direction, int) else direction.value < 0
        )
        docs.sort(key=lambda doc, f=field: resolve_sort_key(f, doc), reverse=descending)
    return docs


def _switch_to_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Put the file in WAL mode, retrying for up to ``timeout`` s while it is locked.

    Leaving the rollback journal needs an exclusive lock, and SQLite answers "database is
    locked" at once, without its busy handler, when another connection holds a write lock
    (two processes creating the same file at the same moment).
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.1)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- the store ------------------------------------------------------------------------------

IN_MEMORY = ":memory:"
"""``database_path`` of a :class:`SQLiteStore` held in memory by its own connection."""


class SQLiteStore(Store):
    """A maggma Store in one SQLite file (no server; several processes can share it).

    Parameters
    ----------
    database_path : str
        The SQLite file (created with its folder if missing), or :data:`IN_MEMORY`
        (``":memory:"``): a database private to this store object and process, gone when
        it is closed (a fast scratch store, e.g. for one compound of a campaign).
    collection_name : str
        The collection (a table of the file; several stores may share a file).
    indexes : list of str, optional
        Dotted fields to index besides ``key`` and ``last_updated_field`` (queries by
        them decode only the documents they select).
    timeout : float
        Seconds a write waits for another process's write to finish.
    **kwargs
        ``key``, ``last_updated_field``, ``last_updated_type``, ``validator`` of
        :class:`maggma.core.Store`.

    Notes
    -----
    ``query`` and ``count`` take maggma's ``hint`` argument and ignore it. A query whose
    criteria use no indexed field (equality or ``$in``) decodes every document, and so
    does a sort (done in Python on the selected documents).
    """

    def __init__(
        self,
        database_path: str | os.PathLike,
        collection_name: str,
        indexes: list[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        if not collection_name or collection_name.startswith("_"):
            raise ValueError(
                f"collection_name must not be empty or start with '_': {collection_name!r}"
            )
        self.database_path = (
            IN_MEMORY
            if str(database_path) == IN_MEMORY
            else os.path.abspath(Path(database_path).expanduser())
        )
        self.collection_name = collection_name
        self.indexes = list(indexes or [])
        self.timeout = float(timeout)
        self.kwargs = kwargs
        self._connection: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.RLock()
        self._table = _quote(collection_name)
        self._keys = _quote(f"{collection_name}.keys")
        super().__init__(**kwargs)

    # -- connection -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """``sqlite://<file>/<collection>``."""
        return f"sqlite://{self.database_path}/{self.collection_name}"

    @property
    def _collection(self) -> sqlite3.Connection:
        """The sqlite3 connection (maggma's handle on the underlying database)."""
        if self._connection is None or self._pid != os.getpid():
            raise StoreError("connect the SQLiteStore before using it")
        return self._connection

    def connect(self, force_reset: bool = False) -> None:
        """Open the file (WAL mode) and create the collection's tables if missing.

        A connection opened by another process (this one was forked) is opened again.
        """
        with self._lock:
            if self._connection is not None and self._pid == os.getpid() and not force_reset:
                return
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None
            in_memory = self.database_path == IN_MEMORY
            if not in_memory:
                Path(self.database_path).parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.database_path,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                if not in_memory:
                    _switch_to_wal(connection, self.timeout)
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.execute("BEGIN IMMEDIATE")
                for statement in (
                    f"CREATE TABLE IF NOT EXISTS {self._table} (id INTEGER PRIMARY KEY, "
                    "doc TEXT NOT NULL, tagged INTEGER NOT NULL)",
                    f"CREATE TABLE IF NOT EXISTS {self._keys} (field TEXT NOT NULL, "
                    "kind TEXT NOT NULL, value NOT NULL, id INTEGER NOT NULL, "
                    "PRIMARY KEY (field, kind, value, id)) WITHOUT ROWID",
                    f"CREATE INDEX IF NOT EXISTS {_quote(self.collection_name + '.keys.id')} "
                    f"ON {self._keys} (id, field, kind, value)",
                    f"CREATE TABLE IF NOT EXISTS {_INDEX_TABLE} (collection TEXT NOT NULL, "
                    "field TEXT NOT NULL, is_unique INTEGER NOT NULL, "
                    "PRIMARY KEY (collection, field))",
                ):
                    connection.execute(statement)
                connection.execute("COMMIT")
            except BaseException:
                connection.close()
                raise
            self._connection, self._pid = connection, os.getpid()

    def close(self) -> None:
        """Close the connection (the data stays in the file)."""
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection, self._pid = None, None

    def __eq__(self, other: object) -> bool:
        """Same file, collection and ``last_updated_field`` (an in-memory store: itself)."""
        if not isinstance(other, SQLiteStore):
            return False
        if self.database_path == IN_MEMORY:
            return self is other
        fields = ["database_path", "collection_name", "last_updated_field"]
        return all(getattr(self, f) == getattr(other, f) for f in fields)

    def __hash__(self) -> int:
        return hash((self.name, self.last_updated_field))

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (waits for other writers up to ``timeout`` s)."""
        with self._lock:
            connection = self._collection
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    # -- indexes ----------------------------------------------------------------------------

    def _indexed(self, connection: sqlite3.Connection) -> dict[str, bool]:
        """Indexed field -> unique, as recorded in the file (any process may add one)."""
        rows = connection.execute(
            f"SELECT field, is_unique FROM {_INDEX_TABLE} WHERE collection = ?",
            (self.collection_name,),
        )
        return {field: bool(unique) for field, unique in rows}

    def _add_index(
        self, connection: sqlite3.Connection, field: str, unique: bool, indexed: dict[str, bool]
    ) -> bool:
        """Index ``field`` (inside a write transaction): every document is read once."""
        if field in indexed and (indexed[field] or not unique):
            return True
        if field not in indexed:
            rows = connection.execute(f"SELECT id, doc, tagged FROM {self._table}")
            for batch in iter(lambda: rows.fetchmany(_BATCH), []):
                entries = [
                    (f, kind, value, row_id)
                    for row_id, text, tagged in batch
                    for f, kind, value in _index_entries(_decode(text, tagged), [field])
                ]
                connection.executemany(
                    f"INSERT OR IGNORE INTO {self._keys} VALUES (?, ?, ?, ?)", entries
                )
        if (
            unique
            and connection.execute(
                f"SELECT 1 FROM {self._keys} WHERE field = ? AND kind != ? "
                "GROUP BY kind, value HAVING COUNT(*) > 1 LIMIT 1",
                (field, _OTHER),
            ).fetchone()
        ):
            if field not in indexed:  # keep the (non-unique) index just built
                connection.execute(
                    f"INSERT INTO {_INDEX_TABLE} VALUES (?, ?, 0)", (self.collection_name, field)
                )
                indexed[field] = False
            return False
        connection.execute(
            f"INSERT OR REPLACE INTO {_INDEX_TABLE} VALUES (?, ?, ?)",
            (self.collection_name, field, int(unique)),
        )
        indexed[field] = unique
        return True

    def ensure_index(self, key: str, unique: bool = False) -> bool:
        """Index the dotted field ``key`` (existing documents are read once to build it).

        Returns
        -------
        bool
            True if the index exists now; False for a unique index on values that repeat.
        """
        with self._write() as connection:
            return self._add_index(connection, key, unique, self._indexed(connection))

    def _own_fields(self) -> list[str]:
        fields = [self.key] if isinstance(self.key, str) else list(self.key)
        return [*fields, self.last_updated_field, *self.indexes]

    def _indexed_for_writing(
        self, connection: sqlite3.Connection, extra: Iterable[str] = ()
    ) -> dict[str, bool]:
        indexed = self._indexed(connection)
        for field in dict.fromkeys([*self._own_fields(), *extra]):
            if field not in indexed:
                self._add_index(connection, field, False, indexed)
        return indexed

    # -- reading ----------------------------------------------------------------------------

    def _candidates(
        self, connection: sqlite3.Connection, criteria: dict | None, indexed: Iterable[str] = ()
    ) -> tuple[list[int] | None, bool]:
        """Ids of the rows that may match ``criteria`` in insertion order (None: all rows),
        and whether exactly those match.

        ``indexed``: the indexed fields if known (else read from the file).
        """
        indexed = set(indexed) or set(self._indexed(connection))
        conditions, exact = _conditions(criteria, indexed)
        if not conditions:
            return None, exact
        # the condition that selects the fewest rows drives; the others are probed per row
        if len(conditions) > 1:

            def estimate(condition: tuple[str, list]) -> int:
                where, params = _condition_sql("k", condition[0], condition[1][:_MAX_IN])
                size = len(condition[1])
                sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM {self._keys} k WHERE {where} LIMIT ?)"
                found = connection.execute(sql, [*params, _ESTIMATE_LIMIT]).fetchone()[0]
                return found * max(1, size // _MAX_IN)

            conditions.sort(key=estimate)
        (field, wanted), others = conditions[0], conditions[1:]
        probes, probe_params = [], []
        for n, (other_field, other_wanted) in enumerate(others):
            if len(other_wanted) > _MAX_IN:
                exact = False  # checked in Python instead
                continue
            where, params = _condition_sql(f"k{n}", other_field, other_wanted)
            probes.append(
                f"EXISTS (SELECT 1 FROM {self._keys} k{n} WHERE k{n}.id = k.id AND {where})"
            )
            probe_params += params
        ids: set[int] = set()
        for start in range(0, max(1, len(wanted)), _MAX_IN):
            where, params = _condition_sql("k", field, wanted[start : start + _MAX_IN])
            sql = f"SELECT DISTINCT k.id FROM {self._keys} k WHERE " + " AND ".join(
                [where, *probes]
            )
            ids.update(row[0] for row in connection.execute(sql, [*params, *probe_params]))
        return sorted(ids), exact

    def _rows(
        self, connection: sqlite3.Connection, ids: list[int] | None
    ) -> Iterator[tuple[int, dict]]:
        """``(id, document)`` of the rows ``ids`` (None: all rows), read in batches."""
        if ids is None:
            last = -1
            while True:
                with self._lock:
                    batch = connection.execute(
                        f"SELECT id, doc, tagged FROM {self._table} WHERE id > ? ORDER BY id LIMIT ?",
                        (last, _BATCH),
                    ).fetchall()
                if not batch:
                    return
                for row_id, text, tagged in batch:
                    yield row_id, _decode(text, tagged)
                last = batch[-1][0]
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            with self._lock:
                rows = connection.execute(
                    f"SELECT id, doc, tagged FROM {self._table} WHERE id IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY id",
                    chunk,
                ).fetchall()
            for row_id, text, tagged in rows:  # a row deleted meanwhile is skipped
                yield row_id, _decode(text, tagged)

    def _matching(
        self, connection: sqlite3.Connection, criteria: dict | None
    ) -> Iterator[tuple[int, dict]]:
        from mongomock.filtering import filter_applies

        with self._lock:
            ids, exact = self._candidates(connection, criteria)
        for row_id, doc in self._rows(connection, ids):
            if exact or filter_applies(criteria, doc):
                yield row_id, doc

    def query(
        self,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int = 0,
        limit: int = 0,
        hint: dict | None = None,
    ) -> Iterator[dict]:
        """Documents matching the MongoDB ``criteria``.

        Parameters
        ----------
        criteria : dict, optional
            MongoDB filter (equality or ``$in`` on indexed fields selects the documents
            read; everything else is checked on them).
        properties : list or dict, optional
            Fields to return (dotted; a dict of 1s, or of 0s to leave fields out).
        sort : dict, optional
            Field -> 1 (ascending) or -1 (descending).
        skip, limit : int
            Documents skipped, and returned at most (0: all).
        hint : dict, optional
            Ignored (MongoDB's index hint).
        """
        connection = self._collection
        if isinstance(properties, (list, tuple)):
            properties = {p: 1 for p in properties}
        if sort:
            docs = _sort([doc for _, doc in self._matching(connection, criteria)], sort)
            docs = docs[skip : skip + limit if limit else None]
        else:
            docs = (doc for _, doc in self._matching(connection, criteria))
            docs = itertools.islice(docs, skip, skip + limit if limit else None)
        for doc in docs:
            yield _project(doc, properties)

    def count(self, criteria: dict | None = None, hint: dict | None = None) -> int:
        """Number of documents matching ``criteria`` (``hint`` is ignored)."""
        connection = self._collection
        with self._lock:
            if not criteria:
                return connection.execute(f"SELECT COUNT(*) FROM {self._table}").fetchone()[0]
            ids, exact = self._candidates(connection, criteria)
            if exact and ids is not None:
                return len(ids)
        return sum(1 for _ in self._matching(connection, criteria))

    def distinct(self, field: str, criteria: dict | None = None, all_exist: bool = False) -> list:
        """Distinct values of ``field`` (array elements one by one) in matching documents."""
        connection = self._collection
        with self._lock:
            indexed = self._indexed(connection)
            ids, exact = self._candidates(connection, criteria)
            if field in indexed and exact and not any(p.isdigit() for p in field.split(".")):
                values = self._distinct_indexed(connection, field, ids)
                if values is not None:
                    return values
        values, seen = [], set()
        for _, doc in self._matching(connection, criteria):
            for value in _field_values(doc, field.split(".")):
                marker = (type(value).__name__, json.dumps(value, default=str, sort_keys=True))
                if marker not in seen:
                    seen.add(marker)
                    values.append(value)
        return values

    def _distinct_indexed(
        self, connection: sqlite3.Connection, field: str, ids: list[int] | None
    ) -> list | None:
        """Distinct values of an indexed field from the key table, None if some are not
        kept there by value (dicts, nested arrays)."""
        sql = f"SELECT DISTINCT kind, value FROM {self._keys} WHERE field = ?"
        if ids is None:
            rows = connection.execute(sql, (field,)).fetchall()
        else:
            rows = set()
            for start in range(0, len(ids), _MAX_IN):
                chunk = ids[start : start + _MAX_IN]
                rows.update(
                    connection.execute(
                        f"{sql} AND id IN ({','.join('?' * len(chunk))})", [field, *chunk]
                    )
                )
            rows = sorted(rows, key=repr)
        convert = {
            _STRING: lambda v: v,
            _NUMBER: lambda v: v,
            _BOOL: bool,
            _DATE: datetime.fromisoformat,
            _NULL: lambda v: None,
        }
        if any(kind not in convert for kind, _ in rows):
            return None
        return [convert[kind](value) for kind, value in rows]

    def groupby(
        self,
        keys: list[str] | str,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[tuple[dict, list[dict]]]:
        """Documents grouped by the values of ``keys`` (as maggma's ``MemoryStore``).

        Yields
        ------
        tuple
            The group's values of ``keys`` (a nested dict) and its documents.
        """
        from mongomock.filtering import BsonComparable, resolve_key
        from pydash import has, set_

        keys = [keys] if isinstance(keys, str) else list(keys)
        properties = list(properties.keys()) if isinstance(properties, dict) else properties
        fields = [*keys, *(properties or [])] if properties else None
        docs = [
            doc
            for doc in self.query(criteria=criteria, properties=fields, sort=sort)
            if all(has(doc, k) for k in keys)
        ]

        def values(doc: dict) -> tuple:
            return tuple(resolve_key(k, doc) for k in keys)

        groups: dict[str, tuple[tuple, list[dict]]] = {}
        for doc in docs:
            group = values(doc)
            marker = json.dumps(group, default=str, sort_keys=True)
            groups.setdefault(marker, (group, []))[1].append(doc)
        ordered = sorted(groups.values(), key=lambda item: [BsonComparable(v) for v in item[0]])
        for group, members in itertools.islice(ordered, skip, skip + limit if limit else None):
            key_doc: dict = {}
            for k, v in zip(keys, group, strict=True):
                set_(key_doc, k, v)
            yield key_doc, members

    # -- writing ----------------------------------------------------------------------------

    def update(self, docs: list[dict] | dict, key: list | str | None = None) -> None:
        """Insert documents, or replace those with the same ``key`` values (one transaction).

        Parameters
        ----------
        docs : dict or list of dict
            The documents (sanitised with :func:`monty.json.jsanitize`).
        key : str or list of str, optional
            Field(s) that identify a document (indexed if not yet); the store's ``key``
            when None.
        """
        key = key or self.key
        self._write_docs(docs, [key] if isinstance(key, str) else list(key))

    def insert(self, docs: list[dict] | dict) -> None:
        """Add documents without replacing any (e.g. copying another store; one transaction)."""
        self._write_docs(docs, None)

    def _write_docs(self, docs: list[dict] | dict, keys: list[str] | None) -> None:
        """Upsert by ``keys``, or insert when None."""
        docs = docs if isinstance(docs, list) else [docs]
        prepared = []
        for doc in docs:
            doc, text, tagged = _encode(doc)
            if self.validator and not self.validator.is_valid(doc):
                if self.validator.strict:
                    raise ValueError(self.validator.validation_errors(doc))
                self.logger.error(self.validator.validation_errors(doc))
                continue
            search = None if keys is None else {k: doc[k] for k in keys}
            prepared.append((search, doc, text, tagged))
        if not prepared:
            return
        from pymongo.errors import DuplicateKeyError

        with self._write() as connection:
            indexed = self._indexed_for_writing(connection, keys or [])
            fields = list(indexed)
            for search, doc, text, tagged in prepared:
                row_id = None
                if search is not None:
                    ids, exact = self._candidates(connection, search, fields)
                    if exact and ids is not None:
                        row_id = ids[0] if ids else None
                    else:
                        row_id = next((i for i, _ in self._matching(connection, search)), None)
                if row_id is None:
                    row_id = connection.execute(
                        f"INSERT INTO {self._table} (doc, tagged) VALUES (?, ?)", (text, tagged)
                    ).lastrowid
                else:
                    connection.execute(
                        f"UPDATE {self._table} SET doc = ?, tagged = ? WHERE id = ?",
                        (text, tagged, row_id),
                    )
                    connection.execute(f"DELETE FROM {self._keys} WHERE id = ?", (row_id,))
                entries = _index_entries(doc, fields)
                connection.executemany(
                    f"INSERT INTO {self._keys} VALUES (?, ?, ?, ?)",
                    [(*entry, row_id) for entry in entries],
                )
                for field, kind, value in entries:
                    if (
                        indexed[field]
                        and kind != _OTHER
                        and connection.execute(
                            f"SELECT 1 FROM {self._keys} WHERE field = ? AND kind = ? AND value = ? "
                            "AND id != ? LIMIT 1",
                            (field, kind, value, row_id),
                        ).fetchone()
                    ):
                        raise DuplicateKeyError(
                            f"{self.name}: another document has {field} = {value!r}"
                        )

    def remove_docs(self, criteria: dict) -> None:
        """Delete the documents matching ``criteria``."""
        with self._write() as connection:
            if not criteria:
                connection.execute(f"DELETE FROM {self._table}")
                connection.execute(f"DELETE FROM {self._keys}")
                return
            ids, exact = self._candidates(connection, criteria)
            if not (exact and ids is not None):
                ids = [i for i, _ in self._matching(connection, criteria)]
            for start in range(0, len(ids), _MAX_IN):
                chunk = ids[start : start + _MAX_IN]
                marks = ",".join("?" * len(chunk))
                connection.execute(f"DELETE FROM {self._table} WHERE id IN ({marks})", chunk)
                connection.execute(f"DELETE FROM {self._keys} WHERE id IN ({marks})", chunk)
