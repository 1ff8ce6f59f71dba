"""``tdphonon kappa``: lattice thermal conductivity, harmonic and SSCHA-renormalised."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tdphonon.cli import CommandError, report
from tdphonon.cli.options import (
    add_kappa_options,
    add_report_options,
    add_sscha_options,
    add_store_option,
    add_temperatures_option,
    conductivity_maker,
    existing_path,
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
    add_report_options(parser, "write the per-temperature kappa JSON", "the kappa(T) plot")
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
    print(report.format_kappa_table(summary))
    if not args.no_plots:
        print(f"plot: {report.write_kappa_plot(summary, Path(args.plots))}")
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
    return report.kappa_summary(doc)


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
    forces = None if args.forces is None else str(args.forces)
    return report.dft_kappa_summary(result, settings, str(args.phono3py), forces)
