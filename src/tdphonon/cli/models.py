"""``tdphonon models``: the models tdphonon knows, with their provenance."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from tdphonon.cli.options import output_file

EPILOG = """\
examples:
  tdphonon models
  tdphonon models --json models.json
  tdphonon run examples/Si.cif -T 300 --model M3GNet-phonondb-PBEsol

Lists the models shipped with tdphonon (loaded by name, no network), the one $TDPHONON_MODEL
names, the matgl models downloaded into matgl's cache, and fine-tuned models fetched from a
JobStore, each with its provenance (base model, training data, test metrics) where known.
Any matgl model folder can also be given to --model by its path.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``models`` to the sub-command parsers."""
    parser = sub.add_parser(
        "models",
        help="list the models tdphonon knows (shipped, local, cached) with their provenance",
        description="The interatomic-potential models tdphonon can load, with provenance.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--json", type=output_file, metavar="FILE", help="write the list with full provenance"
    )
    return parser


def command(args: argparse.Namespace) -> int:
    """Run ``tdphonon models``."""
    from tdphonon.potentials.catalog import known_models
    from tdphonon.potentials.factory import default_model

    models = known_models()
    default = default_model()
    width = max([len(m.name) for m in models] + [4])
    print(f"{'name':<{width}}  {'origin':<18}  provenance")
    for model in models:
        mark = " (default)" if model.name == default else ""
        print(f"{model.name:<{width}}  {model.origin:<18}  {model.describe()}{mark}")
        print(f"{'':<{width}}  {'':<18}  {model.path}")
    if not any(m.name == default for m in models):
        print(f"default model (no --model): {default}")
    if args.json:
        args.json.write_text(
            json.dumps({"default": default, "models": [asdict(m) for m in models]}, indent=1)
        )
        print(f"wrote {args.json}")
    return 0
