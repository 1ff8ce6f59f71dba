"""The ``tdphonon`` command line.

Each sub-command is a module of this package with ``add_parser(subparsers)`` and
``command(args) -> int``; :data:`COMMANDS` lists them in the order ``--help`` shows.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence

from threadpoolctl import threadpool_limits

DESCRIPTION = """\
tdphonon: temperature-dependent (anharmonic) phonons with machine-learned potentials.

The SSCHA (stochastic self-consistent harmonic approximation) renormalises the
harmonic phonons of a crystal at each temperature with forces from an interatomic
potential (M3GNet through matgl, or any ASE calculator such as EMT). Every
intermediate result goes to a jobflow JobStore: an embedded database on this
machine by default, or MongoDB through a jobflow.yaml.
"""

COMMANDS = ("run", "kappa", "submit", "query", "finetune", "evaluate")


class CommandError(Exception):
    """An error to report to the user in one line."""


def add_temperatures_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``-T/--temperatures K [K ...]`` (default 300 K)."""
    parser.add_argument(
        "-T", "--temperatures", nargs="+", type=float, default=[300.0], metavar="K", help=help_text
    )


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """``-m/--model``: a matgl model folder or name, or 'emt'."""
    parser.add_argument(
        "-m", "--model", help="matgl model folder or name, or 'emt' (default: $TDPHONON_MODEL)"
    )


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """``--retries`` and ``--timeout`` of the database connection."""
    parser.add_argument("--retries", type=int, default=3, help="database connection attempts")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="connection timeout per attempt, s (default: the config's, else 5)",
    )


def _user_errors() -> tuple[type[BaseException], ...]:
    from tdphonon.potentials import ModelLoadError, NonFiniteForcesError, UnsupportedElementError
    from tdphonon.query import StoreUnreachableError
    from tdphonon.structures import StructureError

    return (
        CommandError,
        StructureError,
        UnsupportedElementError,
        ModelLoadError,
        NonFiniteForcesError,
        FileNotFoundError,
        StoreUnreachableError,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands."""
    parser = argparse.ArgumentParser(
        prog="tdphonon",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"tdphonon.cli.{name}")
        module.add_parser(sub).set_defaults(handler=module.command)
    return parser


def _version() -> str:
    from tdphonon import __version__

    return f"tdphonon {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tdphonon`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    if getattr(args, "quiet", False):
        warnings.filterwarnings("ignore")
    try:
        # The SSCHA's linear algebra is on small matrices: threaded BLAS only adds
        # overhead (and fights the potential's own threads for the cores).
        with threadpool_limits(limits=1, user_api="blas"):
            return args.handler(args)
    except _user_errors() as error:
        print(f"tdphonon: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tdphonon: interrupted; finished jobs are in the store", file=sys.stderr)
        return 130
