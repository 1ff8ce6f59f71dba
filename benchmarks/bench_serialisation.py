"""Benchmark: the store round trip of one SSCHA population, packed arrays (now) vs lists.

Every SSCHA iteration of a campaign crystal writes one job output holding a population of
snapshots (displacements, forces, energies and the force constants that generated them),
and the next iteration reads the populations still in use back. This times that path with
jobflow's own code on the store a campaign worker uses (an in-memory SQLite JobStore,
:func:`tdphonon.stores.sqlite_job_store`):

* ``write``: ``Job.run`` of a job returning the :class:`~tdphonon.schemas.PopulationDoc`
  (jobflow sanitises the output; ``JobStore.update`` sanitises it again, searches it for
  each data-store key and writes the document and its blobs);
* ``read``: ``JobStore.query_one`` of the output with its arrays loaded, and the arrays
  as numpy (:func:`tdphonon.schemas.as_array`), as the next iteration job does.

``lists`` is the previous pipeline, run in the same process: the same document with every
array as nested lists, which is what the documents serialised them to until the
:class:`~tdphonon.schemas.PackedArray` form. Sizes are those of the campaign's supercells
(median 128 atoms) and of a typical population. Times are CPU seconds of this process.

Usage::

    python benchmarks/bench_serialisation.py [--atoms 128] [--snapshots 300] [--repeat 3]
        [--json benchmarks/results/bench_serialisation.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
#: The data-store keys of an SSCHA iteration job (tdphonon.jobs.sscha.SSCHA_DATA).
DATA_KEYS = ["force_constants", "displacements", "forces", "energies", "sampling_force_constants"]


def population(n_atoms: int, n_snapshots: int, seed: int = 0):
    """A PopulationDoc of random numbers with the shapes of a real one."""
    from tdphonon.schemas import PopulationDoc

    rng = np.random.default_rng(seed)
    return PopulationDoc(
        index=0,
        n_snapshots=n_snapshots,
        displacements=rng.normal(0, 0.1, (n_snapshots, n_atoms, 3)),
        forces=rng.normal(0, 0.5, (n_snapshots, n_atoms, 3)),
        energies=rng.normal(0, 1, n_snapshots),
        sampling_force_constants=rng.normal(0, 1, (n_atoms, n_atoms, 3, 3)),
    )


def as_lists(value: Any) -> Any:
    """The serialised document with every packed array as nested lists (the old form)."""
    from tdphonon.schemas import as_array

    if isinstance(value, dict):
        if "base64" in value:
            return as_array(value).tolist()
        return {k: as_lists(v) for k, v in value.items()}
    return value


def _return(output: Any) -> Any:
    return output


def round_trip(output: Any, n_atoms: int) -> dict[str, float]:
    """CPU seconds of writing ``output`` as a job's and reading its arrays back."""
    from jobflow import Job

    from tdphonon.schemas import as_array
    from tdphonon.sqlite_store import IN_MEMORY
    from tdphonon.stores import sqlite_job_store

    store = sqlite_job_store(IN_MEMORY)
    store.connect()
    job = Job(_return, function_args=(output,), data=DATA_KEYS)
    start = time.process_time()
    job.run(store)
    written = time.process_time()
    doc = store.query_one({"uuid": job.uuid}, load=True)
    arrays = {k: as_array(doc["output"][k]) for k in DATA_KEYS[1:]}
    read = time.process_time()
    assert arrays["sampling_force_constants"].shape == (n_atoms, n_atoms, 3, 3)
    text = sum(
        len(row[0]) for row in store.docs_store._collection.execute("SELECT doc FROM outputs")
    )
    blobs = store.additional_stores["data"]._collection
    text += sum(len(row[0]) for row in blobs.execute("SELECT doc FROM outputs_blobs"))
    store.close()
    return {"write_s": written - start, "read_s": read - written, "stored_bytes": text}


def main(argv: list[str] | None = None) -> int:
    """Run both pipelines, print the ratios, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--atoms", type=int, default=128, help="supercell atoms")
    parser.add_argument("--snapshots", type=int, default=300, help="snapshots in the population")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "bench_serialisation.json")
    args = parser.parse_args(argv)

    doc = population(args.atoms, args.snapshots)
    start = time.process_time()
    old_form = as_lists(doc.model_dump())
    conversion_s = time.process_time() - start  # the old serialiser's tolist, paid by "lists"
    pipelines = {"lists": old_form, "packed": doc}
    results: dict[str, dict[str, float]] = {}
    for name, output in pipelines.items():
        runs = [round_trip(output, args.atoms) for _ in range(args.repeat)]
        results[name] = {k: min(run[k] for run in runs) for k in runs[0]}
    results["lists"]["write_s"] += conversion_s
    ratios = {
        key: results["lists"][key] / results["packed"][key]
        for key in ("write_s", "read_s", "stored_bytes")
    }
    for name, r in results.items():
        print(
            f"{name:7s} write {r['write_s']:.3f} s  read {r['read_s']:.3f} s  "
            f"stored {r['stored_bytes'] / 1e6:.1f} MB"
        )
    print(
        f"packed / lists: write {ratios['write_s']:.0f}x faster, read "
        f"{ratios['read_s']:.0f}x faster, {ratios['stored_bytes']:.1f}x smaller"
    )
    out = {
        "benchmark": "bench_serialisation",
        "atoms": args.atoms,
        "snapshots": args.snapshots,
        "repeat": args.repeat,
        "results": results,
        "ratio_lists_over_packed": ratios,
        "machine": platform.platform(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
