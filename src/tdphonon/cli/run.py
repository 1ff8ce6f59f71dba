"""``tdphonon run``: temperature-dependent phonons of one crystal."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tdphonon.cli.options import (
    add_kappa_options,
    add_sscha_options,
    add_store_option,
    add_temperatures_option,
    check_temperatures,
    conductivity_maker,
    output_dir,
    output_file,
    sscha_maker,
)

RUN_EPILOG = """\
examples:
  tdphonon run examples/Si.cif --temperatures 100 300 600 --model path/to/M3GNet-MP-2021.2.8-PES
  tdphonon run examples/Al_fcc.cif --model emt --temperatures 300 800 --json al.json
  tdphonon run POSCAR --no-relax --supercell 3 3 3 --statistics classical --export phonopy_files

The model comes from --model or the TDPHONON_MODEL environment variable: a matgl model
folder (model.json, model.pt, state.pt), a matgl hub name, or 'emt'; without either, the
pretrained M3GNet-MP-2021.2.8-PES from the matgl hub (downloaded once). The default store
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
    run.add_argument(
        "--export",
        type=output_dir,
        metavar="DIR",
        help="write phonopy files with force constants",
    )
    run.add_argument(
        "--json",
        type=output_file,
        metavar="FILE",
        help="write a JSON summary (its directory must exist)",
    )
    run.add_argument(
        "--plots",
        type=output_dir,
        metavar="DIR",
        default=Path("."),
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
    add_kappa_options(run)
    return run


def command(args: argparse.Namespace) -> int:
    """Run the SSCHA workflow of one crystal and report."""
    check_temperatures(args.temperatures, args.statistics, kappa=args.kappa)
    from tdphonon.stores import get_store, run_flow
    from tdphonon.structures import read_structure

    structure = read_structure(args.structure)
    maker = sscha_maker(args, structure)
    store = get_store(args.store)
    kappa = None
    if args.kappa:
        from tdphonon.cli.kappa import kappa_summary
        from tdphonon.flows.conductivity import SSCHAConductivityMaker, run_conductivity_flow

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


def _rule() -> str:
    from tdphonon.phonons import ACOUSTIC_POCKET_RULE, IMAGINARY_TOLERANCE

    return (
        "has_imaginary_modes and min_frequency_excluding_acoustic_pockets: "
        f"{ACOUSTIC_POCKET_RULE}; "
        f"imaginary: below {IMAGINARY_TOLERANCE} THz. min_frequency: every mode. "
        "acoustic_pockets: the imaginary acoustic modes left out (q fractional, THz)"
    )


#: How ``has_imaginary_modes`` is decided, in the JSON summary.
IMAGINARY_MODES_RULE = _rule()


def frequency_report(doc: dict[str, Any]) -> dict[str, Any]:
    """Lowest frequencies of a harmonic or SSCHA document, with and without acoustic pockets.

    Documents written before the acoustic pockets were reported have only ``min_frequency``
    (then with the pockets left out): it fills both values, and the pockets are unknown (None).
    """
    excluding = doc.get("min_frequency_excluding_acoustic_pockets")
    return {
        "min_frequency": doc["min_frequency"],
        "min_frequency_excluding_acoustic_pockets": (
            doc["min_frequency"] if excluding is None else excluding
        ),
        "acoustic_pockets": doc.get("acoustic_pockets") if excluding is not None else None,
    }


def _structure(doc: dict[str, Any]) -> Any:
    from pymatgen.core import Structure

    structure = doc["structure"]
    return Structure.from_dict(structure) if isinstance(structure, dict) else structure


def supercell_report(harmonic: dict[str, Any]) -> dict[str, Any]:
    """Size and matrix of the supercell used (of the standard primitive cell)."""
    structure = _structure(harmonic)
    return {
        "n_atoms": harmonic["n_supercell_atoms"],
        "matrix": harmonic["supercell_matrix"],
        "of": f"standard primitive cell ({len(structure)} atoms), phonopy convention",
    }


def nac_report(harmonic: dict[str, Any]) -> str:
    """Whether the bands include the non-analytical term correction (LO-TO splitting).

    Without Born charges, every crystal of more than one element gets the note: LO-TO
    splitting exists in polar crystals, and tdphonon does not tell insulators from metals.
    """
    structure = _structure(harmonic)
    if harmonic.get("nac_params") is not None:
        return "Born effective charges given (--born): LO-TO splitting included"
    if len(structure.composition.elements) < 2:
        return "not needed: one element, no LO-TO splitting"
    return (
        "none: the potential gives no Born effective charges, so no LO-TO splitting (if the "
        "crystal is polar); use --born BORN for it"
    )


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
                **frequency_report(doc),
                "mean_frequency_shift": doc["mean_frequency_shift"],
                "frequencies": doc["labelled_frequencies"],
                "frequency_errors": doc.get("labelled_frequency_errors") or {},
                "max_frequency_error": max(
                    (
                        e
                        for errors in (doc.get("labelled_frequency_errors") or {}).values()
                        for e in errors
                    ),
                    default=None,
                ),
                "frequency_shifts": doc["frequency_shifts"],
                "statistics": doc["statistics"],
            }
        )
    return {
        "formula": formula,
        "model": harmonic["provenance"].get("model", {}),
        "supercell": supercell_report(harmonic),
        "imaginary_modes_rule": IMAGINARY_MODES_RULE,
        "nac": nac_report(harmonic),
        "harmonic": {
            "has_imaginary_modes": harmonic["has_imaginary_modes"],
            **frequency_report(harmonic),
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

    def gamma_optical(entry: dict[str, Any]) -> str:
        """Highest frequency at Gamma, with its standard error where it has one."""
        frequencies = entry["frequencies"]
        # one atom per primitive cell: the 3 modes at Gamma are acoustic (0), no optical one
        if gamma_label is None or len(frequencies.get(gamma_label) or []) <= 3:
            return "-"
        errors = (entry.get("frequency_errors") or {}).get(gamma_label)
        text = f"{frequencies[gamma_label][-1]:.3f}"
        return f"{text}±{errors[-1]:.3f}" if errors else text

    def lowest(entry: dict[str, Any]) -> str:
        """min f (acoustic pockets left out) and the lowest acoustic pocket."""
        pockets = entry.get("acoustic_pockets")
        pocket = "?" if pockets is None else "-"
        if pockets:
            pocket = f"{min(p['frequency'] for p in pockets):.3f}"
        excluding = entry.get("min_frequency_excluding_acoustic_pockets", entry["min_frequency"])
        return f"{excluding:8.3f} {pocket:>8}"

    def sigma_max(entry: dict[str, Any]) -> str:
        value = entry.get("max_frequency_error")
        return "-" if value is None else f"{value:.3f}"

    header = (
        f"{'T (K)':>8} {'conv':>5} {'min f':>8} {'pocket':>8} {'f_G max':>12} {'<shift>':>8} "
        f"{'σ max':>6} {'stabil.':>7} {'F (eV/atom)':>20} {'evals':>7}"
    )
    lines = [f"tdphonon results for {summary['formula']}  (frequencies in THz)"]
    if summary.get("supercell"):
        cell = summary["supercell"]
        lines.append(
            f"supercell: {cell['n_atoms']} atoms, matrix {cell['matrix']} of the {cell['of']}"
        )
    lines += [
        header,
        "-" * len(header),
        f"{'harm.':>8} {'':>5} {lowest(harmonic)} "
        f"{gamma_optical(harmonic):>12} {'':>8} {'':>6} {'':>7} {'':>20} "
        f"{harmonic['n_force_evaluations']:7d}",
    ]
    for entry in summary["results"]:
        if entry["free_energy"] is None:
            free_energy = "undefined"
        else:
            free_energy = f"{entry['free_energy']:.5f}±{entry['free_energy_error']:.5f}"
        lines.append(
            f"{entry['temperature']:8.1f} {'yes' if entry['converged'] else 'NO':>5} "
            f"{lowest(entry)} {gamma_optical(entry):>12} "
            f"{entry['mean_frequency_shift']:+8.3f} {sigma_max(entry):>6} "
            f"{'yes' if entry['stabilised'] else '-':>7} "
            f"{free_energy:>20} {entry['n_force_evaluations']:7d}"
        )
    not_converged = [e for e in summary["results"] if not e["converged"]]
    for entry in not_converged:
        lines.append(f"WARNING: {entry['temperature']:g} K: {entry['message']}")
    lines.append(
        "f_G max: highest optical frequency at Gamma ('-': one atom per primitive cell, "
        "no optical mode); ±: its bootstrap standard error; σ max: the largest standard error "
        "of a frequency at a labelled point (--tolerance bounds each; all in --json as "
        "frequency_errors)"
    )
    lines.append(
        "min f: lowest frequency on the band path and a q-mesh, the acoustic branches near "
        "Gamma (inside the first shell of commensurate q-points, where only interpolation "
        "determines them) left out; imaginary modes (has_imaginary_modes) are judged on it. "
        "pocket: the lowest of those acoustic modes when imaginary ('-': none)"
    )
    nac = summary.get("nac", "")
    if nac.startswith("none"):
        lines.append(f"NAC: {nac}")
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
    note = None
    if nac_report(harmonic).startswith("none"):
        note = "No LO-TO splitting: the potential gives no Born effective charges (--born BORN)"
    errors = {
        f"{doc['temperature']:g} K": (doc["labelled_frequencies"], doc["labelled_frequency_errors"])
        for doc in results
        if doc.get("labelled_frequency_errors")
    }
    return [
        plot_band_structures(
            bands, directory / f"{formula}_bands.png", title=formula, note=note, errors=errors
        ),
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
        # the harmonic document's Born charges (per site of the same standard primitive cell)
        phonon = make_phonopy(
            doc["structure"], doc["supercell_matrix"], nac_params=harmonic.get("nac_params")
        )
        phonon.force_constants = np.asarray(doc["force_constants"], dtype=float)
        path = directory / f"phonopy_{tag}.yaml"
        phonon.save(path, settings={"force_constants": True})
        paths.append(path)
    return paths
