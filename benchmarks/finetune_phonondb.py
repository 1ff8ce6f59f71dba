"""Learning curve: fine-tuning M3GNet on phonondb, phonon error on unseen compounds.

Splits the 4,000 phonondb compounds of ``$TDPHONON_SHARED/data/phonondb`` by compound
(deterministic for ``--seed``, written to the JSON):

* only compounds whose supercell has at most ``--max-supercell-atoms`` atoms (CPU budget;
  the rule is the same for every split) and whose elements the base model knows;
* **test** (``--n-test``): a seeded random choice; evaluated before and after training only,
  never used for any choice;
* **selection** (``--n-selection``): the next ones whose reduced formula is not a test
  formula; their phonon MAE picks the best epoch (early stopping);
* **training pool**: all the rest whose reduced formula is neither a test nor a selection
  formula (no polymorph of a held-out compound), in a seeded order; ``--n-train N`` trains
  on the first N, so that the training sets of a learning curve are nested.

Every training compound contributes at most ``--max-displacements`` displaced supercells,
chosen by :meth:`tdphonon.forcesets.ForceSet.training_subset` (round-robin over the
symmetry-distinct displaced atoms), plus its undisplaced supercell.

Metric: the phonon-frequency MAE of :mod:`tdphonon.evaluation` (``tdphonon evaluate``) on
the test compounds, pretrained vs fine-tuned; baselines from the pretrained model alone:
one global frequency scale fitted on the selection compounds, and each test compound's own
best scale (an oracle).

Usage (each point is one resumable process: rerunning the same command continues from its
checkpoint in ``--work``)::

    OMP_NUM_THREADS=1 python benchmarks/finetune_phonondb.py --n-train 30 --epochs 3 \\
        --json benchmarks/results/finetune_phonondb/train30.json
    python benchmarks/finetune_phonondb.py --summarize benchmarks/results/finetune_phonondb/*.json \\
        --json benchmarks/results/finetune_phonondb.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_LR = 3e-4
sys.path.insert(0, str(HERE))


def _shared() -> Path:
    return Path(os.environ.get("TDPHONON_SHARED", HERE.parent.parent / "shared"))


def pretrained_base() -> str:
    """The base model of the benchmarks: the pretrained M3GNet in ``$TDPHONON_SHARED/models``
    (``$TDPHONON_MODEL`` is not used: it may name a fine-tuned model)."""
    return str(_shared() / "models" / "M3GNet-MP-2021.2.8-PES")


def _reduced_formula(formula: str) -> str:
    from pymatgen.core import Composition

    return Composition(formula).reduced_formula


def split(
    index: Path, known_elements: set[str], n_test: int, n_selection: int, max_atoms: int, seed: int
) -> dict[str, list[dict[str, str]]]:
    """Test / selection / training-pool rows of ``index.csv`` (see the module docstring)."""
    from pymatgen.core import Composition

    rows = [
        r
        for r in csv.DictReader(index.open())
        if int(r["nat_super"]) <= max_atoms
        and {str(e) for e in Composition(r["formula"]).elements} <= known_elements
    ]
    random.Random(seed).shuffle(rows)
    test = rows[:n_test]
    held = {_reduced_formula(r["formula"]) for r in test}
    rest = [r for r in rows[n_test:] if _reduced_formula(r["formula"]) not in held]
    selection = rest[:n_selection]
    held |= {_reduced_formula(r["formula"]) for r in selection}
    pool = [r for r in rest[n_selection:] if _reduced_formula(r["formula"]) not in held]
    return {"test": test, "selection": selection, "pool": pool}


def _split(args: argparse.Namespace, potential: Any) -> dict[str, list[dict[str, str]]]:
    """The split of ``args`` for the elements ``potential`` knows."""
    return split(
        _shared() / "data" / "phonondb" / "index.csv",
        set(potential.model.element_types),
        args.n_test,
        args.n_selection,
        args.max_supercell_atoms,
        args.seed,
    )


def _read(rows: list[dict[str, str]], archives: Path, max_displacements: int | None, seed: int):
    from tdphonon.forcesets import read_phonondb

    sets = []
    for row in rows:
        fs = read_phonondb(archives / row["archive"])
        sets.append(
            fs if max_displacements is None else fs.training_subset(max_displacements, seed)
        )
    return sets


def _pretrained(work: Path, name: str, sets, calculator):
    """The pretrained model's evaluation of ``sets`` (cached in ``work``: it never changes)."""
    import pickle

    from tdphonon.evaluation import evaluate

    path = work / f"pretrained_{name}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    result = evaluate(sets, calculator, progress=True)
    work.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(result))
    return result


