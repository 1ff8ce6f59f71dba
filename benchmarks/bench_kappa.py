"""Benchmark: cost of fc3 (random displacements + symfc vs finite differences) and kappa.

For fcc Al with EMT (smooth, DFT-free) and diamond Si with M3GNet (``--model``), on the
2x2x2 conventional fc3 supercell (32 and 64 atoms):

* fc3 by finite differences (phono3py pairs of displacements, traditional solver): number
  of supercells and wall time, and how much it changes from 0.03 to 0.06 Å displacements
  (a measure of the smoothness of the potential energy surface: fc3 is a third derivative);
* fc3 from N random-displacement supercells fitted with symfc, for several N, as +/- pairs
  (the default) and unpaired, and phono3py's ``"auto"`` estimate (pairs): number of
  supercells, wall time, relative difference
  of fc3 from the finite-difference one, and kappa(300 K) with the same fc2 (from the
  finite-difference supercells), so that only fc3 changes;
* for Si, the DFT (PBEsol) kappa of phono3py's test data on the same q-mesh, for scale.

The lattice constant is the potential's own (energy minimum of the primitive cell). Ratios
(finite / random supercells, wall time) are printed and everything is written as JSON.

Usage::

    nice python benchmarks/bench_kappa.py [--model PATH] [--systems Al Si] [--mesh 11] [--snapshots 2 4 8 16 32]
        [--json benchmarks/results/bench_kappa.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDPHONON_SHARED", ROOT.parent / "shared"))
DEFAULT_MODEL = SHARED / "models" / "M3GNet-MP-2021.2.8-PES"

SYSTEMS = {
    "Si": ("Si", "diamond", 5.45),
    "Al": ("Al", "fcc", 4.05),
}


def primitive(symbol: str, kind: str, a: float) -> Structure:
    """fcc-lattice primitive cell (diamond or fcc)."""
    lattice = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    if kind == "diamond":
        return Structure(lattice, [symbol] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])
    return Structure(lattice, [symbol], [[0, 0, 0]])


def equilibrium(calculator, symbol: str, kind: str, a0: float) -> float:
    """Lattice constant at the energy minimum (parabola through 7 points), Å."""
    from pymatgen.io.ase import AseAtomsAdaptor

    values = a0 * np.linspace(0.97, 1.03, 7)
    cells = [AseAtomsAdaptor.get_atoms(primitive(symbol, kind, a) * (2, 2, 2)) for a in values]
    energies, _ = calculator.compute(cells)
    coefficients = np.polyfit(values, energies, 2)
    return float(-coefficients[1] / (2 * coefficients[0]))


def kappa_300(structure, fc3, fc2, mesh) -> tuple[float, float]:
    """kappa_xx at 300 K (W/m-K) and its wall time."""
    from tdphonon.conductivity import ConductivitySettings, ThermalConductivity

    start = time.perf_counter()
    conductivity = ThermalConductivity.from_force_constants(
        structure, fc3, settings=ConductivitySettings(mesh=(mesh, mesh, mesh))
    )
    result = conductivity.run(fc2, [300.0])
    return float(result.kappa[0, 0]), time.perf_counter() - start


def run_system(system: str, model: str, mesh: int, snapshots: list[int], seeds: int) -> dict:
    """fc3 cost and kappa convergence of one system (see the module docstring)."""
    from tdphonon.conductivity import compute_fc3
    from tdphonon.potentials import get_calculator

    calculator = get_calculator(model, device="cpu")
    symbol, kind, a0 = SYSTEMS[system]
    a = equilibrium(calculator, symbol, kind, a0)
    structure = primitive(symbol, kind, a)
    matrix = [[-2, 2, 2], [2, -2, 2], [2, 2, -2]]  # 2x2x2 conventional
    print(f"{system}: a = {a:.4f} Å with {calculator.name}; fc3 supercell 2x2x2 conventional")

    finite = compute_fc3(structure, calculator, supercell_matrix=matrix, method="finite")
    kappa_finite, kappa_time = kappa_300(structure, finite, finite.fc2, mesh)
    print(
        f"finite differences: {finite.n_supercells} supercells, {finite.wall_time:.1f} s, "
        f"kappa_xx(300 K) = {kappa_finite:.2f} W/m-K (kappa {kappa_time:.1f} s)"
    )
    # sensitivity of the finite-difference fc3 to the displacement (smoothness of the PES)
    finite_06 = compute_fc3(
        structure, calculator, supercell_matrix=matrix, method="finite", distance=0.06
    )
    norm = np.linalg.norm(finite.fc3)
    finite_spread = float(np.linalg.norm(finite_06.fc3 - finite.fc3) / norm)
    kappa_06, _ = kappa_300(structure, finite_06, finite.fc2, mesh)
    print(
        f"finite differences at 0.06 Å instead of 0.03 Å: |dfc3|/|fc3| = {finite_spread:.3f}, "
        f"kappa_xx = {kappa_06:.2f} W/m-K"
    )
    random_runs = []
    cases = [("auto", True), *[(n, pm) for pm in (True, False) for n in snapshots]]
    for n, plusminus in cases:
        for seed in range(seeds if n != "auto" else 1):
            try:
                fc3 = compute_fc3(
                    structure,
                    calculator,
                    supercell_matrix=matrix,
                    method="random",
                    number_of_snapshots=n,
                    random_seed=seed,
                    plusminus=plusminus,
                )
            except ValueError as error:  # fewer supercells than the fit needs
                print(f"random N={n} (pairs: {plusminus}): refused: {error}")
                random_runs.append(
                    {"number_of_snapshots": n, "plusminus": plusminus, "error": str(error)}
                )
                break
            kappa, _ = kappa_300(structure, fc3, finite.fc2, mesh)
            run = {
                "number_of_snapshots": n,
                "plusminus": plusminus,
                "seed": seed,
                "n_supercells": fc3.n_supercells,
                "wall_time_s": fc3.wall_time,
                "fc3_relative_difference": float(np.linalg.norm(fc3.fc3 - finite.fc3) / norm),
                "kappa_xx_300K": kappa,
                "kappa_relative_difference": kappa / kappa_finite - 1,
            }
            random_runs.append(run)
            print(
                f"random {'pairs' if plusminus else 'single'} {fc3.n_supercells:3d} supercells "
                f"(seed {seed}): {fc3.wall_time:5.1f} s, "
                f"|dfc3|/|fc3| = {run['fc3_relative_difference']:.3f}, kappa_xx = "
                f"{kappa:.4g} W/m-K ({100 * run['kappa_relative_difference']:+.1f} %)"
            )
    auto = random_runs[0]
    result = {
        "system": system,
        "model": str(model),
        "lattice_constant": a,
        "fc3_supercell_atoms": int(finite.fc3.shape[1]),
        "mesh": [mesh] * 3,
        "finite": {
            "n_supercells": finite.n_supercells,
            "wall_time_s": finite.wall_time,
            "kappa_xx_300K": kappa_finite,
            "kappa_wall_time_s": kappa_time,
            "fc3_relative_difference_0.06_vs_0.03": finite_spread,
            "kappa_xx_300K_0.06": kappa_06,
        },
        "random": random_runs,
        "ratios": {
            "supercells_finite_over_auto": finite.n_supercells / auto["n_supercells"],
            "wall_time_finite_over_auto": finite.wall_time / auto["wall_time_s"],
        },
    }
    data_dir = SHARED / "data" / "phono3py"
    if system == "Si" and (data_dir / "FORCES_FC3_si_pbesol").is_file():
        from tdphonon.conductivity import ConductivitySettings, dft_kappa

        dft = dft_kappa(
            data_dir / "phono3py_si_pbesol.yaml",
            [300.0],
            ConductivitySettings(mesh=(mesh,) * 3),
            forces=data_dir / "FORCES_FC3_si_pbesol",
        )
        result["dft_pbesol_kappa_xx_300K"] = float(dft.result.kappa[0, 0])
        print(f"DFT (PBEsol) kappa_xx(300 K) on the same mesh: {dft.result.kappa[0, 0]:.2f} W/m-K")
    print(
        f"ratios: supercells finite/auto = {result['ratios']['supercells_finite_over_auto']:.1f}, "
        f"wall time finite/auto = {result['ratios']['wall_time_finite_over_auto']:.1f}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("TDPHONON_MODEL", str(DEFAULT_MODEL)))
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=sorted(SYSTEMS),
        default=["Al", "Si"],
        help="Al uses EMT (smooth, DFT-free), Si the --model",
    )
    parser.add_argument("--mesh", type=int, default=11, help="q-mesh N (N x N x N)")
    parser.add_argument("--snapshots", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--seeds", type=int, default=2, help="random seeds per N")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/bench_kappa.json"))
    args = parser.parse_args()

    results = {
        system: run_system(
            system, "emt" if system == "Al" else args.model, args.mesh, args.snapshots, args.seeds
        )
        for system in args.systems
    }
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
