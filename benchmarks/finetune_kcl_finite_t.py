"""Fine-tuning on one compound's own finite-temperature data must help (issue 10, item 5).

The data: ``../shared/data/KCl-SSCHA/phonopy_mlpsscha_params_KCl-120.yaml.xz``, 120 KCl
supercells (64 atoms) with random displacements up to 1.5 Å and their DFT energies and
forces (RMS force 41 eV/Å: most snapshots are far from anything thermal at 300 K), the
training set phonopy's KCl SSCHA example gives pypolymlp.

What is run, as a user runs it:

1. ``tdphonon finetune DATA --base BASE --out WORK/kcl-finetuned`` with its defaults: it holds
   out 20 % of the snapshots (one compound with random displacements) for validation.
2. Held-out force errors of the base and the fine-tuned model on those snapshots (all, and
   the half nearest equilibrium).
3. ``tdphonon run`` at 300 K on the DFT geometry (``--no-relax``, the data's 2x2x2 supercell of
   the conventional cell, quantum statistics) with each model, and the harmonic phonons.
4. References: the DFT harmonic force constants (``phonopy_fc222_JPCM2022.yaml.xz``), and,
   where pypolymlp is installed, phonopy's own MLPSSCHA at 300 K with a polynomial MLP
   trained on the same 120 snapshots (the ab-initio SSCHA route of phonopy's example; an
   independent code): frequencies on a mesh, mean absolute difference over all modes.

Usage::

    python benchmarks/finetune_kcl_finite_t.py [--base MODEL] [--work DIR] [--skip-reference]

JSON: ``benchmarks/results/finetune_kcl_finite_t.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
DATA = SHARED / "data" / "KCl-SSCHA" / "phonopy_mlpsscha_params_KCl-120.yaml.xz"
DFT_FC = SHARED / "data" / "KCl-SSCHA" / "phonopy_fc222_JPCM2022.yaml.xz"
TEMPERATURE = 300.0
MESH = [8, 8, 8]


def _tdphonon(*args: str) -> None:
    command = ["tdphonon", *args]
    print("$ tdphonon", " ".join(args), flush=True)
    subprocess.run(command, check=True)


def mesh_qpoints(phonon: Any) -> np.ndarray:
    """Cartesian q-points (1/Å, no 2π) of the Gamma-centred MESH of ``phonon``'s primitive
    cell: tdphonon's exports use another primitive cell of the same lattice (standard
    setting), so frequencies are compared at the same Cartesian q-points."""
    grid = np.stack(np.meshgrid(*[np.arange(n) / n for n in MESH], indexing="ij"), -1)
    return grid.reshape(-1, 3) @ np.linalg.inv(phonon.primitive.cell).T


def frequencies(phonon: Any, qpoints: np.ndarray) -> np.ndarray:
    """THz at Cartesian ``qpoints`` (no NAC: force constants are compared)."""
    phonon.nac_params = None
    phonon.run_qpoints(qpoints @ np.asarray(phonon.primitive.cell).T)
    return np.asarray(phonon.qpoints.frequencies)


def _with_fc(template: Any, force_constants: np.ndarray) -> Any:
    """A copy of the data's Phonopy (cell, supercell) with these force constants."""
    copy = template.replicate()
    copy.force_constants = force_constants
    return copy


def held_out_errors(model: str, held_out: Any) -> dict[str, float]:
    """Force errors (eV/Å) of ``model`` on the held-out snapshots, relative to each
    snapshot's undisplaced-supercell forces; also on the half with the smallest DFT forces."""
    from tdphonon.potentials import get_calculator

    calculator = get_calculator(model)
    _, predicted = calculator.compute_ragged([held_out.reference, *held_out.supercells])
    reference = predicted[0]
    dft_reference = (
        held_out.reference_forces if held_out.reference_forces is not None else 0 * reference
    )
    errors, scales = [], []
    for forces, dft in zip(predicted[1:], held_out.forces, strict=True):
        errors.append(np.sqrt(np.mean(((forces - reference) - (dft - dft_reference)) ** 2)))
        scales.append(np.sqrt(np.mean((dft - dft_reference) ** 2)))
    errors, scales = np.array(errors), np.array(scales)
    near = scales <= np.median(scales)
    return {
        "force_rmse": float(np.sqrt(np.mean(errors**2))),
        "relative_force_rmse": float(np.mean(errors / scales)),
        "near_equilibrium_force_rmse": float(np.sqrt(np.mean(errors[near] ** 2))),
        "near_equilibrium_relative_force_rmse": float(np.mean(errors[near] / scales[near])),
        "near_equilibrium_dft_rms_force": float(np.mean(scales[near])),
    }