def run_point(args: argparse.Namespace) -> dict[str, Any]:
    """Train on the first ``--n-train`` pool compounds and evaluate on the test split."""
    import torch
    from finetune_phonons import scale_baselines

    from tdphonon.evaluation import evaluate
    from tdphonon.finetune import FineTuneSettings, finetune
    from tdphonon.potentials import MatglCalculator, load_potential

    torch.set_num_threads(args.threads)
    shared = _shared() / "data" / "phonondb"
    base = load_potential(args.base)
    parts = _split(args, base)
    if args.n_train > len(parts["pool"]):
        raise SystemExit(f"--n-train {args.n_train}: the pool holds {len(parts['pool'])}")
    archives = shared / "archives"
    t0 = time.perf_counter()
    test = _read(parts["test"], archives, None, args.seed)
    selection = _read(parts["selection"], archives, None, args.seed)
    train = _read(parts["pool"][: args.n_train], archives, args.max_displacements, args.seed)
    read_time = time.perf_counter() - t0
    print(
        f"test {len(test)}, selection {len(selection)}, training {len(train)} compounds "
        f"({sum(len(s) for s in train)} displaced supercells); read in {read_time:.0f} s",
        flush=True,
    )
    work = Path(args.work)
    pretrained_calc = MatglCalculator(base)
    before = _pretrained(work, f"test_seed{args.seed}_n{args.n_test}", test, pretrained_calc)
    baselines = scale_baselines(selection, test, before, pretrained_calc)
    settings = FineTuneSettings(
        max_epochs=args.epochs,
        lr=args.lr,
        trainable=args.trainable,
        batch_size=args.batch_size,
        energy_weight=0.0,
        patience=args.epochs,
        seed=args.seed,
    )
    point = f"train{args.n_train}-d{args.max_displacements}-{args.trainable}-e{args.epochs}"
    point += f"-lr{args.lr:g}" if args.lr != DEFAULT_LR else ""
    result = finetune(
        args.base,
        train,
        selection,
        settings,
        out_dir=work / point / "model",
        checkpoint_dir=work / point / "checkpoint",
        progress=not args.quiet,
    )
    after = evaluate(test, MatglCalculator(result.potential), progress=True)
    n_passes = sum(len(s) + -(-len(s) // settings.batch_size) for s in train)
    epochs_run = len(result.history)
    return {
        "command": " ".join(["python", *sys.argv]),
        "point": point,
        "n_train_compounds": len(train),
        "n_train_supercells": sum(len(s) for s in train),
        "max_displacements": args.max_displacements,
        "settings": result.provenance["settings"],
        "split": {
            "seed": args.seed,
            "max_supercell_atoms": args.max_supercell_atoms,
            "test": [r["mpid"] for r in parts["test"]],
            "selection": [r["mpid"] for r in parts["selection"]],
            "train": [r["mpid"] for r in parts["pool"][: args.n_train]],
        },
        "test_pretrained_mae_thz": before.frequency_mae_thz,
        "test_finetuned_mae_thz": after.frequency_mae_thz,
        "test_ratio": before.frequency_mae_thz / after.frequency_mae_thz,
        "selection_pretrained_mae_thz": result.before.frequency_mae_thz,
        "selection_best_mae_thz": result.after.frequency_mae_thz,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "baselines": baselines,
        "per_compound": [
            {
                "name": b.name,
                "pretrained_thz": b.frequency_mae_thz,
                "finetuned_thz": a.frequency_mae_thz,
                "pretrained_scale": b.frequency_scale,
                "finetuned_scale": a.frequency_scale,
            }
            for b, a in zip(before.compounds, after.compounds, strict=True)
        ],
        "forgetting": result.forgetting,
        "training_time_s": result.training_time_s,
        "training_passes_per_epoch": n_passes,
        "training_supercells_per_s": n_passes * epochs_run / result.training_time_s,
        "threads": args.threads,
    }


def lattice_check(models: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Relax the test compounds' PBEsol unit cells with each model (cell and positions,
    symmetry kept, as ``tdphonon run`` relaxes) and compare the lattice with PBEsol."""
    import lzma

    import torch
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.io import read
    from ase.optimize import BFGS

    from tdphonon.potentials import MatglCalculator, load_potential

    torch.set_num_threads(args.threads)
    shared = _shared() / "data" / "phonondb"
    parts = _split(args, load_potential(models[0]))
    cells = {r["mpid"]: r for r in json.load(lzma.open(shared / "unitcells.json.xz"))}
    out: dict[str, Any] = {"models": {}, "test": [r["mpid"] for r in parts["test"]]}
    for model in models:
        calc = MatglCalculator(load_potential(model)).as_ase_calculator()
        rows = []
        for r in parts["test"]:
            atoms = read(io.StringIO(cells[r["mpid"]]["poscar"]), format="vasp")
            reference = atoms.cell.cellpar()[:3]
            volume0 = atoms.get_volume()
            atoms.calc = calc
            atoms.set_constraint(FixSymmetry(atoms, symprec=1e-3))
            opt = BFGS(FrechetCellFilter(atoms), logfile=None)
            converged = bool(opt.run(fmax=1e-3, steps=500))
            lengths = atoms.cell.cellpar()[:3]
            rows.append(
                {
                    "mpid": r["mpid"],
                    "formula": r["formula"],
                    "converged": converged,
                    "lattice_error": float(np.mean(np.abs(lengths / reference - 1))),
                    "volume_error": float(atoms.get_volume() / volume0 - 1),
                }
            )
        out["models"][model] = {
            "mean_abs_lattice_error": float(np.mean([x["lattice_error"] for x in rows])),
            "mean_volume_error": float(np.mean([x["volume_error"] for x in rows])),
            "mean_abs_volume_error": float(np.mean([abs(x["volume_error"]) for x in rows])),
            "not_converged": sum(not x["converged"] for x in rows),
            "compounds": rows,
        }
        print(model, {k: v for k, v in out["models"][model].items() if k != "compounds"})
    return out


SHIPPED_NAME = "M3GNet-phonondb-PBEsol"


def ship(point_file: Path, work: Path) -> Path:
    """Copy the model of a learning-curve point into the package as :data:`SHIPPED_NAME`,
    with its provenance: base model, phonondb ids used for training and selection, settings,
    and the metrics on the test split (per compound)."""
    import shutil

    from tdphonon.potentials.catalog import SHIPPED_DIR

    point = json.loads(point_file.read_text())
    source = work / point["point"] / "model"
    provenance = json.loads((source / "provenance.json").read_text())
    target = SHIPPED_DIR / SHIPPED_NAME
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("model.json", "model.pt", "state.pt", "tdphonon.json"):
        shutil.copy2(source / name, target / name)
    test = {
        "n_compounds": len(point["split"]["test"]),
        "pretrained_mae_thz": point["test_pretrained_mae_thz"],
        "finetuned_mae_thz": point["test_finetuned_mae_thz"],
        "ratio": point["test_ratio"],
        "protocol": "tdphonon evaluate (tdphonon.evaluation), phonondb FORCE_SETS with BORN",
        "per_compound": point["per_compound"],
    }
    shipped = {
        "name": SHIPPED_NAME,
        "base_model": provenance["base_model"],
        "training_data": {
            "source": "phonondb",
            "database": "phonondb release 2018-04-17 (A. Togo), VASP PBEsol, CC-BY-4.0",
            "n_compounds": point["n_train_compounds"],
            "n_supercells": point["n_train_supercells"],
            "max_displacements": point["max_displacements"],
            "train_ids": point["split"]["train"],
            "selection_ids": point["split"]["selection"],
            "test_ids": point["split"]["test"],
            "split_rule": {k: point["split"][k] for k in ("seed", "max_supercell_atoms")},
        },
        "settings": provenance["settings"],
        "parameters": provenance["parameters"],
        "best_epoch": provenance["best_epoch"],
        "history": provenance["history"],
        "metrics": {
            "test": test,
            "selection_before_thz": point["selection_pretrained_mae_thz"],
            "selection_after_thz": point["selection_best_mae_thz"],
            "baselines": {k: v for k, v in point["baselines"].items() if k != "per_compound"},
            "forgetting": provenance["metrics"]["forgetting"],
            "training_time_s": point["training_time_s"],
        },
        "recreate": point["command"],
        "tdphonon_version": provenance.get("tdphonon_version"),
    }
    (target / "provenance.json").write_text(json.dumps(shipped, indent=1))
    print(f"shipped {source} as {target}")
    return target


def summarize(files: list[Path]) -> dict[str, Any]:
    """The learning curve of several points (same split)."""
    points = sorted(
        (json.loads(f.read_text()) for f in files), key=lambda d: d["n_train_compounds"]
    )
    if len({tuple(p["split"]["test"]) for p in points}) > 1:
        raise SystemExit("the points do not share one test split")
    first = points[0]
    return {
        "test_compounds": len(first["split"]["test"]),
        "pretrained_mae_thz": first["test_pretrained_mae_thz"],
        "global_scale_baseline_thz": first["baselines"]["test_global_scale_mae_thz"],
        "oracle_scale_thz": first["baselines"]["test_oracle_scale_mae_thz"],
        "curve": [
            {
                k: p[k]
                for k in (
                    "point",
                    "n_train_compounds",
                    "n_train_supercells",
                    "test_finetuned_mae_thz",
                    "test_ratio",
                    "selection_best_mae_thz",
                    "best_epoch",
                    "training_time_s",
                    "training_supercells_per_s",
                )
            }
            for p in points
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default=pretrained_base(), help="base model to fine-tune")
    parser.add_argument("--n-train", type=int, default=30)
    parser.add_argument("--n-test", type=int, default=30)
    parser.add_argument("--n-selection", type=int, default=10)
    parser.add_argument("--max-supercell-atoms", type=int, default=130)
    parser.add_argument("--max-displacements", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--trainable", default="last-block", help="all, last-block, interactions or readout"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="/tmp/tdphonon-finetune-phonondb")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--summarize", nargs="+", type=Path)
    parser.add_argument(
        "--ship",
        type=Path,
        metavar="POINT_JSON",
        help=f"copy that point's model (in --work) into the package as {SHIPPED_NAME}",
    )
    parser.add_argument(
        "--lattice",
        nargs="+",
        metavar="MODEL",
        help="relax the test compounds' PBEsol cells with each model, compare lattices",
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.ship:
        ship(args.ship, Path(args.work))
        return 0
    if args.lattice:
        out = lattice_check(args.lattice, args)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=1))
        return 0
    out = summarize(args.summarize) if args.summarize else run_point(args)
    text = json.dumps(out, indent=1, default=float)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text if args.summarize else json.dumps({k: out[k] for k in list(out)[3:4]}))
    if not args.summarize:
        print(
            f"{out['point']}: test {out['test_pretrained_mae_thz']:.3f} -> "
            f"{out['test_finetuned_mae_thz']:.3f} THz ({out['test_ratio']:.2f}x); global scale "
            f"{out['baselines']['test_global_scale_mae_thz']:.3f}, oracle "
            f"{out['baselines']['test_oracle_scale_mae_thz']:.3f}; "
            f"{out['training_supercells_per_s']:.2f} supercells/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
