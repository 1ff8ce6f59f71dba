"""The SQLite store of the embedded JobStore: maggma's Store contract (checked against
maggma's MemoryStore, i.e. mongomock), jobflow runs on it, several processes writing at
once, and lookups that read only the documents they select."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import sqlite3
import threading
import time
from datetime import datetime, timedelta

import numpy as np
import pytest
from maggma.stores import MemoryStore
from pymatgen.core import Lattice

from tdphonon import sqlite_store
from tdphonon.sqlite_store import SQLiteStore
from tdphonon.stores import (
    EMBEDDED_STORE_FILE,
    KEY_FIELD,
    StoreConfigError,
    embedded_store,
    get_store,
    migrate_embedded_store,
    store_from_file,
)

T0 = datetime(2024, 1, 1, 12, 0, 0)


def sample_docs() -> list[dict]:
    """Documents with nested fields, arrays, nulls, booleans, numbers and datetimes."""
    docs = []
    for i in range(40):
        doc = {
            "task_id": i,
            "uuid": f"u{i % 13}",
            "index": 1 + i % 4,
            "value": float(i) / 3 if i % 7 else int(i),
            "flag": bool(i % 2),
            "when": T0 + timedelta(hours=i),
            "metadata": {KEY_FIELD: f"key{i % 5}", "formula": ["Al", "Cu", "Si"][i % 3]},
            "hosts": [f"flow{i % 3}", f"flow{i % 6}"],
            "output": {
                "@class": ["HarmonicPhononDoc", "SSCHATemperatureDoc"][i % 2],
                "temperature": [300.0, 800.0, None][i % 3],
                "history": [{"step": j, "ok": j % 2 == 0} for j in range(i % 3)],
            },
        }
        if i % 4 == 0:
            doc["tags"] = ["a", "b"] if i % 8 else ["b", "c"]
        if i % 9 == 0:
            doc["maybe"] = None
        if i % 10 == 1:
            doc["output"]["temperature"] = float("nan")
        docs.append(doc)
    return docs


CRITERIA = [
    {},
    {"uuid": "u3"},
    {"uuid": "u3", "index": 4},
    {"uuid": {"$in": ["u1", "u2", "nope"]}},
    {"index": 2.0},
    {"flag": True},
    {f"metadata.{KEY_FIELD}": "key2"},
    {f"metadata.{KEY_FIELD}": {"$in": ["key1", "key4"]}, "metadata.formula": "Cu"},
    {"metadata": {KEY_FIELD: "key2", "formula": "Si"}},
    {"hosts": "flow4"},
    {"hosts": ["flow1", "flow1"]},
    {"tags": "a"},
    {"tags": {"$exists": False}},
    {"tags": {"$all": ["a", "b"]}},
    {"maybe": None},
    {"maybe": {"$exists": True}},
    {"value": {"$gt": 5, "$lte": 9}},
    {"when": {"$gte": T0 + timedelta(hours=30)}},
    {"when": T0 + timedelta(hours=3)},
    {"output.@class": "SSCHATemperatureDoc", "output.temperature": 300.0},
    {"output.temperature": None},
    {"output.history.step": 1},
    {"output.history.1.ok": False},
    {"output.history": {"$elemMatch": {"step": 0, "ok": True}}},
    {"$or": [{"uuid": "u1"}, {"index": 3}]},
    {"$and": [{"uuid": {"$in": ["u1", "u5"]}}, {"value": {"$lt": 20}}]},
    {"uuid": {"$ne": "u1"}, "index": {"$nin": [1, 2]}},
    {"uuid": {"$regex": "^u1"}},
]

INDEXES = ["uuid", "index", "flag", "when", f"metadata.{KEY_FIELD}", "hosts", "tags", "maybe"]
INDEXES += ["output.@class", "output.temperature", "output.history.step"]


def reference_store(docs: list[dict]) -> MemoryStore:
    store = MemoryStore("reference")
    store.connect()
    store.update(docs)
    return store


def without_id(docs) -> list[dict]:
    return [{k: v for k, v in doc.items() if k != "_id"} for doc in docs]


def same(a: list, b: list) -> bool:
    """Equal lists of documents (NaN equal to NaN)."""
    return json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)


@pytest.fixture
def stores(tmp_path):
    docs = sample_docs()
    store = SQLiteStore(tmp_path / "s.sqlite", "docs", indexes=INDEXES)
    store.connect()
    store.update(docs)
    return store, reference_store(docs)


@pytest.mark.parametrize("criteria", CRITERIA, ids=[json.dumps(c, default=str) for c in CRITERIA])
def test_queries_match_mongomock(stores, criteria):
    store, reference = stores
    by_id = {"task_id": 1}
    expected = without_id(reference.query(criteria, sort=by_id))
    assert same(list(store.query(criteria, sort=by_id)), expected)
    assert store.count(criteria) == len(expected) == reference.count(criteria)
    if criteria == {}:
        assert len(expected) == 40
    assert sorted(store.distinct("uuid", criteria)) == sorted(reference.distinct("uuid", criteria))
    for field in ("hosts", "tags", "index"):
        got, want = store.distinct(field, criteria), reference.distinct(field, criteria)
        assert sorted(map(str, got)) == sorted(map(str, want)), field


def test_booleans_are_not_numbers(stores):
    """As in MongoDB (mongomock, the reference above, compares them as Python does)."""
    store, _ = stores
    assert store.count({"index": True}) == 0 and store.count({"flag": 1}) == 0
    assert store.count({"flag": True}) == 20 and store.count({"index": 1}) == 10


def test_sort_skip_limit_projection(stores):
    store, reference = stores
    for sort in [{"index": -1, "task_id": 1}, {"output.temperature": 1, "task_id": -1}]:
        for skip, limit in [(0, 0), (3, 5), (38, 10)]:
            got = [d["task_id"] for d in store.query({}, sort=sort, skip=skip, limit=limit)]
            want = [d["task_id"] for d in reference.query({}, sort=sort, skip=skip, limit=limit)]
            assert got == want, (sort, skip, limit)
    properties = ["uuid", "metadata.formula", "output.history.step", "output.@class"]
    got = list(store.query({"index": 3}, properties=properties, sort={"task_id": 1}))
    assert same(got, without_id(reference.query({"index": 3}, properties, sort={"task_id": 1})))
    assert set(got[0]) == {"uuid", "metadata", "output"} and set(got[0]["metadata"]) == {"formula"}
    excluded = store.query_one({"task_id": 5}, properties={"output": 0, "hosts": 0})
    assert "output" not in excluded and "hosts" not in excluded and excluded["uuid"] == "u5"
    one = store.query_one({"uuid": "u3"}, properties=["index"], sort={"index": -1})
    assert one == {"index": 4}
    groups = {json.dumps(k): len(v) for k, v in store.groupby("metadata.formula")}
    assert groups == {
        json.dumps({"metadata": {"formula": f}}): n for f, n in [("Al", 14), ("Cu", 13), ("Si", 13)]
    }


def test_update_remove_and_types(stores):
    store, _ = stores
    # upsert by the store's key, and by several fields
    store.update({"task_id": 3, "uuid": "new", "array": np.arange(3.0), "blob": b"\x00\x01"})
    assert store.count() == 40 and store.count({"uuid": "u3"}) == 2
    doc = store.query_one({"uuid": "new"})
    assert doc["array"] == [0.0, 1.0, 2.0] and doc["blob"] == b"\x00\x01"
    store.update({"task_id": 3, "uuid": "new", "lattice": Lattice.cubic(3.0), "t": (1, 2)})
    doc = store.query_one({"uuid": "new"})  # MSONable objects stored as their dicts
    assert doc["lattice"]["@class"] == "Lattice" and doc["t"] == [1, 2] and "array" not in doc
    replaced = {"uuid": "u3", "index": 1, "x": 1}  # was task 16
    store.update([replaced, {"uuid": "u3", "index": 9}], key=["uuid", "index"])
    assert store.count() == 41 and store.query_one({"uuid": "u3", "index": 1}) == replaced
    assert store.count({"task_id": 16}) == 0
    assert isinstance(store.query_one({"task_id": 7})["when"], datetime)
    assert np.isnan(store.query_one({"task_id": 1})["output"]["temperature"])
    # removal by an indexed field, by one the index does not answer alone, and all
    store.remove_docs({"uuid": {"$in": ["u1", "u2"]}})
    assert store.count({"uuid": {"$in": ["u1", "u2"]}}) == 0
    store.remove_docs({"value": {"$gt": 10}})
    assert store.count({"value": {"$gt": 10}}) == 0 and store.count() > 0
    store.remove_docs({})
    assert store.count() == 0 and store.distinct("uuid") == []
    store.insert([{"task_id": 1}, {"task_id": 1}])  # no replacing
    assert store.count({"task_id": 1}) == 2
    with pytest.raises(KeyError):
        store.update({"no_task_id": 1})


def test_indexes(tmp_path):
    from pymongo.errors import DuplicateKeyError

    store = SQLiteStore(tmp_path / "s.sqlite", "docs", key="task_id")
    store.connect()
    store.update([{"task_id": i, "name": f"n{i % 3}", "tag": i} for i in range(9)])
    assert store.ensure_index("name")  # built from the documents already there
    assert store.count({"name": "n1"}) == 3 and sorted(store.distinct("name")) == ["n0", "n1", "n2"]
    assert not store.ensure_index("name", unique=True)  # repeated values
    assert store.ensure_index("tag", unique=True)
    with pytest.raises(DuplicateKeyError):
        store.update({"task_id": 100, "tag": 4})
    assert store.count() == 9  # the failed write left nothing
    # another store object on the same file sees the index (and keeps it up to date)
    other = SQLiteStore(tmp_path / "s.sqlite", "docs", key="task_id")
    other.connect()
    other.update({"task_id": 20, "name": "n1", "tag": 20})
    assert store.count({"name": "n1"}) == 4
    with pytest.raises(ValueError, match="collection_name"):
        SQLiteStore(tmp_path / "s.sqlite", "_indexed_fields")


def test_serialisation_and_reopening(tmp_path):
    store = SQLiteStore(tmp_path / "sub" / "s.sqlite", "docs", indexes=["a"], key="k", timeout=5)
    store.connect()
    store.update([{"k": i, "a": i % 2} for i in range(5)])
    store.close()
    for copy in (SQLiteStore.from_dict(store.as_dict()), pickle.loads(pickle.dumps(store))):
        assert copy == store and copy.key == "k" and copy.indexes == ["a"] and copy.timeout == 5
        copy.connect()
        assert copy.count({"a": 1}) == 2 and copy.query_one({"k": 3})["a"] == 1
        copy.close()
    assert store.name == f"sqlite://{tmp_path / 'sub' / 's.sqlite'}/docs"
    assert store != SQLiteStore(tmp_path / "sub" / "s.sqlite", "other")
    with pytest.raises(Exception, match="connect"):
        store.count()


def test_job_store_file_and_embedded_layout(tmp_path):
    spec = tmp_path / "store.yaml"
    spec.write_text(
        f"docs_store:\n  type: SQLiteStore\n  database_path: {tmp_path / 'x.sqlite'}\n"
        "  collection_name: outputs\nadditional_stores:\n  data:\n    type: SQLiteStore\n"
        f"    database_path: {tmp_path / 'x.sqlite'}\n    collection_name: outputs_blobs\n"
    )
    store = store_from_file(spec)
    assert isinstance(store.docs_store, SQLiteStore) and store.docs_store.key == "uuid"
    store = get_store(tmp_path / "embedded")
    assert isinstance(store.docs_store, SQLiteStore)
    assert isinstance(store.additional_stores["data"], SQLiteStore)
    assert store.docs_store.database_path == str(tmp_path / "embedded" / EMBEDDED_STORE_FILE)
    assert f"metadata.{KEY_FIELD}" in store.docs_store.indexes


def test_in_memory_store_is_private_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    docs = sample_docs()
    first = SQLiteStore(sqlite_store.IN_MEMORY, "docs", indexes=INDEXES)
    second = SQLiteStore(sqlite_store.IN_MEMORY, "docs", indexes=INDEXES)
    first.connect()
    second.connect()
    first.update(docs)
    reference = reference_store(docs)
    criteria = {"uuid": {"$in": ["u1", "u2"]}, "index": {"$gt": 1}}
    by_id = {"task_id": 1}
    expected = without_id(reference.query(criteria, sort=by_id))
    assert same(list(first.query(criteria, sort=by_id)), expected) and expected
    assert second.count({}) == 0  # one database per store object
    assert first != second and first == first
    assert first.name == "sqlite://:memory:/docs"
    assert list(tmp_path.iterdir()) == []


def test_run_locally_with_arrays(tmp_path):
    """Plain jobflow: replaced jobs keep every index, arrays go to the data store."""
    from jobflow import Flow, JobStore, Response, job, run_locally

    @job(data="forces")
    def compute(n):
        return {"n": n, "forces": np.full((n + 1, 3), float(n))}

    @job
    def countdown(n):
        return Response(output=n, replace=countdown(n - 1)) if n else n

    def job_store():
        file = tmp_path / "jobs.sqlite"
        return JobStore(
            SQLiteStore(file, "outputs"), additional_stores={"data": SQLiteStore(file, "blobs")}
        )

    first, arrays = countdown(3), compute(2)
    run_locally(Flow([first, arrays]), store=job_store(), ensure_success=True, log=False)
    store = job_store()  # reopened from disk
    store.connect()
    stored = list(store.query({"uuid": first.uuid}, properties=["index", "output"]))
    assert sorted((d["index"], d["output"]) for d in stored) == [(1, 3), (2, 2), (3, 1), (4, 0)]
    assert store.get_output(first.uuid) == 0 and store.get_output(first.uuid, which="all") == [
        3,
        2,
        1,
        0,
    ]
    raw = store.query_one({"uuid": arrays.uuid}, load=False)
    assert "blob_uuid" in raw["output"]["forces"]
    output = store.get_output(arrays.uuid, load=True)
    np.testing.assert_array_equal(np.asarray(output["forces"]), np.full((3, 3), 2.0))
    assert store.additional_stores["data"].count({"job_uuid": arrays.uuid}) == 1


def test_tdphonon_run_flow(tmp_path):
    """An EMT SSCHA flow through run_flow on the embedded (SQLite) store, read back."""
    from pymatgen.core import Lattice, Structure

    from tdphonon.flows import SSCHAMaker
    from tdphonon.query import CampaignResults
    from tdphonon.schemas import SSCHATemperatureDoc
    from tdphonon.stores import load_output, run_flow

    al = Structure(
        Lattice(np.eye(3) * 4.05),
        ["Al"] * 4,
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    maker = SSCHAMaker(
        model="emt",
        relax_maker=None,
        supercell_matrix=[[0, 1, 1], [1, 0, 1], [1, 1, 0]],
        sscha_settings={"frequency_tolerance": 0.15, "seed": 1},
    )
    flow = maker.make(al, [300.0])
    harmonic, (result,) = run_flow(flow, embedded_store(tmp_path / "store"))
    assert harmonic["n_supercell_atoms"] == 8 and result["converged"]
    store = embedded_store(tmp_path / "store")  # reopened
    store.connect()
    chain = flow.output[0].uuid
    final = load_output(store, chain)  # arrays from the data store, decoded
    assert isinstance(final, SSCHATemperatureDoc) and final.converged
    np.testing.assert_allclose(final.force_constants, result["force_constants"])
    assert store.count({"uuid": chain}) == final.n_iterations >= 2
    (row,) = CampaignResults(store).materials()
    assert row["status"] == "completed" and row["temperatures_done"] == [300.0]


def _write_many(path: str, worker: int, n: int) -> None:
    """Worker of test_two_processes: its own documents, one transaction each, and upserts
    of documents the other worker writes too."""
    store = SQLiteStore(path, "docs", key="uuid", indexes=["worker"], timeout=120)
    store.connect()
    for i in range(n):
        store.update({"uuid": f"{worker}-{i}", "worker": worker, "i": i, "payload": [i] * 50})
        store.update({"uuid": f"shared-{i}", "worker": worker, "i": i})
    store.close()


def test_two_processes_lose_nothing(tmp_path):
    """Both create the file and its tables, then write at once (spawned processes)."""
    path = str(tmp_path / "shared.sqlite")
    context = multiprocessing.get_context("spawn")
    n = 150
    workers = [context.Process(target=_write_many, args=(path, w, n)) for w in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    store = SQLiteStore(path, "docs", key="uuid")
    store.connect()
    assert store.count() == 3 * n
    for w in (0, 1):
        assert store.count({"worker": w, "uuid": {"$regex": f"^{w}-"}}) == n
        assert sorted(d["i"] for d in store.query({"uuid": {"$regex": f"^{w}-"}})) == list(range(n))
    shared = [d["uuid"] for d in store.query({"uuid": {"$regex": "^shared-"}})]
    assert sorted(shared) == sorted(f"shared-{i}" for i in range(n))  # one each, no duplicates


def test_connect_waits_for_a_writer_to_switch_to_wal(tmp_path):
    """SQLite refuses the switch to WAL at once while another connection writes (no busy
    handler); connect retries until the writer commits instead of failing."""
    path = tmp_path / "rollback.sqlite"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE other (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO other VALUES (1)")
    committer = threading.Timer(0.5, writer.execute, args=("COMMIT",))
    committer.start()
    store = SQLiteStore(str(path), "docs", key="uuid", timeout=30)
    started = time.monotonic()
    store.connect()
    committer.join()
    assert time.monotonic() - started >= 0.4
    assert store._collection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.update({"uuid": "a"})
    assert store.count() == 1
    writer.close()


def test_lookups_read_only_what_they_select(tmp_path, monkeypatch):
    """A lookup by an indexed field decodes the documents it returns, not the store."""
    decoded = []
    decode = sqlite_store._decode

    def counting(text, tagged):
        decoded.append(1)
        return decode(text, tagged)

    store = embedded_store(tmp_path / "store")
    store.connect()
    docs = store.docs_store
    n = 3000
    docs.update(
        [
            {
                "uuid": f"job{i // 3}",
                "index": 1 + i % 3,
                "metadata": {KEY_FIELD: f"material{i // 30}"},
                "output": {"@class": "SSCHAIterationDoc", "values": list(range(30))},
            }
            for i in range(n)
        ],
        key=["uuid", "index"],
    )
    monkeypatch.setattr(sqlite_store, "_decode", counting)

    def decodes(action) -> int:
        decoded.clear()
        action()
        return len(decoded)

    assert decodes(lambda: docs.query_one({"uuid": "job500"})) == 1
    assert (
        decodes(lambda: store.query_one({"uuid": "job500"}, sort={"index": -1})) == 3
    )  # its 3 indices
    assert decodes(lambda: docs.query_one({"uuid": "job500", "index": 2})) == 1
    assert decodes(lambda: docs.count({f"metadata.{KEY_FIELD}": "material7"})) == 0
    keys = [f"material{i}" for i in range(0, 200, 2)]
    found = docs.distinct(f"metadata.{KEY_FIELD}", {f"metadata.{KEY_FIELD}": {"$in": keys}})
    assert sorted(found) == sorted(keys[:50])
    assert (
        decodes(
            lambda: docs.distinct(f"metadata.{KEY_FIELD}", {f"metadata.{KEY_FIELD}": {"$in": keys}})
        )
        == 0
    )
    assert (
        decodes(lambda: docs.update({"uuid": "job7", "index": 2, "new": 1}, key=["uuid", "index"]))
        == 0
    )
    assert decodes(lambda: docs.remove_docs({"uuid": "job8"})) == 0
    # a field without index is read from every document: the counter sees it
    assert decodes(lambda: docs.query_one({"output.values": 29, "nothing": 1})) == n - 3
    assert docs.count() == n - 3 and docs.query_one({"uuid": "job7", "index": 2})["new"] == 1


def test_montydb_store_is_read_and_migrated(tmp_path):
    """A folder written with MontyDB by earlier versions is opened as such, then converted."""
    from maggma.stores import MontyStore

    from tdphonon.stores import _montydb_job_store

    folder = tmp_path / "old"
    old = _montydb_job_store(folder)
    old.connect()
    old.update(
        [
            {"uuid": f"u{i}", "index": 1, "output": {"x": i}, "completed_at": "now"}
            for i in range(120)
        ]
    )
    old.additional_stores["data"].update({"blob_uuid": "b1", "data": [1.0, 2.0]}, key="blob_uuid")
    checkpoint = {"tdphonon_finetune_checkpoint": "u3", "checkpoint": "AAAA"}  # no blob_uuid
    old.additional_stores["data"].update(checkpoint, key="tdphonon_finetune_checkpoint")
    old.close()
    store = embedded_store(folder)
    assert isinstance(store.docs_store, MontyStore)
    store.connect()
    assert store.get_output("u7") == {"x": 7}
    with pytest.raises(StoreConfigError, match="no MontyDB"):
        migrate_embedded_store(tmp_path / "elsewhere")
    assert migrate_embedded_store(folder) == {"outputs": 120, "outputs_blobs": 2}
    with pytest.raises(StoreConfigError, match="migrated"):
        migrate_embedded_store(folder)
    store = embedded_store(folder)
    assert isinstance(store.docs_store, SQLiteStore)
    store.connect()
    assert store.count() == 120 and store.get_output("u7") == {"x": 7}
    data = store.additional_stores["data"]
    assert data.query_one({"blob_uuid": "b1"})["data"] == [1.0, 2.0]
    assert data.query_one({"tdphonon_finetune_checkpoint": "u3"}) == checkpoint
