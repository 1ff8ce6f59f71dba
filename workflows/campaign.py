"""Submit (or check) a tdphonon campaign of thousands of structures, in batches.

Idempotent: every structure has a key (its standard primitive cell + the settings
below); keys already on the launchpad (or in the store) are skipped, so the script can be
re-run after an interruption, or with new structures appended, and only new work is
added. Edit SETTINGS for your campaign.

Usage::

    python workflows/campaign.py submit structures/ more.json mp-149 [--launchpad my_launchpad.yaml]
    python workflows/campaign.py status --store jobflow.yaml [--launchpad my_launchpad.yaml] [--csv out.csv]
    python workflows/campaign.py rerun-lost --launchpad my_launchpad.yaml [--hours 4]

``submit`` adds the workflows; the workers (``qlaunch`` with my_qadapter.yaml) run them.
``status`` counts materials per status and exports the results table. ``rerun-lost``
finds launches whose worker died (no heartbeat for ``--hours``) and makes them READY
again: the SSCHA resumes at the iteration that was lost (finished iterations are stored
and are not recomputed).
"""

from __future__ import annotations

import argparse
import logging
import sys

#: Campaign settings: they enter each material's key (changing them = a new campaign).
SETTINGS = {
    "model": None,  # matgl model folder; None: $TDPHONON_MODEL of the submitting shell
    "temperatures": [100.0, 300.0, 600.0],  # K
    "min_length": 10.0,  # Å between periodic images of the supercell
    "relax": True,  # relax with the potential first (keeps the space group)
    "sscha_settings": {"frequency_tolerance": 0.05, "statistics": "quantum", "seed": 0},
    "finetune_data": None,  # list of DFT force-set files/folders: fine-tune the model first
    "kappa": False,  # add the lattice thermal conductivity
    "heavy_category": "gpu",  # FireWorks category of force-evaluation-heavy jobs
    "light_category": "cpu",  # ... and of the others
}
BATCH_SIZE = 500  # workflows per bulk insert


def campaign_maker():
    from tdphonon.campaign import CampaignMaker
    from tdphonon.flows import SSCHAMaker

    sscha = SSCHAMaker(
        model=SETTINGS["model"],
        **({} if SETTINGS["relax"] else {"relax_maker": None}),
        min_length=SETTINGS["min_length"],
        sscha_settings=SETTINGS["sscha_settings"],
    )
    return CampaignMaker(
        sscha_maker=sscha,
        temperatures=SETTINGS["temperatures"],
        finetune_data=SETTINGS["finetune_data"],
        kappa=SETTINGS["kappa"],
        heavy_category=SETTINGS["heavy_category"],
        light_category=SETTINGS["light_category"],
    )


def submit(args: argparse.Namespace) -> int:
    from tdphonon.campaign import read_structures, submit_flows
    from tdphonon.stores import connect_launchpad

    launchpad = None if args.dry_run else connect_launchpad(args.launchpad)
    structures = read_structures(args.structures)
    print(f"{len(structures)} structures read")
    report = submit_flows(
        structures,
        campaign_maker(),
        launchpad,
        batch_size=BATCH_SIZE,
        dry_run=args.dry_run,
        progress=True,
    )
    for name, reason in report.invalid:
        print(f"invalid: {name}: {reason}")
    print(report.summary())
    return 0


def status(args: argparse.Namespace) -> int:
    from tdphonon.query import CampaignResults, ensure_indexes, group_counts
    from tdphonon.stores import connect_launchpad, get_store

    launchpad = connect_launchpad(args.launchpad) if args.launchpad else None
    results = CampaignResults(get_store(args.store), launchpad)
    ensure_indexes(results.store)
    rows = results.materials()
    print(", ".join(f"{n} {s}" for s, n in sorted(group_counts(rows).items())) or "nothing yet")
    for row in rows:
        if row["status"] in ("failed", "not converged"):
            print(f"  {row['material']} ({row['formula']}): {row['status']}: {row['reason']}")
    if args.csv:
        results.export(args.csv)
        print(f"wrote {args.csv}")
    return 0


def rerun_lost(args: argparse.Namespace) -> int:
    from tdphonon.stores import connect_launchpad

    launchpad = connect_launchpad(args.launchpad)
    expiration = int(args.hours * 3600)
    _, lost_fw_ids, _ = launchpad.detect_lostruns(expiration_secs=expiration)
    print(f"{len(lost_fw_ids)} lost FireWorks (no heartbeat for {args.hours} h): {lost_fw_ids}")
    if lost_fw_ids and not args.dry_run:
        launchpad.detect_lostruns(expiration_secs=expiration, rerun=True)
        print("marked for rerun; the workers pick them up again")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p_submit = sub.add_parser("submit", help="add the new structures to the launchpad")
    p_submit.add_argument("structures", nargs="+", help="files, folders, mp-ids")
    p_submit.add_argument("--launchpad", help="my_launchpad.yaml (default: FireWorks config)")
    p_submit.add_argument("--dry-run", action="store_true")
    p_status = sub.add_parser("status", help="materials per status, results table")
    p_status.add_argument("--store", help="jobflow.yaml of the campaign's JobStore")
    p_status.add_argument("--launchpad", help="my_launchpad.yaml: include FireWorks states")
    p_status.add_argument("--csv", help="export the results table")
    p_lost = sub.add_parser("rerun-lost", help="rerun launches of dead workers")
    p_lost.add_argument("--launchpad", help="my_launchpad.yaml (default: FireWorks config)")
    p_lost.add_argument("--hours", type=float, default=4.0, help="heartbeat expiry (default 4)")
    p_lost.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    action = {"submit": submit, "status": status, "rerun-lost": rerun_lost}[args.action]
    return action(args)


if __name__ == "__main__":
    sys.exit(main())
