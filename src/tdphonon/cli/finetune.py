"""``tdphonon finetune``: fine-tune a pretrained potential on DFT phonon force sets."""

from __future__ import annotations

import argparse
import json
import shutil
from typing import Any

from tdphonon.cli import CommandError
from tdphonon.cli.options import (
    add_device_option,
    existing_path,
    fraction,
    non_negative_float,
    non_negative_int,
    output_dir,
    output_file,
    positive_float,
    positive_int,
)
from tdphonon.cli.report import format_forgetting_guard, format_validation_table

EPILOG = """\
examples:
  tdphonon finetune ../shared/data/phonon-forcesets --base ../shared/models/M3GNet-MP-2021.2.8-PES \\
      --out finetuned --epochs 8 --validation NaCl SnO2
  tdphonon run examples/NaCl.cif --model finetuned

DATA: the formats of 'tdphonon evaluate' (phonopy, phono3py, extended XYZ, phonondb
*.tar.lzma archives or their unpacked folders, folders of them); a broken phonondb archive is
skipped with a one-line warning naming it.

Compounds are split (never structures): --validation names the held-out compounds (force-set
names: the folder name for phonopy_params.yaml files, mp-<id>-<formula> for phonondb, e.g.
mp-149-Si), otherwise --validation-fraction of
them is chosen with --seed. A single compound with random displacements (your own
finite-temperature snapshots, e.g. phonopy_mlpsscha_params.yaml) holds out --validation-fraction
of its snapshots instead: validation compares force constants fitted to the model's and the
DFT forces on them (few snapshots make short epochs: give --epochs 25 or more; on KCl the
error was still falling at 25). The best epoch by validation phonon-frequency MAE is kept. OUT
is loadable by matgl.load_model and by tdphonon (tdphonon.json records the message
convention); OUT/provenance.json holds the base model, data, settings and metrics.

An interrupted run is not lost: the training state is checkpointed after every epoch (to
OUT.checkpoint/ unless --checkpoint-dir is given) and the same command resumes after the last
finished epoch; the checkpoint is removed when the model is saved.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``finetune`` to the sub-command parsers."""
    parser = sub.add_parser(
        "finetune",
        help="fine-tune a matgl potential on DFT phonon force sets",
        description="Fine-tune a pretrained matgl potential (M3GNet) on DFT phonon force "
        "sets, with early stopping on the phonon-frequency MAE of validation compounds.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "data",
        nargs="+",
        type=existing_path,
        help="force-set files, phonondb archives (*.tar.lzma) or their folders, or folders of them",
    )
    parser.add_argument("--base", required=True, help="pretrained matgl model folder or name")
    parser.add_argument(
        "--out", required=True, type=output_dir, metavar="OUT", help="output model folder"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=10, help="maximum epochs (default 10)"
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="random seed, >= 0 (default 0)"
    )
    parser.add_argument("--validation", nargs="+", metavar="NAME", help="validation compounds")
    parser.add_argument(
        "--validation-fraction",
        type=fraction,
        default=0.2,
        help="fraction of compounds held out when --validation is not given, in [0, 1) "
        "(default 0.2)",
    )
    parser.add_argument(
        "--lr", type=positive_float, default=3e-4, help="learning rate, > 0 (default 3e-4)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=4, help="supercells per step (default 4)"
    )
    parser.add_argument(
        "--max-displacements",
        type=positive_int,
        metavar="N",
        help="train on at most N displaced supercells per compound, round-robin over the "
        "symmetry-distinct displaced atoms (default: all; 2-4 at database scale, where more "
        "compounds help more than more displacements). Validation compounds keep all",
    )
    parser.add_argument(
        "--cache-dir",
        type=output_dir,
        metavar="DIR",
        help="graph cache: each compound's training graphs are built once, kept here and "
        "reused by later epochs and runs (default $TDPHONON_CACHE/graphs, else "
        "~/.cache/tdphonon/graphs)",
    )
    parser.add_argument(
        "--trainable",
        default="last-block",
        choices=["last-block", "all", "interactions", "readout"],
        help="layers to train (default last-block: the last graph block and the readout)",
    )
    for name, default in (("energy", 1.0), ("force", 1.0), ("stress", 0.0)):
        parser.add_argument(
            f"--{name}-weight",
            type=non_negative_float,
            default=default,
            help=f"weight of the {name} loss, >= 0 (default {default:g})",
        )
    parser.add_argument(
        "--patience",
        type=positive_int,
        default=3,
        help="early-stopping patience, validations (default 3)",
    )
    add_device_option(parser, default="cpu")
    parser.add_argument(
        "--json",
        type=output_file,
        metavar="FILE",
        help="write the metrics as JSON (its directory must exist)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=output_dir,
        metavar="DIR",
        help="where the per-epoch training checkpoint goes (default OUT.checkpoint)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def _read_split(args: argparse.Namespace) -> tuple[list, list]:
    """Training and validation force sets.

    With ``--max-displacements`` the sets are read one at a time and only the chosen
    displacements are kept (memory bounded by the subsets, for thousands of archives); the
    validation compounds are then read again in full (their frequencies need every
    displacement; a second pass over the inputs, so that names match).
    """
    from tdphonon.forcesets import iter_force_sets, read_force_sets, split_by_compound

    k = args.max_displacements
    if k is None:
        sets = read_force_sets(args.data)
    else:
        sets = [s.training_subset(k, args.seed) for s in iter_force_sets(args.data)]
    if args.validation:
        train, validation = split_by_compound(sets, args.validation)
    elif args.validation_fraction > 0 and len(sets) > 1:
        train, validation = split_by_compound(
            sets, fraction=args.validation_fraction, seed=args.seed
        )
    elif args.validation_fraction > 0 and len(sets) == 1 and sets[0].is_random and len(sets[0]) > 1:
        # one compound's own random-displacement (finite-temperature) data: hold out snapshots
        part, held_out = sets[0].split_snapshots(args.validation_fraction, args.seed)
        return [part], [held_out]
    else:
        train, validation = sets, []
    if k is not None and validation:
        names = {s.name for s in validation}
        validation = [s for s in iter_force_sets(args.data) if s.name in names]
    return list(train), list(validation)


def command(args: argparse.Namespace) -> int:
    """Run ``tdphonon finetune``."""
    from tdphonon.finetune import FineTuneSettings, default_graph_cache, finetune
    from tdphonon.forcesets import ForceSetError

    if args.out.exists() and any(args.out.iterdir()):
        raise CommandError(f"output folder {args.out} exists and is not empty")
    checkpoint_dir = args.checkpoint_dir or args.out.with_name(args.out.name + ".checkpoint")
    try:
        settings = FineTuneSettings(
            max_epochs=args.epochs,
            seed=args.seed,
            lr=args.lr,
            batch_size=args.batch_size,
            trainable=args.trainable,
            energy_weight=args.energy_weight,
            force_weight=args.force_weight,
            stress_weight=args.stress_weight,
            patience=args.patience,
            device=args.device,
            max_displacements=args.max_displacements,
        )
        train, validation = _read_split(args)
        print(
            f"training on {len(train)} compounds ({sum(len(s) for s in train)} supercells); "
            f"validation: {', '.join(s.name for s in validation) or 'none'}"
        )
        result = finetune(
            args.base,
            train,
            validation,
            settings,
            out_dir=args.out,
            progress=not args.quiet,
            checkpoint_dir=checkpoint_dir,
            cache_dir=args.cache_dir or default_graph_cache(),
        )
    except (ForceSetError, ValueError) as err:
        raise CommandError(str(err)) from None
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if result.before is not None and result.after is not None:
        print("\n" + format_validation_table(result.before, result.after))
    print(f"best epoch {result.best_epoch}; training {result.training_time_s:.0f} s")
    print(format_forgetting_guard(result.forgetting))
    print(f"saved {result.model_dir}")
    if args.json:
        args.json.write_text(json.dumps(result.provenance, indent=1))
        print(f"wrote {args.json}")
    return 0
