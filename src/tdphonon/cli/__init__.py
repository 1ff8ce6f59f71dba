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
from typing import NoReturn

from threadpoolctl import threadpool_limits

DESCRIPTION = """\
tdphonon: temperature-dependent (anharmonic) phonons with machine-learned potentials.

The SSCHA (stochastic self-consistent harmonic approximation) renormalises the
harmonic phonons of a crystal at each temperature with forces from an interatomic
potential (M3GNet through matgl, or any ASE calculator such as EMT). Every
intermediate result goes to a jobflow JobStore: an embedded database on this
machine by default, or MongoDB through a jobflow.yaml.
"""

COMMANDS = ("run", "kappa", "submit", "query", "analyze", "finetune", "evaluate", "models")


class CommandError(Exception):
    """An error to report to the user in one line."""


class ArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit code 2), no usage dump.

    Sub-command parsers are of the same class (argparse's ``add_subparsers`` default).
    """

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE`` on one line to stderr and exit with code 2."""
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


#: Exceptions reported in one line (exit code 2), by the module that defines them.
_USER_ERRORS = {
    "tdphonon.potentials": ("UnsupportedElementError", "ModelLoadError", "NonFiniteForcesError"),
    "tdphonon.stores": ("StoreConfigError", "StoreUnreachableError"),
    "tdphonon.structures": ("StructureError",),
}


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [CommandError, FileNotFoundError]
    for name, classes in _USER_ERRORS.items():
        # a module not imported raised none of its errors, and importing it (torch, matgl)
        # would hold the message back for seconds
        module = sys.modules.get(name)
        if module is not None:
            errors.extend(getattr(module, cls) for cls in classes)
    return tuple(errors)


def _job_failed_error() -> type[BaseException]:
    from tdphonon.stores import JobFailedError

    return JobFailedError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands (options are defined in :mod:`.options`)."""
    parser = ArgumentParser(
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
    from tdphonon.library_warnings import ignore_library_warnings

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help / --version exit 0; a usage error returns its code
        if not stop.code:
            raise
        return int(stop.code) if isinstance(stop.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    # warning filters hold for this command only (main may be called many times in one
    # process: tests, scripts)
    with warnings.catch_warnings():
        ignore_library_warnings()  # jobflow's and atomate2's that say nothing to a user
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
        except _job_failed_error() as error:  # stored in the JobStore: 'tdphonon query'
            print(f"tdphonon: error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("tdphonon: interrupted; finished jobs are in the store", file=sys.stderr)
            return 130
