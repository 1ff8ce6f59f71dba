"""Benchmark: the embedded JobStore with K compounds, MontyDB (before) vs SQLite (now).

The documents are those of a real tdphonon run: a small EMT SSCHA flow (fcc Al,
8-atom supercell, no relaxation) is run once with :func:`tdphonon.stores.run_flow`
into an in-memory JobStore; its job documents and array blobs are then replicated for
K simulated compounds (new job and blob uuids everywhere, references included, and a
``tdphonon_key`` per compound) and written to an empty embedded store of each kind, in
the same layout as :func:`tdphonon.stores.embedded_store` (documents + ``data`` store):

* write: per job, its document (upsert by uuid and index) and its blobs (upsert by
  blob_uuid), as jobflow's ``JobStore.update`` does after each job;
* read: per job, its last output with the arrays loaded (``JobStore.query_one`` sorted by
  index, as ``get_output``), the number of documents of each compound (``count`` by
  ``metadata.tdphonon_key``), and once which of the K keys are in the store (``distinct``
  with ``$in``, as ``tdphonon.campaign.existing_keys``).

Times are the CPU time of the store calls (the wall time is recorded too: on a shared
machine it depends on the other processes). MontyDB's queries and upserts decode every
stored document, so its cost grows as K²: above ``--monty-max`` compounds it is not run,
and its time is extrapolated (a K + b K², fitted to the K measured) and marked so.

Usage::

    python benchmarks/bench_store.py [--compounds 10 30 100 1000] [--monty-max 30]
        [--json benchmarks/results/bench_store.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("montydb", "sqlite")


def template_documents(temperatures: list[float]) -> tuple[list[dict], list[dict], float]:
    """Job documents and blobs of one small EMT SSCHA run, and the seconds it took."""
    import numpy as np
    from jobflow import JobStore
    from maggma.stores import MemoryStore
    from pymatgen.core import Lattice, Structure

    from tdphonon.flows import SSCHAMaker
    from tdphonon.stores import run_flow

    fcc = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    al = Structure(Lattice(np.eye(3) * 4.05), ["Al"] * 4, fcc)
    maker = SSCHAMaker(
        model="emt",
        relax_maker=None,
        supercell_matrix=[[0, 1, 1], [1, 0, 1], [1, 1, 0]],
        sscha_settings={"frequency_tolerance": 0.15, "seed": 1},
    )
    store = JobStore(MemoryStore("docs"), additional_stores={"data": MemoryStore("blobs")})
    start = time.perf_counter()
    run_flow(maker.make(al, temperatures), store)
    seconds = time.perf_counter() - start
    strip = lambda doc: {k: v for k, v in doc.items() if k != "_id"}  # noqa: E731
    docs = [strip(d) for d in store.docs_store.query({})]
    blobs = [strip(b) for b in store.additional_stores["data"].query({})]
    return docs, blobs, seconds


def replicate(docs: list[dict], blobs: list[dict]) -> tuple[str, str]:
    """JSON of the documents and blobs of one more compound: every uuid is new."""
    doc_text, blob_text = json.dumps(docs), json.dumps(blobs)
    old = {d["uuid"] for d in docs} | {b["blob_uuid"] for b in blobs}
    old |= {h for d in docs for h in d.get("hosts") or []}
    for value in old:
        new = str(uuidlib.uuid4())
        doc_text, blob_text = doc_text.replace(value, new), blob_text.replace(value, new)
    return doc_text, blob_text


def new_store(kind: str, folder: Path):
    from tdphonon.stores import EMBEDDED_STORE_FILE, _montydb_job_store, sqlite_job_store

    if kind == "montydb":
        return _montydb_job_store(folder)
    return sqlite_job_store(folder / EMBEDDED_STORE_FILE)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def run_case(kind: str, template: tuple[list[dict], list[dict]], compounds: int) -> dict:
    """Write and read the documents of ``compounds`` compounds; seconds and sizes."""
    from tdphonon.stores import KEY_FIELD

    docs, blobs = template
    jobs: list[tuple[str, list[str], int]] = []  # key, job uuids, documents per compound
    with tempfile.TemporaryDirectory(prefix=f"bench_store_{kind}_") as tmp:
        folder = Path(tmp)
        store = new_store(kind, folder)
        store.connect()
        data = store.additional_stores["data"]
        write = cpu_write = 0.0  # the store's calls only (not making the copies)
        for k in range(compounds):
            key = f"material{k}"
            doc_text, blob_text = replicate(docs, blobs)
            job_docs, job_blobs = json.loads(doc_text), json.loads(blob_text)
            for doc in job_docs:
                doc["metadata"] = {**(doc.get("metadata") or {}), KEY_FIELD: key}
                mine = [
                    b
                    for b in job_blobs
                    if b["job_uuid"] == doc["uuid"] and b["job_index"] == doc["index"]
                ]
                start, cpu = time.perf_counter(), time.process_time()
                store.docs_store.update(doc, key=["uuid", "index"])
                if mine:
                    data.update(mine, key="blob_uuid")
                write += time.perf_counter() - start
                cpu_write += time.process_time() - cpu
            jobs.append((key, list(dict.fromkeys(d["uuid"] for d in job_docs)), len(job_docs)))
        start, cpu = time.perf_counter(), time.process_time()
        n_loaded = 0
        for key, uuids, n_docs in jobs:
            for job_uuid in uuids:
                output = store.query_one(
                    {"uuid": job_uuid}, properties=["output"], sort={"index": -1}, load=True
                )
                n_loaded += output is not None
            assert store.docs_store.count({f"metadata.{KEY_FIELD}": key}) == n_docs
        keys = [key for key, _, _ in jobs]
        found = store.docs_store.distinct(
            f"metadata.{KEY_FIELD}", {f"metadata.{KEY_FIELD}": {"$in": keys}}
        )
        assert sorted(found) == sorted(keys)
        read, cpu_read = time.perf_counter() - start, time.process_time() - cpu
        store.close()
        size = folder_bytes(folder)
    return {
        "compounds": compounds,
        "documents": compounds * len(docs),
        "blobs": compounds * len(blobs),
        "outputs_loaded": n_loaded,
        "write_s": round(write, 3),
        "read_s": round(read, 3),
        "write_cpu_s": round(cpu_write, 3),
        "read_cpu_s": round(cpu_read, 3),
        "disk_bytes": size,
        "measured": True,
    }


def extrapolate(measured: list[dict], compounds: int) -> dict:
    """MontyDB time for ``compounds`` from the measured cases: t = a K + b K² (each of its
    operations decodes the store), fitted (a, b >= 0) to the measured K."""
    import numpy as np
    from scipy.optimize import nnls

    sizes = np.array([m["compounds"] for m in measured], dtype=float)
    basis = np.stack([sizes, sizes**2], axis=1) if len(sizes) > 1 else (sizes**2)[:, None]
    target = np.array([compounds, compounds**2], dtype=float)[-basis.shape[1] :]
    result = {"compounds": compounds}
    for name in ("write_s", "read_s", "write_cpu_s", "read_cpu_s"):
        coefficients, _ = nnls(basis, np.array([m[name] for m in measured]))
        result[name] = round(float(target @ coefficients), 1)
    result["measured"] = False
    result["note"] = "not run: a K + b K^2 fitted to K = " + ", ".join(
        str(m["compounds"]) for m in measured
    )
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compounds", type=int, nargs="+", default=[10, 30, 100, 1000])
    parser.add_argument("--monty-max", type=int, default=30, help="largest K run on MontyDB")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 800.0])
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_store.json"
    )
    args = parser.parse_args(argv)

    docs, blobs, run_s = template_documents(args.temperatures)
    doc_bytes = sum(len(json.dumps(d)) for d in docs)
    blob_bytes = sum(len(json.dumps(b)) for b in blobs)
    print(
        f"one compound: {len(docs)} job documents ({doc_bytes / 1e3:.0f} kB JSON), "
        f"{len(blobs)} array blobs ({blob_bytes / 1e3:.0f} kB JSON); EMT run {run_s:.1f} s"
    )
    results: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for compounds in sorted(args.compounds):
        for kind in KINDS:
            if kind == "montydb" and compounds > args.monty_max:
                measured = [r for r in results[kind] if r["measured"]]
                results[kind].append(extrapolate(measured, compounds))
                case = results[kind][-1]
                print(
                    f"{kind:8s} K={compounds:5d}: write {case['write_cpu_s']:8.1f} s, read "
                    f"{case['read_cpu_s']:8.1f} s CPU ({case['note']})",
                    flush=True,
                )
                continue
            results[kind].append(run_case(kind, (docs, blobs), compounds))
            case = results[kind][-1]
            print(
                f"{kind:8s} K={compounds:5d}: write {case['write_cpu_s']:8.2f} s, read "
                f"{case['read_cpu_s']:8.2f} s CPU (wall {case['write_s']:.2f} s, "
                f"{case['read_s']:.2f} s), {case['disk_bytes'] / 1e6:7.1f} MB on disk",
                flush=True,
            )
    ratios = []
    print(f"\n{'K':>6s} {'write montydb/sqlite':>22s} {'read montydb/sqlite':>21s}  (CPU time)")
    for monty, sqlite in zip(results["montydb"], results["sqlite"], strict=True):
        ratio = {
            "compounds": sqlite["compounds"],
            "write": round(monty["write_cpu_s"] / sqlite["write_cpu_s"], 1),
            "read": round(monty["read_cpu_s"] / sqlite["read_cpu_s"], 1),
            "montydb_measured": monty["measured"],
        }
        ratios.append(ratio)
        mark = "" if monty["measured"] else "  (montydb extrapolated)"
        print(f"{ratio['compounds']:6d} {ratio['write']:22.1f} {ratio['read']:21.1f}{mark}")
    report = {
        "benchmark": "bench_store",
        "template": {
            "material": "fcc Al, EMT, 8-atom supercell, no relaxation",
            "temperatures": args.temperatures,
            "job_documents": len(docs),
            "blobs": len(blobs),
            "document_json_bytes": doc_bytes,
            "blob_json_bytes": blob_bytes,
        },
        "results": results,
        "ratios_montydb_over_sqlite": ratios,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.json}")
    return report


if __name__ == "__main__":
    main()
