"""``tdphonon evaluate``: phonon-frequency error of a potential against DFT force sets."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tdphonon.cli import CommandError
from tdphonon.cli.options import add_device_option, add_model_option, existing_path, output_file
from tdphonon.cli.report import format_evaluation

EPILOG = """\
examples:
  tdphonon evaluate --model ../shared/models/M3GNet-MP-2021.2.8-PES ../shared/data/phonon-forcesets
  tdphonon evaluate --model finetuned/ ../shared/data/phonon-forcesets/NaCl --json nacl.json
  tdphonon evaluate --model finetuned/ ../shared/data/phonondb/archives/materials-id-149-*.tar.lzma

DATA: phonopy_params.yaml[.xz], phonopy_disp.yaml (+ FORCE_SETS), phono3py_params*.yaml[.xz],
phono3py_disp.yaml (+ FORCES_FC3), extended XYZ files, phonondb archives (*.tar.lzma, read
without unpacking) or their unpacked folders, or folders holding any of them. A broken
phonondb archive is skipped with a one-line warning naming it (listed under "skipped" in
--json).
Protocol: the potential computes forces on the same displaced supercells as the DFT set,
the residual forces of the undisplaced supercell are removed, force constants are built the
same way as for the DFT forces (phonopy finite displacements, or symfc for random sets), and
frequencies are compared on a Gamma-centred mesh (phonopy mesh length 20 Å), with the
non-analytical correction where the data has Born charges (phonondb BORN), on both sides.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the sub-command parsers."""
    parser = sub.add_parser(
        "evaluate",
        help="phonon-frequency and force MAE of a potential against DFT force sets",
        description="Per-compound and overall phonon-frequency MAE (THz) and force MAE "
        "(eV/Å) of a potential against DFT phonon force sets.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "data",
        nargs="+",
        type=existing_path,
        help="force-set files, phonondb archives, or folders of them",
    )
    add_model_option(parser)
    add_device_option(parser)
    parser.add_argument(
        "--json",
        type=output_file,
        metavar="FILE",
        help="write the results as JSON (its directory must exist)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def command(args: argparse.Namespace) -> int:
    """Run ``tdphonon evaluate``."""
    from tdphonon.evaluation import evaluate
    from tdphonon.forcesets import ForceSetError, read_force_sets
    from tdphonon.potentials import get_calculator

    try:
        sets = read_force_sets(args.data)
    except ForceSetError as err:
        raise CommandError(str(err)) from None
    calculator = get_calculator(args.model, device=args.device)
    try:
        result = evaluate(sets, calculator, progress=not args.quiet)
    except ValueError as err:
        raise CommandError(str(err)) from None
    print(format_evaluation(result))
    if args.json:
        doc = result.as_dict()
        if getattr(sets, "skipped", None):
            doc["skipped"] = [{"path": p, "error": e} for p, e in sets.skipped]
        args.json.write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.json}")
    return 0
