"""``tdphonon run``: temperature-dependent phonons of one crystal, or of many (a campaign
on this machine: :func:`tdphonon.campaign.run_campaign`)."""

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
    add_structure_filter_options,
    add_temperatures_option,
    add_workers_options,
    check_temperatures,
    conductivity_maker,
    output_dir,
    sscha_maker,
    structure_filter,
)

RUN_EPILOG = """\
examples:
  tdphonon run examples/Si.cif --temperatures 100 300 600 --model path/to/M3GNet-MP-2021.2.8-PES
  tdphonon run examples/Al_fcc.cif --model emt --temperatures 300 800 --json al.json
  tdphonon run POSCAR --no-relax --supercell 3 3 3 --statistics classical --export phonopy_files
  tdphonon run structures/ A.cif B.vasp --model emt --workers 4 --json campaign.json
  tdphonon run ../shared/data/phonondb/unitcells.json.xz --max-atoms 10 --sample 20 --seed 0

Several structures (or a folder, a JSON collection such as phonondb's unitcells.json.xz,
Materials Project ids, or any selection option) make a campaign: every structure with the
same options, in --workers processes that each load the model once, into the store; a
progress bar, then a summary of what finished and what failed and why (tdphonon query
shows every result). Structures already finished in the store with the same settings are
skipped, so rerunning the command resumes it; failed ones are skipped too unless
--retry-failed. 'tdphonon submit' sends the same campaign to FireWorks.

The model comes from --model or the TDPHONON_MODEL environment variable: a matgl model
folder (model.json, model.pt, state.pt), a model shipped with tdphonon or a matgl hub name
('tdphonon models' lists those it knows), or 'emt'; without either, the shipped
M3GNet-phonondb-PBEsol (M3GNet fine-tuned on phonondb, PBEsol). The default store
is an embedded database under ~/.tdphonon/store (TDPHONON_STORE_DIR changes it).
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``run`` to the sub-command parsers."""
    run = sub.add_parser(
        "run",
        help="temperature-dependent phonons of a crystal, or a campaign of many on this "
        "machine (relax, harmonic, SSCHA per T)",
        description="Relax a crystal with the potential, compute its harmonic phonons, then "
        "the SSCHA at each temperature (warm-started from the previous one). Prints a "
        "summary table, writes plots and stores every intermediate in the JobStore. Several "
        "structures make a campaign (see below).",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "structures",
        nargs="+",
        metavar="STRUCTURE",
        help="crystal structure file (CIF, POSCAR, pymatgen JSON, ...); several, folders, "
        "JSON collections (.json, .json.xz, .json.gz) or Materials Project ids: a campaign",
    )
    add_temperatures_option(run, "temperatures in K, done in the given order (default: 300)")
    add_sscha_options(run)
    add_store_option(run)
    run.add_argument(
        "--export",
        type=output_dir,
        metavar="DIR",
        help="write phonopy files with force constants",
    )
    add_report_options(
        run,
        "write a JSON summary (a campaign: one row per structure, and the totals)",
        "band-structure and convergence plots (one structure)",
    )
    run.add_argument(
        "--kappa",
        action="store_true",
        help="also the lattice thermal conductivity with the harmonic and the SSCHA fc2 at "
        "each T (fc3 once; see 'tdphonon kappa --help' and the options below)",
    )
    add_kappa_options(run)
    add_structure_filter_options(run)
    add_workers_options(run)
    return run


def is_campaign(args: argparse.Namespace) -> bool:
    """Whether the command line asks for a campaign rather than one crystal's run: several
    inputs, a folder, a collection, a Materials Project id, or a campaign option."""
    if len(args.structures) > 1 or args.workers is not None or args.retry_failed:
        return True
    if structure_filter(args) is not None:
        return True
    path = Path(args.structures[0]).expanduser()
    if path.is_dir():
        return True
    if not path.exists():
        return args.structures[0].lower().startswith(("mp-", "mvc-"))
    if path.name.lower().endswith((".json", ".json.xz", ".json.gz")):
        from tdphonon.campaign import is_collection  # reads a .json to tell

        return is_collection(path)
    return False


def command(args: argparse.Namespace) -> int:
    """Run the SSCHA workflow of one crystal, or a campaign, and report."""
    check_temperatures(args.temperatures, args.statistics, kappa=args.kappa)
    if is_campaign(args):
        return campaign(args)
    from tdphonon.stores import get_store, run_flow
    from tdphonon.structures import read_structure

    structure = read_structure(args.structures[0])
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


def campaign(args: argparse.Namespace) -> int:
    """Run every structure given into the store (:func:`tdphonon.campaign.run_campaign`) and
    print the summary; 0 once the campaign ran, even if some structures failed."""
    if args.export:
        raise CommandError(
            "--export writes the phonopy files of one crystal: give a single structure "
            "(a campaign's results: tdphonon query)"
        )
    if args.plots != Path("."):
        raise CommandError(
            "--plots draws one crystal: give a single structure (a campaign draws nothing)"
        )
    from tdphonon.campaign import CampaignMaker, read_structures, run_campaign
    from tdphonon.stores import get_store

    maker = CampaignMaker(
        sscha_maker=sscha_maker(args, None, progress=False),  # --born: refused (one crystal)
        temperatures=args.temperatures,
        kappa=args.kappa,
        conductivity_maker=conductivity_maker(args) if args.kappa else None,
        heavy_category=None,  # FireWorks routing: not used here
        light_category=None,
    )
    store = get_store(args.store)
    structures = read_structures(args.structures, selection=structure_filter(args))
    result = run_campaign(
        structures,
        maker,
        store,
        workers=None if args.workers in (None, "auto") else args.workers,
        retry_failed=args.retry_failed,
        progress=not args.quiet,
    )
    print(result.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(), indent=1))
        print(f"summary: {args.json}")
    return 0
