"""``tdphonon run``: temperature-dependent phonons of one crystal."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tdphonon.cli import report
from tdphonon.cli.options import (
    add_kappa_options,
    add_report_options,
    add_sscha_options,
    add_store_option,
    add_temperatures_option,
    check_temperatures,
    conductivity_maker,
    output_dir,
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
    add_report_options(run, "write a JSON summary", "band-structure and convergence plots")
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
        from tdphonon.flows.conductivity import SSCHAConductivityMaker, run_conductivity_flow

        flow = SSCHAConductivityMaker(
            sscha_maker=maker, conductivity_maker=conductivity_maker(args)
        ).make(structure, temperatures=args.temperatures)
        harmonic, results, kappa_doc = run_conductivity_flow(flow, store)
        kappa = None if kappa_doc is None else report.kappa_summary(kappa_doc)
    else:
        flow = maker.make(structure, temperatures=args.temperatures)
        harmonic, results = run_flow(flow, store)

    summary = report.summarise(harmonic, results)
    print(report.format_table(summary))
    if kappa is not None:
        summary["kappa"] = kappa
        print(report.format_kappa_table(kappa))
        if not args.no_plots:
            print(f"plot: {report.write_kappa_plot(kappa, Path(args.plots))}")
    if not args.no_plots:
        for path in report.write_plots(harmonic, results, Path(args.plots), args.tolerance):
            print(f"plot: {path}")
    if args.export:
        for path in report.export_phonopy(harmonic, results, Path(args.export)):
            print(f"phonopy file: {path}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
        print(f"summary: {args.json}")
    return 0
