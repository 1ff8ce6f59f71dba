"""Benchmark: database footprint of one material of a campaign, projected to 5,000.

Runs one material through the campaign path (``CampaignMaker`` -> ``flow_to_workflow``
-> FireWorks ``rapidfire``), with the LaunchPad and the JobStore's real ``MongoStore``
(documents) and ``GridFSStore`` (arrays) classes on an in-memory ``mongomock_ng`` client
(no MongoDB server is available here; ``--uri`` uses a real one). It then measures what
MongoDB would hold:

* docs store: BSON size of every output document (``bson.encode``), count and largest;
* GridFS data store: BSON size of the ``files`` and ``chunks`` documents (the chunks
  hold the JSON of each array), and the same for the same blobs written to a
  ``GridFSStore(compression=True)`` (zlib; the setting of ``workflows/jobflow.yaml``);
  per output field, the JSON and zlib sizes;
* FireWorks: BSON size of the material's ``fireworks``, ``launches`` and ``workflows``
  documents.

Sizes are before MongoDB's own block compression (WiredTiger snappy/zstd), so they are
upper bounds of the disk use. The projection multiplies by the number of materials:
array sizes grow with the supercell (force constants as N², snapshots as N x samples),
so it holds for materials of this supercell size and sample count.

Default material: diamond Si with the universal M3GNet (shared models folder or
``$TDPHONON_MODEL``), 10 Å supercell (2x2x2 of the conventional cell's primitive: 54 or
64 atoms as chosen by tdphonon), at 100, 300 and 600 K, default SSCHA settings.

Usage::

    python benchmarks/bench_footprint.py [--structure examples/Si.cif] [--model PATH|emt]
        [--temperatures 100 300 600] [--materials 5000] [--json PATH] [--uri mongodb://...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT.parent / "shared" / "models" / "M3GNet-MP-2021.2.8-PES"


def bson_size(document: dict) -> int:
    """Bytes of a document as MongoDB stores it (BSON)."""
    import bson

    return len(bson.encode(document))


def collection_bytes(collection, criteria: dict | None = None) -> tuple[int, int, int]:
    """(total BSON bytes, number of documents, largest document) of a pymongo collection."""
    sizes = [bson_size(doc) for doc in collection.find(criteria or {})]
    return sum(sizes), len(sizes), max(sizes, default=0)


def blob_fields(docs) -> dict[str, str]:
    """blob_uuid -> name of the output field that holds it (e.g. ``force_constants``)."""
    names: dict[str, str] = {}

    def walk(value, name):
        if isinstance(value, dict):
            if "blob_uuid" in value and "store" in value:
                names[value["blob_uuid"]] = name
                return
            for key, item in value.items():
                walk(item, key)
        elif isinstance(value, list):
            for item in value:
                walk(item, name)

    for doc in docs.query({}, properties=["output"]):
        walk(doc.get("output"), "output")
    return names


def use_mongomock() -> None:
    """Point FireWorks and maggma's pymongo clients at one shared in-memory client."""
    import fireworks.core.launchpad
    import maggma.stores.gridfs
    import maggma.stores.mongolike
    import mongomock_ng
    import mongomock_ng.gridfs

    mongomock_ng.gridfs.enable_gridfs_integration()
    client = mongomock_ng.MongoClient()

    def shared_client(*args, **kwargs):
        return client

    fireworks.core.launchpad.MongoClient = shared_client
    maggma.stores.mongolike.MongoClient = shared_client
    maggma.stores.gridfs.MongoClient = shared_client


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and return the results dictionary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--structure", default=str(ROOT / "examples" / "Si.cif"))
    parser.add_argument("--model", default=os.environ.get("TDPHONON_MODEL", str(DEFAULT_MODEL)))
    parser.add_argument("--temperatures", nargs="+", type=float, default=[100.0, 300.0, 600.0])
    parser.add_argument("--min-length", type=float, default=10.0)
    parser.add_argument("--tolerance", type=float, default=0.05, help="SSCHA tolerance, THz")
    parser.add_argument("--materials", type=int, default=5000, help="projection size")
    parser.add_argument("--uri", help="real MongoDB URI (default: in-memory mongomock)")
    parser.add_argument(
        "--json", default=str(ROOT / "benchmarks" / "results" / "bench_footprint.json")
    )
    args = parser.parse_args(argv)

    from fireworks import FWorker, LaunchPad
    from fireworks.core.rocket_launcher import rapidfire
    from jobflow import JobStore
    from maggma.stores import GridFSStore, MongoStore
    from threadpoolctl import threadpool_limits

    from tdphonon.campaign import CampaignMaker, submit_flows
    from tdphonon.flows import SSCHAMaker
    from tdphonon.query import CampaignResults
    from tdphonon.structures import read_structure

    model = args.model
    if model.lower() != "emt" and not Path(model).exists():
        sys.exit(f"model not found: {model} (set TDPHONON_MODEL or --model; 'emt' works)")
    database = f"tdphonon_footprint_{int(time.time())}"
    if args.uri:
        launchpad = LaunchPad(host=args.uri, uri_mode=True, name=f"{database}_fw")
        docs = MongoStore(database, "outputs", uri=args.uri)
        blobs = GridFSStore(database, "outputs_blobs", uri=args.uri)
    else:
        use_mongomock()
        launchpad = LaunchPad(host="localhost", port=27017, name=f"{database}_fw")
        docs = MongoStore(database, "outputs", host="localhost", port=27017)
        blobs = GridFSStore(database, "outputs_blobs", host="localhost", port=27017)
    launchpad.reset("", require_password=False)
    store = JobStore(docs, additional_stores={"data": blobs})

    structure = read_structure(args.structure)
    maker = CampaignMaker(
        sscha_maker=SSCHAMaker(
            model=model,
            min_length=args.min_length,
            sscha_settings={"frequency_tolerance": args.tolerance},
        ),
        temperatures=args.temperatures,
        heavy_category=None,
        light_category=None,
    )
    report = submit_flows([(Path(args.structure).stem, structure)], maker, launchpad, store)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, threadpool_limits(limits=1, user_api="blas"):
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            rapidfire(launchpad, FWorker(), strm_lvl="ERROR")
        finally:
            os.chdir(cwd)
    wall = time.perf_counter() - start

    store.connect()
    results = CampaignResults(store, launchpad)
    (row,) = results.materials()
    table = results.table()
    docs_bytes, n_docs, largest_doc = collection_bytes(docs._collection)
    files_bytes, n_blobs, _ = collection_bytes(blobs._files_collection)
    chunks_bytes, n_chunks, _ = collection_bytes(blobs._chunks_collection)
    fields = blob_fields(docs)
    json_bytes = zlib_bytes = largest_blob = 0
    by_field: dict[str, dict[str, int]] = {}
    for blob in blobs.query({}):
        raw = json.dumps(blob).encode()  # what GridFSStore writes (without compression)
        compressed = len(zlib.compress(raw))
        json_bytes += len(raw)
        zlib_bytes += compressed
        largest_blob = max(largest_blob, len(raw))
        entry = by_field.setdefault(
            fields.get(blob["blob_uuid"], "?"), {"n": 0, "json_bytes": 0, "zlib_bytes": 0}
        )
        entry["n"] += 1
        entry["json_bytes"] += len(raw)
        entry["zlib_bytes"] += compressed
    # the same blobs through a GridFSStore with compression=True (workflows/jobflow.yaml)
    if args.uri:
        zipped = GridFSStore(database, "outputs_blobs_zlib", uri=args.uri, compression=True)
    else:
        zipped = GridFSStore(
            database, "outputs_blobs_zlib", host="localhost", port=27017, compression=True
        )
    zipped.connect()
    zipped.update(list(blobs.query({})), key="blob_uuid")
    zipped_bytes = (
        collection_bytes(zipped._files_collection)[0]
        + collection_bytes(zipped._chunks_collection)[0]
    )
    fireworks_bytes = sum(
        collection_bytes(getattr(launchpad, name))[0]
        for name in ("fireworks", "launches", "workflows")
    )
    n_fireworks = launchpad.fireworks.count_documents({})
    gridfs_bytes = files_bytes + chunks_bytes
    per_material = {
        "docs_store_bytes": docs_bytes,
        "gridfs_bytes": gridfs_bytes,
        "gridfs_compressed_bytes": zipped_bytes,
        "fireworks_bytes": fireworks_bytes,
        "total_bytes": docs_bytes + gridfs_bytes + fireworks_bytes,
        "total_compressed_bytes": docs_bytes + zipped_bytes + fireworks_bytes,
    }
    projection = {k: v * args.materials for k, v in per_material.items()}
    result = {
        "benchmark": "database footprint per material",
        "material": Path(args.structure).stem,
        "formula": row["formula"],
        "status": row["status"],
        "model": Path(model).name if model.lower() != "emt" else "emt",
        "temperatures_K": args.temperatures,
        "frequency_tolerance_THz": args.tolerance,
        "supercell_atoms": None,
        "backend": "real MongoDB" if args.uri else "mongomock_ng (BSON sizes as stored)",
        "wall_time_s": round(wall, 1),
        "n_output_documents": n_docs,
        "largest_output_document_bytes": largest_doc,
        "n_blobs": n_blobs,
        "n_gridfs_chunks": n_chunks,
        "largest_blob_json_bytes": largest_blob,
        "blob_json_bytes": json_bytes,
        "blobs_by_field": by_field,
        "n_fireworks": n_fireworks,
        "per_material": per_material,
        "materials_projected": args.materials,
        "projection_bytes": projection,
        "projection_GB": {k: round(v / 1e9, 2) for k, v in projection.items()},
        "sscha": [
            {
                "temperature": r["temperature"],
                "n_iterations": r["n_iterations"],
                "n_force_evaluations": r["n_force_evaluations"],
                "converged": r["converged"],
            }
            for r in table.to_dict("records")
            if r.get("temperature") == r.get("temperature")
        ],
        "submission": report.summary(),
    }
    harmonic = store.query_one({"output.@class": "HarmonicPhononDoc"}, properties=["output"])
    if harmonic:
        result["supercell_atoms"] = harmonic["output"]["n_supercell_atoms"]

    mb = 1e6
    print(
        f"{result['formula']} ({result['model']}, {result['supercell_atoms']}-atom supercell, "
        f"{len(args.temperatures)} temperatures, {n_fireworks} FireWorks, {wall:.0f} s)"
    )
    print(
        f"  docs store   {docs_bytes / mb:8.2f} MB in {n_docs} documents "
        f"(largest {largest_doc / mb:.3f} MB; limit 16 MB)"
    )
    print(
        f"  GridFS       {gridfs_bytes / mb:8.2f} MB in {n_blobs} blobs "
        f"(GridFSStore compression=True: {zipped_bytes / mb:.2f} MB, "
        f"ratio {gridfs_bytes / max(zipped_bytes, 1):.1f})"
    )
    print(f"  FireWorks    {fireworks_bytes / mb:8.2f} MB")
    print(
        f"  per material {per_material['total_bytes'] / mb:8.2f} MB; "
        f"{args.materials} materials: {projection['total_bytes'] / 1e9:.1f} GB "
        f"(docs {projection['docs_store_bytes'] / 1e9:.1f} GB, "
        f"GridFS {projection['gridfs_bytes'] / 1e9:.1f} GB, "
        f"compressed GridFS {projection['gridfs_compressed_bytes'] / 1e9:.1f} GB); "
        f"with compression: {projection['total_compressed_bytes'] / 1e9:.1f} GB"
    )
    for name, entry in sorted(by_field.items(), key=lambda item: -item[1]["json_bytes"]):
        print(
            f"    {name:26s} {entry['n']:4d} blobs {entry['json_bytes'] / mb:8.2f} MB "
            f"(zlib {entry['zlib_bytes'] / mb:.2f} MB)"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
