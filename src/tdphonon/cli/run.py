"""``tdphonon run``: temperature-dependent phonons of one crystal."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tdphonon.cli import CommandError, add_model_option, add_temperatures_option

RUN_EPILOG = """\
examples:
  tdphonon run examples/Si.cif --temperatures 100 300 600 --model path/to/M3GNet-MP-2021.2.8-PES
  tdphonon run examples/Al_fcc.cif --model emt --temperatures 300 800 --json al.json
  tdphonon run POSCAR --no-relax --supercell 3 3 3 --statistics classical --export phonopy_files

The model comes from --model or the TDPHONON_MODEL environment variable: a matgl model
folder (model.json, model.pt, state.pt), a matgl hub name, or 'emt'. The default store
is an embedded database under ~/.tdphonon/store (TDPHONON_STORE_DIR changes it).
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``run`` to the sub-command parsers."""
    run = sub.add_parser(
        "run",
        help="temperature-dependent phonons of one crystal (relax, harmonic, SSCHA per T)",
        description="Relax a crystal with the potential, compute its harmonic phonons, then "
        "the SSCHA at each temperature (warm-started from the previous one). Prints a "
        "summary table, writes plots and stores every intermediate in the JobStore.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("structure", help="crystal structure file (CIF, POSCAR, pymatgen JSON, ...)")
    add_temperatures_option(run, "temperatures in K, done in the given order (default: 300)")
    add_sscha_options(run)
    add_store_option(run)
    run.add_argument("--export", metavar="DIR", help="write phonopy files with force constants")
    run.add_argument("--json", metavar="FILE", help="write a JSON summary")
    run.add_argument(
        "--plots",
        metavar="DIR",
        default=".",
        help="directory for band-structure and convergence plots (default: current)",
    )
    run.add_argument("--no-plots", action="store_true", help="do not write plots")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars or logs")
    run.add_argument(
        "--kappa",
        action="store_true",
        help="also the lattice thermal conductivity with the harmonic and the SSCHA fc2 at "
        "each T (fc3 once; see 'tdphonon kappa --help' and the options below)",
    )
    from tdphonon.cli.kappa import add_kappa_options

    add_kappa_options(run)
    return run


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """``--store`` of the commands that run flows here (``run``, ``kappa``)."""
    parser.add_argument(
        "--store",
        help="store: a directory for the embedded database, or a jobflow.yaml / JSON file "
        "with a JobStore (e.g. MongoDB + GridFS); default ~/.tdphonon/store",
    )


def add_sscha_options(parser: argparse.ArgumentParser) -> None:
    """Options of the potential, supercell and SSCHA (shared with ``kappa`` and ``submit``)."""
    add_model_option(parser)
    cell = parser.add_mutually_exclusive_group()
    cell.add_argument(
        "--supercell",
        nargs="+",
        type=int,
        metavar="N",
        help="supercell of the standard primitive cell: 3 integers (diagonal) or 9 (matrix)",
    )
    cell.add_argument(
        "--min-length",
        type=float,
        default=10.0,
        metavar="ANGSTROM",
        help="choose a near-cubic supercell whose periodic images are this far apart (default 10)",
    )
    parser.add_argument(
        "--no-relax", action="store_true", help="keep the given geometry (e.g. DFT-relaxed)"
    )
    parser.add_argument(
        "--statistics",
        choices=["quantum", "classical"],
        default="quantum",
        help="phonon statistics of the thermal displacements (default quantum)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        metavar="THZ",
        help="target accuracy of renormalised frequencies, THz (default 0.05)",
    )
    parser.add_argument(
        "--max-snapshots",
        type=int,
        default=1024,
        help="largest sample size the adaptive sampling may use (default 1024)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")
    parser.add_argument("--batch-size", type=int, default=16, help="supercells per model call")


def supercell_matrix_option(
    values: Sequence[int] | None, option: str = "--supercell"
) -> list[list[int]] | None:
    """3x3 supercell matrix of an option taking 3 (diagonal) or 9 integers."""
    if values is None:
        return None
    if len(values) == 3:
        return [[values[0], 0, 0], [0, values[1], 0], [0, 0, values[2]]]
    if len(values) == 9:
        return [list(values[0:3]), list(values[3:6]), list(values[6:9])]
    raise CommandError(f"{option} takes 3 integers (diagonal) or 9 (a 3x3 matrix)")


def sscha_maker(args: argparse.Namespace) -> Any:
    """The :class:`~tdphonon.flows.sscha.SSCHAMaker` of the options of :func:`add_sscha_options`.

    Also checks the temperatures and switches progress bars on unless ``--quiet``.
    """
    from tdphonon.flows.sscha import SSCHAMaker

    if any(t < 0 for t in args.temperatures):
        raise CommandError("temperatures must be >= 0 K")
    if args.statistics == "classical" and any(t == 0 for t in args.temperatures):
        raise CommandError("classical statistics need temperatures above 0 K")
    if not args.quiet:
        os.environ["TDPHONON_PROGRESS"] = "1"
    return SSCHAMaker(
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        relax=not args.no_relax,
        supercell_matrix=supercell_matrix_option(args.supercell),
        min_length=args.min_length,
        sscha_settings={
            "statistics": args.statistics,
            "seed": args.seed,
            "frequency_tolerance": args.tolerance,
            "max_snapshots": args.max_snapshots,
        },
    )


def command(args: argparse.Namespace) -> int:
    """Run the SSCHA workflow of one crystal and report."""
    from tdphonon.stores import get_store, run_flow
    from tdphonon.structures import read_structure

    structure = read_structure(args.structure)
    maker = sscha_maker(args)
    store = get_store(args.store)
    kappa = None
    if args.kappa:
        from tdphonon.cli.kappa import conductivity_maker, kappa_summary
        from tdphonon.flows.conductivity import SSCHAConductivityMaker, run_conductivity_flow

        if any(t <= 0 for t in args.temperatures):
            raise CommandError("--kappa needs temperatures above 0 K")
        flow = SSCHAConductivityMaker(
            sscha_maker=maker, conductivity_maker=conductivity_maker(args)
        ).make(structure, temperatures=args.temperatures)
        harmonic, results, kappa_doc = run_conductivity_flow(flow, store)
        kappa = None if kappa_doc is None else kappa_summary(kappa_doc)
    else:
        flow = maker.make(structure, temperatures=args.temperatures)
        harmonic, results = run_flow(flow, store)

    summary = summarise(harmonic, results)
    print(format_table(summary))
    if kappa is not None:
        from tdphonon.cli.kappa import format_kappa_table, write_kappa_plot

        summary["kappa"] = kappa
        print(format_kappa_table(kappa))
        if not args.no_plots:
            print(f"plot: {write_kappa_plot(kappa, Path(args.plots))}")
    if not args.no_plots:
        for path in write_plots(harmonic, results, Path(args.plots), args.tolerance):
            print(f"plot: {path}")
    if args.export:
        for path in export_phonopy(harmonic, results, Path(args.export)):
            print(f"phonopy file: {path}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
        print(f"summary: {args.json}")
    return 0


def summarise(harmonic: dict[str, Any], results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """JSON summary: harmonic reference and one entry per temperature."""
    structure = harmonic["structure"]
    formula = structure.composition.reduced_formula if hasattr(structure, "composition") else ""
    entries = []
    for doc in results:
        entries.append(
            {
                "temperature": doc["temperature"],
                "converged": doc["converged"],
                "message": doc["message"],
                "n_force_evaluations": doc["n_force_evaluations"],
                "n_iterations": doc["n_iterations"],
                "free_energy": doc["free_energy"],
                "free_energy_error": doc["free_energy_error"],
                "free_energy_note": doc["free_energy_note"],
                "has_imaginary_modes": doc["has_imaginary_modes"],
                "stabilised": doc["stabilised"],
                "min_frequency": doc["min_frequency"],
                "mean_frequency_shift": doc["mean_frequency_shift"],
                "frequencies": doc["labelled_frequencies"],
                "frequency_shifts": doc["frequency_shifts"],
                "statistics": doc["statistics"],
            }
        )
    return {
        "formula": formula,
        "model": harmonic["provenance"].get("model", {}),
        "harmonic": {
            "has_imaginary_modes": harmonic["has_imaginary_modes"],
            "min_frequency": harmonic["min_frequency"],
            "frequencies": harmonic["labelled_frequencies"],
            "n_force_evaluations": harmonic["n_force_evaluations"],
        },
        "results": entries,
        "n_force_evaluations": harmonic["n_force_evaluations"]
        + sum(e["n_force_evaluations"] for e in entries),
    }


def format_table(summary: dict[str, Any]) -> str:
    """Plain-text summary table, one row per temperature."""
    harmonic = summary["harmonic"]
    gamma_label = next((k for k in harmonic["frequencies"] if k.upper() in ("GAMMA", "Γ")), None)

    def gamma_optical(frequencies: dict[str, list[float]]) -> str:
        if gamma_label is None or gamma_label not in frequencies:
            return "-"
        return f"{max(frequencies[gamma_label]):.3f}"

    header = (
        f"{'T (K)':>8} {'conv':>5} {'min f':>8} {'f_G max':>8} {'<shift>':>8} "
        f"{'stabil.':>7} {'F (eV/atom)':>20} {'evals':>7}"
    )
    lines = [
        f"tdphonon results for {summary['formula']}  (frequencies in THz)",
        header,
        "-" * len(header),
        f"{'harm.':>8} {'':>5} {harmonic['min_frequency']:8.3f} "
        f"{gamma_optical(harmonic['frequencies']):>8} {'':>8} {'':>7} {'':>20} "
        f"{harmonic['n_force_evaluations']:7d}",
    ]
    for entry in summary["results"]:
        if entry["free_energy"] is None:
            free_energy = "undefined"
        else:
            free_energy = f"{entry['free_energy']:.5f}±{entry['free_energy_error']:.5f}"
        lines.append(
            f"{entry['temperature']:8.1f} {'yes' if entry['converged'] else 'NO':>5} "
            f"{entry['min_frequency']:8.3f} {gamma_optical(entry['frequencies']):>8} "
            f"{entry['mean_frequency_shift']:+8.3f} {'yes' if entry['stabilised'] else '-':>7} "
            f"{free_energy:>20} {entry['n_force_evaluations']:7d}"
        )
    not_converged = [e for e in summary["results"] if not e["converged"]]
    for entry in not_converged:
        lines.append(f"WARNING: {entry['temperature']:g} K: {entry['message']}")
    lines.append(f"total force evaluations: {summary['n_force_evaluations']}")
    return "\n".join(lines)


def write_plots(
    harmonic: dict[str, Any], results: Sequence[dict[str, Any]], directory: Path, tolerance: float
) -> list[Path]:
    """Band structures at all temperatures overlaid, and SSCHA convergence."""
    from tdphonon.plotting import plot_band_structures, plot_convergence

    directory.mkdir(parents=True, exist_ok=True)
    formula = harmonic["structure"].composition.reduced_formula
    bands = {"harmonic": harmonic["band_structure"]}
    bands.update({f"{doc['temperature']:g} K": doc["band_structure"] for doc in results})
    histories = {f"{doc['temperature']:g} K": doc["history"] for doc in results}
    return [
        plot_band_structures(bands, directory / f"{formula}_bands.png", title=formula),
        plot_convergence(histories, directory / f"{formula}_convergence.png", tolerance),
    ]


def export_phonopy(
    harmonic: dict[str, Any], results: Sequence[dict[str, Any]], directory: Path
) -> list[Path]:
    """phonopy_harmonic.yaml and phonopy_<T>K.yaml with force constants."""
    import numpy as np

    from tdphonon.structures import make_phonopy

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    targets = [("harmonic", harmonic)] + [(f"{doc['temperature']:g}K", doc) for doc in results]
    for tag, doc in targets:
        phonon = make_phonopy(doc["structure"], doc["supercell_matrix"])
        phonon.force_constants = np.asarray(doc["force_constants"], dtype=float)
        path = directory / f"phonopy_{tag}.yaml"
        phonon.save(path, settings={"force_constants": True})
        paths.append(path)
    return paths
