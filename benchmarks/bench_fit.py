"""Benchmark: the SSCHA's least-squares fit on campaign supercells, now vs the previous code.

Every SSCHA iteration refits the force constants to all snapshots still in use, once for
the result and once per bootstrap resample (:meth:`ForceConstantFitter.normal_equations`
with 1 + 16 weight vectors, tdphonon's default). For low-symmetry cells the symmetry-adapted
basis has hundreds to thousands of parameters P, and the normal matrices
``sum_s w_s X_s^T X_s`` cost as much CPU as the force evaluations of the snapshots.

``previous`` is the algorithm before this change, run in the same process: per chunk of
snapshots and per batch of about ten atoms, the products ``X_sb^T X_sb`` over the 3b rows
of that batch (a batched product with an inner dimension of about 30: slow BLAS), with the
map from displacements to designs rebuilt for every chunk when it is not kept. ``now``
builds each snapshot's whole design matrix (3N rows) and takes ``X_s^T X_s`` as one
product. Both give the same matrices (checked, relative difference printed). Supercells
are those ``tdphonon run --min-length 8`` chooses for phonondb cells of the campaign;
random displacements (the cost does not depend on them); one thread (a campaign worker).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_fit.py [--snapshots 300] [--ids mp-2242 ...]
        [--json benchmarks/results/bench_fit.json]
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: phonondb cells of the campaign: orthorhombic GeS, monoclinic F4HNa2 and FKO2Se,
#: orthorhombic CuI (design map small enough to be kept), cubic SrTiO3.
DEFAULT_IDS = ["mp-2242", "mp-37458", "mp-9205", "mp-673245", "mp-5229"]
N_WEIGHTS = 17  # the fit and 16 bootstrap resamples


def previous_normal_equations(fitter, displacements, forces, weights, chunk_bytes=64 * 2**20):
    """The normal equations as tdphonon computed them before (same result)."""
    n, n_parameters = len(displacements), fitter.n_parameters
    u, f = displacements.reshape(n, -1), forces.reshape(n, -1)
    matrices = np.zeros((len(weights), n_parameters, n_parameters))
    vectors = np.zeros((len(weights), n_parameters))
    per_snapshot = 8 * n_parameters * (n_parameters + 3 * fitter.n_atoms)
    chunk = max(1, min(n, chunk_bytes // per_snapshot))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        gram = np.zeros((stop - start, n_parameters, n_parameters))
        projection = np.zeros((stop - start, n_parameters))
        for i0, i1, design_map in fitter._design_maps():
            design = -(u[start:stop] @ design_map).reshape(stop - start, -1, n_parameters)
            transposed = design.transpose(0, 2, 1)
            gram += transposed @ design
            projection += (transposed @ f[start:stop, 3 * i0 : 3 * i1, None])[..., 0]
        matrices += (weights[:, start:stop] @ gram.reshape(stop - start, -1)).reshape(
            matrices.shape
        )
        vectors += weights[:, start:stop] @ projection
    return matrices, vectors


def supercell(mpid: str, min_length: float):
    """The phonopy supercell ``tdphonon run --min-length`` builds for a phonondb cell."""
    from pymatgen.core import Structure

    from tdphonon.structures import choose_supercell_matrix, make_phonopy, standard_primitive

    shared = Path(os.environ.get("TDPHONON_SHARED", HERE.parents[1] / "shared"))
    cells = json.load(lzma.open(shared / "data" / "phonondb" / "unitcells.json.xz"))
    (row,) = [r for r in cells if r["mpid"] == mpid]
    structure = standard_primitive(Structure.from_str(row["poscar"], fmt="poscar"))
    matrix = choose_supercell_matrix(structure, min_length=min_length)
    return row["formula"], make_phonopy(structure, matrix).supercell


def main(argv: list[str] | None = None) -> int:
    """Time both algorithms on each supercell, print the ratios, write the JSON."""
    from tdphonon.fitting import ForceConstantFitter

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", nargs="+", default=DEFAULT_IDS, help="phonondb ids")
    parser.add_argument("--snapshots", type=int, default=300)
    parser.add_argument("--min-length", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "bench_fit.json")
    args = parser.parse_args(argv)

    rows = []
    for mpid in args.ids:
        formula, cell = supercell(mpid, args.min_length)
        fitter = ForceConstantFitter(cell)
        rng = np.random.default_rng(0)
        shape = (args.snapshots, fitter.n_atoms, 3)
        displacements, forces = rng.normal(0, 0.05, shape), rng.normal(0, 0.5, shape)
        weights = rng.uniform(0, 2, (N_WEIGHTS, args.snapshots))
        fitter.normal_equations(displacements[:2], forces[:2], weights[:, :2])  # warm up
        start = time.process_time()
        now = fitter.normal_equations(displacements, forces, weights)
        now_s = time.process_time() - start
        start = time.process_time()
        before = previous_normal_equations(fitter, displacements, forces, weights)
        previous_s = time.process_time() - start
        difference = max(
            float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(now, before, strict=True)
        )
        row = {
            "id": mpid,
            "formula": formula,
            "supercell_atoms": fitter.n_atoms,
            "parameters": fitter.n_parameters,
            "design_map_kept": fitter._cached_design_map is not None,
            "previous_s": previous_s,
            "now_s": now_s,
            "speedup": previous_s / now_s,
            "max_relative_difference": difference,
        }
        rows.append(row)
        print(
            f"{formula:10s} N {row['supercell_atoms']:4d} P {row['parameters']:5d}  previous "
            f"{previous_s:6.1f} s  now {now_s:6.1f} s  {row['speedup']:4.1f}x  "
            f"(difference {difference:.0e})",
            flush=True,
        )
    out = {
        "benchmark": "bench_fit",
        "snapshots": args.snapshots,
        "weight_vectors": N_WEIGHTS,
        "min_length": args.min_length,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "rows": rows,
        "machine": platform.platform(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
