"""``tdphonon submit``: add a campaign (one flow per structure) to a FireWorks launchpad."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tdphonon.cli.options import (
    add_connection_options,
    add_sscha_options,
    add_structure_filter_options,
    add_temperatures_option,
    check_temperatures,
    connection_kwargs,
    existing_path,
    launchpad_file,
    output_file,
    positive_int,
    sscha_maker,
    store_file,
    structure_filter,
)

SUBMIT_EPILOG = """\
examples:
  tdphonon submit structures/ --temperatures 100 300 600 --model /models/M3GNet-MP-2021.2.8-PES
  tdphonon submit Si.cif NaCl.cif mp-149 --kappa --launchpad my_launchpad.yaml
  tdphonon submit batch.json --finetune-data dft_forces/ --dry-run
  tdphonon submit ../shared/data/phonondb/unitcells.json.xz --max-atoms 10 --sample 100

STRUCTURES are files (CIF, POSCAR/CONTCAR, *.vasp, pymatgen JSON of one structure or a
list), JSON collections (.json, .json.xz, .json.gz: records with poscar and mpid/id, such
as phonondb's unitcells.json.xz), folders of such files, or Materials Project ids (with
MP_API_KEY set and the mp-api client installed); the selection options pick some of
them. 'tdphonon run STRUCTURES... --workers N' runs the same campaign on this machine. Each structure becomes one workflow: [fine-tuning ->] relax ->
harmonic -> SSCHA iterations per temperature [-> thermal conductivity]. A structure
already submitted with the same settings (same crystal, model, temperatures, options) is
skipped, so re-running the same command is safe.

Workers: force-evaluation-heavy jobs (SSCHA iterations, harmonic forces, fine-tuning)
get the FireWorks category of --heavy-category (default gpu), the others
--light-category (default cpu); start workers with an fworker file naming that category
(workflows/my_fworker_gpu.yaml, workflows/my_fworker_cpu.yaml). Outputs go to each
worker's jobflow JOB_STORE (workflows/jobflow.yaml: MongoDB + GridFS) unless --store is
given here.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``submit`` to the sub-command parsers."""
    parser = sub.add_parser(
        "submit",
        help="submit a campaign of structures to FireWorks (one workflow per structure)",
        description="Build one tdphonon workflow per structure and add the new ones to a "
        "FireWorks launchpad; structures already submitted with the same settings are "
        "skipped.",
        epilog=SUBMIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("structures", nargs="+", help="structure files, folders or mp-ids")
    add_temperatures_option(parser, "temperatures in K (default: 300)")
    add_sscha_options(parser)
    parser.add_argument(
        "--finetune-data",
        nargs="+",
        type=existing_path,
        metavar="PATH",
        help="fine-tune the model on these data first; every SSCHA job uses the result",
    )
    parser.add_argument("--kappa", action="store_true", help="add the thermal conductivity")
    parser.add_argument(
        "--launchpad",
        type=launchpad_file,
        metavar="FILE",
        help="my_launchpad.yaml (default: the FireWorks config, LaunchPad.auto_load())",
    )
    parser.add_argument(
        "--store",
        type=store_file,
        metavar="FILE",
        help="jobflow.yaml / JSON JobStore written into the workflows (default: each "
        "worker's own JOB_STORE)",
    )
    parser.add_argument(
        "--heavy-category",
        default="gpu",
        help="category of heavy jobs; 'none' for any worker (default gpu)",
    )
    parser.add_argument(
        "--light-category",
        default="cpu",
        help="category of light jobs; 'none' for any worker (default cpu)",
    )
    parser.add_argument(
        "--routing",
        choices=["category", "fworker"],
        default="category",
        help="route with FireWorks _category or _fworker (default category)",
    )
    parser.add_argument(
        "--submit-batch",
        type=positive_int,
        default=200,
        metavar="N",
        help="workflows added per database round trip (default 200)",
    )
    parser.add_argument("--dry-run", action="store_true", help="build and check, submit nothing")
    parser.add_argument(
        "--resubmit", action="store_true", help="submit even structures already on the launchpad"
    )
    parser.add_argument("--mp-api-key", help="Materials Project API key (default $MP_API_KEY)")
    add_connection_options(parser)
    add_structure_filter_options(parser)
    parser.add_argument(
        "--json",
        type=output_file,
        metavar="FILE",
        help="write the submission report as JSON (its directory must exist)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or logs")
    return parser


def _category(value: str) -> str | None:
    return None if value.strip().lower() in ("", "none", "any") else value


def command(args: argparse.Namespace) -> int:
    """Submit the campaign."""
    check_temperatures(args.temperatures, args.statistics, kappa=args.kappa)
    from tdphonon.stores import connect_launchpad, connect_store, store_from_file

    # the databases first: an unreachable one is reported within --timeout, before the
    # campaign's imports (the potentials: seconds)
    connection = connection_kwargs(args)
    launchpad = None
    if not args.dry_run:
        launchpad = connect_launchpad(args.launchpad, **connection)
    store = None
    if args.store:
        store = connect_store(store_from_file(args.store), **connection)
    from tdphonon.campaign import CampaignMaker, read_structures, submit_flows

    structures = read_structures(
        args.structures, mp_api_key=args.mp_api_key, selection=structure_filter(args)
    )
    # --born belongs to one crystal (sscha_maker refuses it with several structures)
    single = structures[0][1] if len(structures) == 1 else None
    maker = CampaignMaker(
        sscha_maker=sscha_maker(args, single, progress=False),  # no bars in worker logs
        temperatures=args.temperatures,
        finetune_data=args.finetune_data,
        kappa=args.kappa,
        heavy_category=_category(args.heavy_category),
        light_category=_category(args.light_category),
        routing=args.routing,
    )
    report = submit_flows(
        structures,
        maker,
        launchpad,
        store=store,
        batch_size=args.submit_batch,
        skip_existing=not args.resubmit,
        dry_run=args.dry_run,
        progress=not args.quiet,
    )
    for name, reason in report.invalid:
        print(f"invalid: {name}: {reason}")
    print(("dry run: " if args.dry_run else "") + report.summary())
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "submitted": report.submitted,
                    "skipped": report.skipped,
                    "invalid": report.invalid,
                    "dry_run": args.dry_run,
                },
                handle,
                indent=1,
            )
    return 1 if report.invalid and not report.submitted and not report.skipped else 0
