"""``tdphonon kappa``: lattice thermal conductivity, harmonic and SSCHA-renormalised."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tdphonon.cli import CommandError
from tdphonon.cli.options import (
    add_kappa_options,
    add_sscha_options,
    add_store_option,
    add_temperatures_option,
    conductivity_maker,
    existing_path,
    output_dir,
    output_file,
    sscha_maker,
)

KAPPA_EPILOG = """\
modes:
  potential end to end (relax, harmonic, SSCHA per T, fc3 once, kappa with the harmonic
  and the renormalised fc2 at each T):
    tdphonon kappa examples/Si.cif --model path/to/M3GNet-MP-2021.2.8-PES \\
        --temperatures 300 600 --mesh 11 11 11 --json si_kappa.json
  DFT force sets (phono3py files; harmonic fc2 only), to compare on the same grid:
    tdphonon kappa --phono3py phono3py_params_NaCl222.yaml.xz --mesh 11 11 11 -T 300
    tdphonon kappa --phono3py phono3py_disp.yaml --forces FORCES_FC3 --mesh 11 11 11 -T 300

The JSON file (--json) holds, per temperature, "temperature", "kappa_harmonic" and
"kappa_renormalized" (W/m-K, six components xx yy zz yz xz xy, null where not computed or
not defined) and "reason_harmonic" / "reason_renormalized" (null, or why kappa is null,
e.g. imaginary modes of that fc2). kappa is phono3py's (RTA unless --lbte); fc3 comes
from random-displacement supercells fitted with symfc unless --fc3-method finite.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``kappa`` to the sub-command parsers."""
    parser = sub.add_parser(
        "kappa",
        help="lattice thermal conductivity with harmonic and SSCHA force constants (phono3py)",
        description="Lattice thermal conductivity (phono3py) at each temperature with the "
        "harmonic and with the SSCHA-renormalised second-order force constants, the "
        "third-order ones being the same; or from DFT force sets (--phono3py).",
        epilog=KAPPA_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "structure", nargs="?", help="crystal structure file (potential mode; CIF, POSCAR, ...)"
    )
    parser.add_argument(
        "--phono3py",
        type=existing_path,
        metavar="FILE",
        help="DFT mode: phono3py_params*.yaml[.xz], or phono3py_disp.yaml with --forces",
    )
    parser.add_argument(
        "--forces", type=existing_path, metavar="FORCES_FC3", help="DFT mode: FORCES_FC3 file"
    )
    parser.add_argument(
        "--fc2-forces", type=existing_path, metavar="FORCES_FC2", help="DFT mode: FORCES_FC2 file"
    )
    add_temperatures_option(parser, "temperatures in K (> 0; default 300)", positive=True)
    add_kappa_options(parser)
    add_sscha_options(parser)
    add_store_option(parser)
    parser.add_argument(
        "--json",
        type=output_file,
        metavar="FILE",
        help="write the per-temperature kappa JSON (its directory must exist)",
    )
    parser.add_argument(
        "--plots",
        type=output_dir,
        metavar="DIR",
        default=Path("."),
        help="directory for the kappa(T) plot (default: current)",
    )
    parser.add_argument("--no-plots", action="store_true", help="do not write plots")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or logs")
    return parser


def command(args: argparse.Namespace) -> int:
    """Compute kappa in one of the two modes and report."""
    if args.phono3py and args.structure:
        raise CommandError("give either a STRUCTURE (potential mode) or --phono3py FILE, not both")
    if args.phono3py:
        summary = _dft_mode(args)
    elif args.structure:
        summary = _potential_mode(args)
    else:
        raise CommandError("give a STRUCTURE file (potential mode) or --phono3py FILE (DFT mode)")
    print(format_kappa_table(summary))
    if not args.no_plots:
        print(f"plot: {write_kappa_plot(summary, Path(args.plots))}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
        print(f"kappa: {args.json}")
    return 0


def _potential_mode(args: argparse.Namespace) -> dict[str, Any]:
    from tdphonon.flows.conductivity import SSCHAConductivityMaker, run_conductivity_flow
    from tdphonon.stores import get_store
    from tdphonon.structures import read_structure

    if args.forces or args.fc2_forces:
        raise CommandError("--forces and --fc2-forces belong to --phono3py (DFT mode)")
    structure = read_structure(args.structure)
    maker = SSCHAConductivityMaker(
        sscha_maker=sscha_maker(args, structure), conductivity_maker=conductivity_maker(args)
    )
    store = get_store(args.store)  # connected before the model loads
    flow = maker.make(structure, temperatures=args.temperatures)
    _, _, doc = run_conductivity_flow(flow, store)
    if doc is None:
        raise CommandError("the kappa summary job did not run; see the job outputs in the store")
    return kappa_summary(doc)


def _dft_mode(args: argparse.Namespace) -> dict[str, Any]:
    from tdphonon.conductivity import ConductivitySettings, dft_kappa

    if args.model:
        raise CommandError("--model does not apply to --phono3py (the forces are DFT's)")
    settings = ConductivitySettings(
        mesh=tuple(args.mesh), method="lbte" if args.lbte else "rta", isotope=args.isotope
    )
    try:
        result = dft_kappa(
            args.phono3py,
            args.temperatures,
            settings,
            forces=args.forces,
            fc2_forces=args.fc2_forces,
        )
    except ValueError as error:
        raise CommandError(str(error)) from None
    reason = "not computed: DFT force sets give the harmonic fc2 only"
    kappas = result.result.kappa_lists()
    return {
        "formula": result.formula,
        "source": str(args.phono3py),
        "forces": None if args.forces is None else str(args.forces),
        "mesh": list(settings.mesh),
        "method": settings.method,
        "isotope": settings.isotope,
        "nac": result.nac,
        "fc3_supercell_matrix": result.supercell_matrix,
        "fc2_supercell_matrix": result.phonon_supercell_matrix,
        "n_fc3_supercells": result.n_fc3_supercells,
        "results": [
            {
                "temperature": float(t),
                "kappa_harmonic": kappa,
                "kappa_renormalized": None,
                "reason_harmonic": why,
                "reason_renormalized": reason,
                "ratio": None,
            }
            for t, kappa, why in zip(
                result.result.temperatures, kappas, result.result.reasons, strict=True
            )
        ],
    }


def kappa_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """JSON summary of a :class:`~tdphonon.schemas.ThermalConductivityDoc`."""
    settings = doc["settings"]
    return {
        "formula": doc["formula"],
        "source": "potential",
        "mesh": settings.get("mesh"),
        "method": settings.get("method"),
        "isotope": settings.get("isotope"),
        "fc3_method": doc["fc3_method"],
        "fc3_supercell_matrix": doc["fc3_supercell_matrix"],
        "fc2_supercell_matrix": doc["fc2_supercell_matrix"],
        "n_fc3_supercells": doc["n_fc3_supercells"],
        "n_force_evaluations": doc["n_force_evaluations"],
        "results": [
            {
                "temperature": t,
                "kappa_harmonic": harmonic,
                "kappa_renormalized": renormalized,
                "reason_harmonic": why_h,
                "reason_renormalized": why_r,
                "ratio": ratio,
            }
            for t, harmonic, renormalized, why_h, why_r, ratio in zip(
                doc["temperatures"],
                doc["kappa_harmonic"],
                doc["kappa_renormalized"],
                doc["harmonic_reasons"],
                doc["renormalized_reasons"],
                doc["ratio_trace"],
                strict=True,
            )
        ],
    }


def _average(kappa: Sequence[float] | None) -> str:
    if kappa is None:
        return "n/a"
    value = sum(kappa[:3]) / 3
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def format_kappa_table(summary: dict[str, Any]) -> str:
    """Plain-text table: kappa (average of xx, yy, zz) per temperature, both fc2."""
    header = f"{'T (K)':>8} {'kappa harm.':>12} {'kappa renorm.':>14} {'ratio':>7}"
    lines = [
        f"lattice thermal conductivity of {summary['formula']} (W/m-K, (xx+yy+zz)/3; "
        f"{summary['method']} on a {'x'.join(map(str, summary['mesh']))} mesh)",
        header,
        "-" * len(header),
    ]
    notes = []
    for entry in summary["results"]:
        ratio = entry["ratio"]
        lines.append(
            f"{entry['temperature']:8.1f} {_average(entry['kappa_harmonic']):>12} "
            f"{_average(entry['kappa_renormalized']):>14} "
            f"{'n/a' if ratio is None else f'{ratio:.3f}':>7}"
        )
        for kind in ("harmonic", "renormalized"):
            reason = entry[f"reason_{kind}"]
            if reason and not reason.startswith("not computed: DFT"):
                notes.append(f"{entry['temperature']:g} K, {kind}: {reason}")
    lines.extend(f"NOTE: {note}" for note in notes)
    if "n_force_evaluations" in summary:
        lines.append(
            f"fc3: {summary['n_fc3_supercells']} supercells ({summary['fc3_method']}); "
            f"total force evaluations: {summary['n_force_evaluations']}"
        )
    return "\n".join(lines)


def write_kappa_plot(summary: dict[str, Any], directory: Path) -> Path:
    """kappa versus temperature, harmonic and renormalised (or DFT) curves."""
    from tdphonon.plotting import plot_kappa_temperature

    directory.mkdir(parents=True, exist_ok=True)
    temperatures = [entry["temperature"] for entry in summary["results"]]
    harmonic_label = "harmonic fc2" if summary["source"] == "potential" else "DFT (harmonic fc2)"
    curves = {harmonic_label: [entry["kappa_harmonic"] for entry in summary["results"]]}
    if summary["source"] == "potential":
        curves["SSCHA fc2 at T"] = [entry["kappa_renormalized"] for entry in summary["results"]]
    return plot_kappa_temperature(
        temperatures,
        curves,
        directory / f"{summary['formula']}_kappa.png",
        title=f"{summary['formula']}: lattice thermal conductivity",
    )
