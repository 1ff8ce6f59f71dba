"""Benchmark: batched matgl force evaluation vs one ASE calculator call per structure.

For each system (64-atom NaCl and 216-atom Si supercells by default) a set of randomly
displaced structures is evaluated

* one by one with ``matgl.ext.ase.PESCalculator`` (energy, forces and stress, the usual way of
  driving matgl from ASE/phonopy scripts), and
* with :class:`tdphonon.potentials.MatglCalculator` at several batch sizes (energies and
  forces, one model call per batch),

and the throughput (structures per second, best of ``--repeats``) and the speed-up over the
one-by-one ASE loop are printed and written as JSON. Forces of both paths are compared.

Usage::

    python benchmarks/bench_force_evaluation.py [--model PATH] [--n-structures 24]
        [--batch-sizes 1 4 8 16] [--json benchmarks/results/force_evaluation.json]

The model defaults to ``$TDPHONON_MODEL`` or ``../shared/models/M3GNet-MP-2021.2.8-PES``
relative to the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT.parent / "shared" / "models" / "M3GNet-MP-2021.2.8-PES"

SYSTEMS = {
    "NaCl-64": lambda: bulk("NaCl", "rocksalt", a=5.69, cubic=True) * (2, 2, 2),
    "Si-216": lambda: bulk("Si", "diamond", a=5.47, cubic=True) * (3, 3, 3),
    "MgO-64": lambda: bulk("MgO", "rocksalt", a=4.25, cubic=True) * (2, 2, 2),
}


def displaced(atoms: Atoms, n: int, amplitude: float, seed: int) -> list[Atoms]:
    """Return ``n`` copies of ``atoms`` with Gaussian random displacements (Å)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = atoms.copy()
        a.positions += rng.normal(scale=amplitude, size=a.positions.shape)
        out.append(a)
    return out


def time_best(func, repeats: int) -> tuple[float, object]:
    """Return the best wall time of ``repeats`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def ase_one_by_one(ase_calc, structures: list[Atoms]) -> np.ndarray:
    """Forces of each structure with one ASE calculator call per structure."""
    forces = []
    for atoms in structures:
        a = atoms.copy()
        a.calc = ase_calc
        forces.append(a.get_forces())
    return np.array(forces)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and return the results dictionary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("TDPHONON_MODEL", str(DEFAULT_MODEL)))
    parser.add_argument(
        "--systems", nargs="+", default=["NaCl-64", "Si-216"], choices=sorted(SYSTEMS)
    )
    parser.add_argument("--n-structures", type=int, default=24)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--amplitude", type=float, default=0.03, help="displacement std (Å)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--max-atoms-per-batch",
        type=int,
        default=None,
        help="cap on atoms per model call (default: none, so batch sizes are measured as given)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json", default=str(ROOT / "benchmarks" / "results" / "force_evaluation.json")
    )
    args = parser.parse_args(argv)

    import matgl
    import torch

    from tdphonon.potentials import ModelLoadError, get_calculator

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        calc = get_calculator(args.model, device=args.device, batch_size=max(args.batch_sizes))
    except ModelLoadError as err:
        sys.exit(f"cannot load the model: {err}\n(use --model or set TDPHONON_MODEL)")
    calc.max_atoms_per_batch = args.max_atoms_per_batch
    ase_calc = calc.as_ase_calculator()

    results: dict = {
        "benchmark": "force_evaluation",
        "model": calc.provenance(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "matgl": matgl.__version__,
            "device": calc.device,
            "gpu": torch.cuda.get_device_name(0) if calc.device.startswith("cuda") else None,
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("json",)},
        "systems": {},
    }
    print(
        f"model {calc.name} ({calc.provenance()['message_convention']} convention) on {calc.device}, "
        f"{torch.get_num_threads()} torch threads"
    )

    for system in args.systems:
        structures = displaced(SYSTEMS[system](), args.n_structures, args.amplitude, args.seed)
        n_atoms = len(structures[0])
        # warm-up both paths (allocator, lazy initialisation)
        ase_one_by_one(ase_calc, structures[:1])
        calc.batch_size = 2
        calc.compute(structures[:2])

        # interleave the paths over the repeats so that load from other processes hits all alike
        best = {"ase": float("inf"), **{bs: float("inf") for bs in args.batch_sizes}}
        forces: dict = {}
        for _ in range(args.repeats):
            t, forces["ase"] = time_best(lambda s=structures: ase_one_by_one(ase_calc, s), 1)
            best["ase"] = min(best["ase"], t)
            for bs in args.batch_sizes:
                calc.batch_size = bs
                t, (_, forces[bs]) = time_best(lambda s=structures: calc.compute(s), 1)
                best[bs] = min(best[bs], t)
        t_ase = best["ase"]
        entry: dict = {
            "n_atoms": n_atoms,
            "n_structures": len(structures),
            "ase_one_by_one": {"seconds": t_ase, "structures_per_s": len(structures) / t_ase},
            "batched": [],
        }
        print(f"\n{system}: {len(structures)} structures of {n_atoms} atoms")
        print(
            f"  ASE PESCalculator, one call per structure: {len(structures) / t_ase:8.2f} structures/s"
        )
        for bs in args.batch_sizes:
            t = best[bs]
            max_diff = float(np.abs(forces[bs] - forces["ase"]).max())
            row = {
                "batch_size": bs,
                "seconds": t,
                "structures_per_s": len(structures) / t,
                "speedup_vs_ase": t_ase / t,
                "max_abs_force_diff_vs_ase": max_diff,
            }
            entry["batched"].append(row)
            print(
                f"  MatglCalculator batch_size={bs:3d}:           {row['structures_per_s']:8.2f} structures/s"
                f"  x{row['speedup_vs_ase']:5.2f} vs ASE   max|dF|={max_diff:.1e} eV/Å"
            )
        results["systems"][system] = entry

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwritten {out}")
    return results


if __name__ == "__main__":
    main()