def mlpsscha_reference(work: Path, seed: int = 0) -> np.ndarray | None:
    """Force constants of phonopy's MLPSSCHA at TEMPERATURE with pypolymlp trained on DATA
    (the MLP and the result cached in ``work``); None without pypolymlp.

    Started from the DFT harmonic force constants (no initialisation step), 500 snapshots
    per iteration, 6 iterations (phonopy's own sampling, symfc fits, no mixing).
    """
    import phonopy

    cached = work / "mlpsscha_fc.npy"
    if cached.exists():
        return np.load(cached)
    try:
        import pypolymlp  # noqa: F401
    except ImportError:
        return None
    from phonopy.sscha.core import MLPSSCHA

    ph = phonopy.load(DATA, produce_fc=False, log_level=1)
    mlp = work / "polymlp.yaml"
    if mlp.exists():
        ph.load_mlp(mlp)
    else:
        ph.mlp_dataset = ph.dataset
        ph.develop_mlp()
        ph.save_mlp(mlp)
    ph.dataset = None
    ph.force_constants = phonopy.load(DFT_FC, log_level=0).force_constants
    sscha = MLPSSCHA(
        ph,
        ph.mlp,
        temperature=TEMPERATURE,
        number_of_snapshots=500,
        max_iterations=6,
        random_seed=seed,
        log_level=1,
    )
    sscha.run()
    np.save(cached, sscha.force_constants)
    return np.asarray(sscha.force_constants)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; print it and write the JSON."""
    import phonopy

    from tdphonon.forcesets import read_force_sets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=str(SHARED / "models" / "M3GNet-MP-2021.2.8-PES"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/tdphonon-kcl-finite-t"))
    parser.add_argument("--skip-reference", action="store_true", help="no pypolymlp MLPSSCHA")
    parser.add_argument("--epochs", type=int, help="tdphonon finetune --epochs (default: its own)")
    parser.add_argument(
        "--finetune-args",
        default="",
        help="further tdphonon finetune options, one string (e.g. '--trainable all')",
    )
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "finetune_kcl_finite_t.json"
    )
    args = parser.parse_args(argv)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TDPHONON_STORE_DIR", str(work / "store"))

    tuned = work / "kcl-finetuned"
    start = time.perf_counter()
    if not (tuned / "provenance.json").exists():
        epochs = ["--epochs", str(args.epochs)] if args.epochs else []
        _tdphonon("finetune", str(DATA), "--base", args.base, "--out", str(tuned),
                  "--json", str(work / "finetune.json"), "-q", *epochs,
                  *shlex.split(args.finetune_args))  # fmt: skip
    training_s = time.perf_counter() - start
    provenance = json.loads((tuned / "provenance.json").read_text())

    (kcl,) = read_force_sets(DATA)
    _, held_out = kcl.split_snapshots(0.2, seed=0)  # the CLI's split (--seed 0)

    data = phonopy.load(DATA, produce_fc=False, log_level=0)
    unitcell = work / "POSCAR-KCl"
    if not unitcell.exists():
        from phonopy.interface.calculator import write_crystal_structure

        write_crystal_structure(str(unitcell), data.unitcell)
    dft = phonopy.load(DFT_FC, log_level=0)
    references = {"dft_harmonic": _with_fc(data, dft.force_constants)}
    reference_fc = None if args.skip_reference else mlpsscha_reference(work)
    if reference_fc is not None:
        references["mlpsscha_pypolymlp_300K"] = _with_fc(data, reference_fc)

    qpoints = mesh_qpoints(data)
    reference_freqs = {name: frequencies(ph, qpoints) for name, ph in references.items()}
    models: dict[str, Any] = {}
    for name, model in (("base", args.base), ("finetuned", str(tuned))):
        out = work / f"run-{name}"
        if not (out / f"phonopy_{TEMPERATURE:g}K.yaml").exists():
            _tdphonon("run", str(unitcell), "--no-relax", "--supercell", "2", "2", "2",
                      "-T", f"{TEMPERATURE:g}", "--model", model, "--export", str(out),
                      "--json", str(work / f"run-{name}.json"), "--no-plots", "-q")  # fmt: skip
        renormalised = phonopy.load(out / f"phonopy_{TEMPERATURE:g}K.yaml", log_level=0)
        harmonic = phonopy.load(out / "phonopy_harmonic.yaml", log_level=0)
        row: dict[str, Any] = {"model": model, "held_out": held_out_errors(model, held_out)}
        for kind, phonon in (("harmonic", harmonic), ("sscha_300K", renormalised)):
            freqs = frequencies(phonon, qpoints)
            row[kind] = {"gamma_thz": freqs[0].tolist()}
            for ref_name, ref in reference_freqs.items():
                row[kind][f"mesh_mae_vs_{ref_name}_thz"] = float(np.mean(np.abs(freqs - ref)))
        models[name] = row
    result = {
        "data": str(DATA.relative_to(SHARED.parent)),
        "temperature": TEMPERATURE,
        "mesh": MESH,
        "reference_gamma_thz": {name: f[0].tolist() for name, f in reference_freqs.items()},
        "finetune": {
            "settings": provenance.get("settings"),
            "best_epoch": provenance.get("best_epoch"),
            "history": provenance.get("history"),
            "wall_s": training_s,
        },
        "models": models,
    }
    ratios = {
        f"{kind}_{key}": models["base"][kind][key] / models["finetuned"][kind][key]
        for kind in ("harmonic", "sscha_300K")
        for key in models["base"][kind]
        if key.startswith("mesh_mae")
    }
    result["ratio_base_over_finetuned"] = ratios
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: models[k] for k in models}, indent=1))
    for name, ratio in ratios.items():
        print(f"{name}: base / fine-tuned = {ratio:.2f}")
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
