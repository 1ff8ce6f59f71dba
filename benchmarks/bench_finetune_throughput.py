"""Training throughput of fine-tuning: today's pipeline vs the database-scale one.

Both pipelines train the same base model with the same settings for one epoch, on the same
phonondb compounds (a seeded choice of ``--n-compounds`` with supercells of
``--min-atoms``-``--max-atoms`` atoms, about 100), in this process, one after the other:

* **previous**: :func:`tdphonon.finetune.finetune` as ``tdphonon finetune`` ran it before
  the database-scale pipeline: every displaced supercell of every compound, graphs built in
  memory at the start of every run;
* **cached, all displacements**: the same supercells through the on-disk graph cache
  (first run builds it, a second run reuses it);
* **cached, ``--max-displacements``**: the database-scale rule, at most that many
  displaced supercells per compound (round-robin over the distinct displaced atoms).

Reported per pipeline: wall time (graph building and training), supercells per second
(displaced supercells trained; the undisplaced reference of each batch is extra work,
counted in ``model_passes``), compounds per hour, and the ratios to the
previous pipeline. JSON: ``benchmarks/results/bench_finetune_throughput.json``.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_finetune_throughput.py --threads 2
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from finetune_phonondb import _shared, pretrained_base  # noqa: E402


def _epoch(base: str, train: list, cache_dir: Path | None, max_displacements: int | None):
    """One training epoch, no validation; returns (wall s, supercells, passes, build s)."""
    from tdphonon import finetune as ft

    settings = ft.FineTuneSettings(
        max_epochs=1, energy_weight=0.0, max_displacements=max_displacements
    )
    built = {"s": 0.0}
    original = ft.build_samples

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        built["s"] += time.perf_counter() - t0
        return out

    ft.build_samples = timed
    try:
        t0 = time.perf_counter()
        ft.finetune(base, train, [], settings, cache_dir=cache_dir)
        wall = time.perf_counter() - t0
    finally:
        ft.build_samples = original
    subsets = [
        s if max_displacements is None else s.training_subset(max_displacements, settings.seed)
        for s in train
    ]
    supercells = sum(len(s) for s in subsets)
    passes = sum(len(s) + -(-len(s) // settings.batch_size) for s in subsets)
    return wall, supercells, passes, built["s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default=pretrained_base(), help="base model to fine-tune")
    parser.add_argument("--n-compounds", type=int, default=4)
    parser.add_argument("--min-atoms", type=int, default=90)
    parser.add_argument("--max-atoms", type=int, default=110)
    parser.add_argument("--max-displacements", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "bench_finetune_throughput.json"
    )
    args = parser.parse_args(argv)

    import torch

    from tdphonon.forcesets import read_phonondb

    torch.set_num_threads(args.threads)
    db = _shared() / "data" / "phonondb"
    rows = [
        r
        for r in csv.DictReader((db / "index.csv").open())
        if args.min_atoms <= int(r["nat_super"]) <= args.max_atoms and int(r["n_disp"]) > 2
    ]
    rows = random.Random(args.seed).sample(rows, args.n_compounds)
    train = [read_phonondb(db / "archives" / r["archive"]) for r in rows]
    print(
        "compounds: "
        + ", ".join(f"{s.name} ({len(s.reference)} atoms, {len(s)} displacements)" for s in train),
        flush=True,
    )
    cache = Path(tempfile.mkdtemp(prefix="tdphonon-graph-cache-"))
    results = {}
    # warm-up (first model calls, lazy imports), not timed: no pipeline pays it for another
    _epoch(args.base, [train[0].training_subset(1)], None, None)
    try:
        for name, cache_dir, max_disp in (
            ("previous", None, None),
            ("cached_all_cold", cache, None),
            ("cached_all_warm", cache, None),
            (f"cached_max{args.max_displacements}", cache, args.max_displacements),
        ):
            wall, supercells, passes, build = _epoch(args.base, train, cache_dir, max_disp)
            results[name] = {
                "wall_s": wall,
                "graph_build_s": build,
                "supercells": supercells,
                "model_passes": passes,
                "supercells_per_s": supercells / wall,
                "compounds_per_hour": len(train) * 3600 / wall,
            }
            print(name, json.dumps(results[name]), flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    before = results["previous"]
    for row in results.values():
        row["supercells_per_s_ratio"] = row["supercells_per_s"] / before["supercells_per_s"]
        row["compounds_per_hour_ratio"] = row["compounds_per_hour"] / before["compounds_per_hour"]
    out = {
        "command": " ".join(["python", *sys.argv]),
        "threads": args.threads,
        "compounds": [
            {"name": s.name, "atoms": len(s.reference), "displacements": len(s)} for s in train
        ],
        "pipelines": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"{'pipeline':<22} {'supercells/s':>12} {'ratio':>6} {'compounds/h':>12} {'ratio':>6}")
    for name, row in results.items():
        print(
            f"{name:<22} {row['supercells_per_s']:12.3f} {row['supercells_per_s_ratio']:6.2f} "
            f"{row['compounds_per_hour']:12.1f} {row['compounds_per_hour_ratio']:6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
