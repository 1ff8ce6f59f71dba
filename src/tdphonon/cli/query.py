"""``tdphonon query``: materials, status and results in a JobStore."""

from __future__ import annotations

import argparse
from typing import Any

from tdphonon.cli.options import (
    add_connection_options,
    connection_kwargs,
    launchpad_file,
    output_file,
    store_spec,
)

QUERY_EPILOG = """\
examples:
  tdphonon query                                   # the embedded store ~/.tdphonon/store
  tdphonon query --store workflows/jobflow.yaml --status failed
  tdphonon query --store jobflow.yaml --formula Si --csv si.csv
  tdphonon query --store jobflow.yaml --launchpad my_launchpad.yaml --json all.json

Statuses: completed, not converged (the SSCHA stopped at a limit: see the reason),
failed (the stored reason: NaN forces, diverging SSCHA, or a FIZZLED FireWork with
--launchpad), running, waiting (with --launchpad: submitted, not started).
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``query`` to the sub-command parsers."""
    parser = sub.add_parser(
        "query",
        help="list materials, their status and results; export CSV/JSON",
        description="List the materials of a store with their status, or (--results) one "
        "row per material and temperature with free energies, frequency shifts and kappa.",
        epilog=QUERY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--store",
        type=store_spec,
        help="embedded store directory or jobflow.yaml / JSON (default ~/.tdphonon/store)",
    )
    parser.add_argument(
        "--launchpad",
        type=launchpad_file,
        metavar="FILE",
        help="my_launchpad.yaml: add FireWorks states",
    )
    parser.add_argument("--formula", help="only this composition (e.g. Si, NaCl)")
    parser.add_argument(
        "--status",
        choices=["completed", "not converged", "failed", "running", "waiting"],
        help="only materials with this status",
    )
    parser.add_argument(
        "--results", action="store_true", help="print one row per material and temperature"
    )
    parser.add_argument(
        "--csv", type=output_file, metavar="FILE", help="write the results table as CSV"
    )
    parser.add_argument(
        "--json", type=output_file, metavar="FILE", help="write the results table as JSON"
    )
    parser.add_argument(
        "--indexes",
        action="store_true",
        help="create indexes on the queried fields first (MongoDB)",
    )
    add_connection_options(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no logs")
    return parser


def command(args: argparse.Namespace) -> int:
    """Print and export."""
    import pandas as pd

    from tdphonon.query import CampaignResults, ensure_indexes
    from tdphonon.stores import connect_launchpad, connect_store, get_store

    connection = connection_kwargs(args)
    store = connect_store(get_store(args.store, **connection), **connection)
    launchpad = None
    if args.launchpad:
        launchpad = connect_launchpad(args.launchpad, **connection)
    if args.indexes:
        ensure_indexes(store)
    results = CampaignResults(store, launchpad, retries=args.retries)
    rows = results.materials(formula=args.formula, status=args.status)
    if not rows:
        print("no materials found")
        return 0
    with pd.option_context(
        "display.max_rows", 500, "display.width", 160, "display.max_colwidth", 80
    ):
        if args.results or args.csv or args.json:
            table = results.table(formula=args.formula)
            if args.status:
                table = table[table["status"] == args.status]
            columns = [
                c
                for c in (
                    "material",
                    "formula",
                    "status",
                    "temperature",
                    "free_energy",
                    "mean_frequency_shift",
                    "min_frequency",
                    "converged",
                    "kappa_harmonic",
                    "kappa_renormalized",
                )
                if c in table
            ]
            if args.results:
                print(table[columns].to_string(index=False))
            if args.csv:
                table.to_csv(args.csv, index=False)
                print(f"wrote {args.csv}")
            if args.json:
                table.to_json(args.json, orient="records", indent=1)
                print(f"wrote {args.json}")
        if not args.results:
            frame = pd.DataFrame(rows)[
                ["material", "formula", "status", "temperatures_done", "reason"]
            ]
            print(frame.to_string(index=False))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    print(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    return 0
