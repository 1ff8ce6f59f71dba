"""Options shared by the sub-commands, and the argparse converters that check them.

Every value is checked when the command line is parsed, before anything expensive (no
model is loaded, no structure relaxed): a bad one stops the command with one line,
``tdphonon run: error: argument --tolerance: ...``, and exit code 2. The converters
(``type=`` of :meth:`argparse.ArgumentParser.add_argument`) raise
:class:`argparse.ArgumentTypeError` with the allowed values; checks that involve several
options (:func:`check_temperatures`) raise :class:`~tdphonon.cli.CommandError` at the start
of the command.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tdphonon.cli import CommandError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "SupercellAction",
    "add_connection_options",
    "add_device_option",
    "add_kappa_options",
    "add_model_option",
    "add_report_options",
    "add_sscha_options",
    "add_store_option",
    "add_structure_filter_options",
    "add_temperatures_option",
    "add_workers_options",
    "check_temperatures",
    "conductivity_maker",
    "connection_kwargs",
    "device",
    "element",
    "existing_path",
    "fraction",
    "ids_file",
    "launchpad_file",
    "non_negative_float",
    "non_negative_int",
    "output_dir",
    "output_file",
    "positive_float",
    "positive_int",
    "positive_int_or_auto",
    "positive_temperature",
    "space_group",
    "sscha_maker",
    "store_file",
    "store_spec",
    "structure_filter",
    "supercell_matrix",
    "temperature",
]

#: Time (s) a command waits for an unreachable database, all attempts together.
DEFAULT_TIMEOUT_S = 5.0


# -- converters (argparse ``type=``) ---------------------------------------------------------


def _number(text: str, kind: Callable[[str], Any], what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (>= 1), got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_int_or_auto(text: str) -> int | str:
    """An integer >= 1, or ``"auto"``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


def _real(text: str, what: str, accept: Callable[[float], bool] = math.isfinite) -> float:
    """A finite number that ``accept`` takes; else the error says ``expected <what>``."""
    value = _number(text, float, what)
    if not (math.isfinite(value) and accept(value)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _real(text, "a finite number > 0", lambda v: v > 0)


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    return _real(text, "a finite number >= 0", lambda v: v >= 0)


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    return _real(text, "a fraction in [0, 1)", lambda v: 0 <= v < 1)


def temperature(text: str) -> float:
    """A finite temperature >= 0 K."""
    return _real(text, "a finite temperature >= 0 K", lambda v: v >= 0)


def positive_temperature(text: str) -> float:
    """A finite temperature > 0 K."""
    return _real(text, "a finite temperature > 0 K", lambda v: v > 0)


_CUDA = re.compile(r"cuda(?::(\d+))?")


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; CUDA only where torch sees a GPU."""
    value = text.strip().lower()
    if value in ("auto", "cpu"):
        return value
    match = _CUDA.fullmatch(value)
    if match is None:
        hint = " (use cuda)" if value.startswith("gpu") else ""
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}{hint}")
    try:
        import torch  # only here: importing torch takes seconds

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        count = 0
    if count == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} requested but no CUDA GPU is available to torch here; use cpu or auto"
        )
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise argparse.ArgumentTypeError(
            f"{text!r} requested but torch sees {count} GPU(s): cuda:0 to cuda:{count - 1}"
        )
    return value


def existing_path(text: str) -> str:
    """A file or folder that exists (returned as given)."""
    if not Path(text).expanduser().exists():
        raise argparse.ArgumentTypeError(f"not found: {text}")
    return text


def existing_file(text: str) -> Path:
    """A file that exists."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"file not found: {text}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file")
    return path


def output_file(text: str) -> Path:
    """A file to write: its folder must exist and be writable, and it must not be a folder."""
    path = Path(text).expanduser()
    parent = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"the directory of {text} does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write to the directory {parent}")
    return path


def output_dir(text: str) -> Path:
    """A folder to write into, created if missing: not a file, under a writable folder."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    existing = path if path.exists() else next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {text}: {existing} is not a directory")
    if not os.access(existing, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write to the directory {existing}")
    return path


def store_spec(text: str) -> str:
    """A store folder (embedded database, created if missing) or a checked store file."""
    from tdphonon.stores import StoreConfigError, check_store_spec

    try:
        check_store_spec(text)
    except (FileNotFoundError, StoreConfigError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def store_file(text: str) -> str:
    """A jobflow.yaml / JSON file describing a JobStore with a ``data`` store (checked)."""
    from tdphonon.stores import StoreConfigError, store_from_file

    existing_file(text)
    try:
        store_from_file(text)
    except StoreConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def launchpad_file(text: str) -> str:
    """A ``my_launchpad.yaml``: an existing file holding a YAML mapping."""
    from monty.serialization import loadfn
    from ruamel.yaml import YAMLError

    path = existing_file(text)
    try:
        spec = loadfn(path, fmt="yaml")
    except (YAMLError, ValueError) as error:
        message = " ".join(str(error).split())[:200]
        raise argparse.ArgumentTypeError(f"cannot read {text}: {message}") from None
    if not isinstance(spec, dict):
        raise argparse.ArgumentTypeError(
            f"{text} does not describe a launchpad (host, port, name, ...)"
        )
    return text


def element(text: str) -> str:
    """A chemical element symbol, any case (``al`` -> ``Al``)."""
    from pymatgen.core import Element

    symbol = text.strip().capitalize()
    if not Element.is_valid_symbol(symbol):
        raise argparse.ArgumentTypeError(f"expected an element symbol (e.g. Si), got {text!r}")
    return symbol


def space_group(text: str) -> int:
    """A space group: its number (1-230) or its international symbol (``Fm-3m``, ``P6_3/mmc``)."""
    value = text.strip()
    if value.lstrip("+-").isdigit():
        number = int(value)
        if not 1 <= number <= 230:
            raise argparse.ArgumentTypeError(f"space-group numbers are 1-230, got {text!r}")
        return number
    from pymatgen.symmetry.groups import SpaceGroup

    try:
        return SpaceGroup(value).int_number
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a space-group number (1-230) or symbol such as Fm-3m or P6_3/mmc, got "
            f"{text!r}"
        ) from None


def ids_file(text: str) -> list[str]:
    """A text file of ids (whitespace- or comma-separated; ``#`` starts a comment)."""
    path = existing_file(text)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {error}") from None
    ids = [i for line in lines for i in line.split("#")[0].replace(",", " ").split()]
    if not ids:
        raise argparse.ArgumentTypeError(f"{text} holds no ids")
    return ids


# -- supercells ------------------------------------------------------------------------------


def supercell_matrix(values: Sequence[int] | None) -> list[list[int]] | None:
    """3x3 supercell matrix of 3 (diagonal) or 9 (row by row) integers.

    Raises
    ------
    ValueError
        Not 3 or 9 integers, a diagonal entry < 1, or a matrix whose determinant is not
        positive.
    """
    if values is None:
        return None
    values = list(values)
    if len(values) == 3:
        if min(values) < 1:
            raise ValueError(f"a diagonal supercell takes 3 positive integers, got {_ints(values)}")
        return [[values[0], 0, 0], [0, values[1], 0], [0, 0, values[2]]]
    if len(values) == 9:
        rows = [values[0:3], values[3:6], values[6:9]]
        det = (
            rows[0][0] * (rows[1][1] * rows[2][2] - rows[1][2] * rows[2][1])
            - rows[0][1] * (rows[1][0] * rows[2][2] - rows[1][2] * rows[2][0])
            + rows[0][2] * (rows[1][0] * rows[2][1] - rows[1][1] * rows[2][0])
        )
        if det <= 0:
            raise ValueError(
                f"a supercell matrix needs a positive determinant, got {det} for {_ints(values)}"
            )
        return rows
    raise ValueError(
        f"takes 3 integers (diagonal) or 9 (a 3x3 matrix, row by row), got {len(values)}"
    )


def _ints(values: Sequence[int]) -> str:
    return " ".join(str(v) for v in values)


class SupercellAction(argparse.Action):
    """Store 3 or 9 integers that :func:`supercell_matrix` accepts (checked at parse time)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        try:
            supercell_matrix(values)
        except ValueError as error:
            raise argparse.ArgumentError(self, str(error)) from None
        setattr(namespace, self.dest, list(values))


# -- option groups ---------------------------------------------------------------------------


def add_temperatures_option(
    parser: argparse.ArgumentParser, help_text: str, positive: bool = False
) -> None:
    """``-T/--temperatures K [K ...]`` (default 300 K): finite, >= 0 K (> 0 if ``positive``)."""
    parser.add_argument(
        "-T",
        "--temperatures",
        nargs="+",
        type=positive_temperature if positive else temperature,
        default=[300.0],
        metavar="K",
        help=help_text,
    )


def check_temperatures(
    temperatures: Sequence[float], statistics: str | None = None, kappa: bool = False
) -> None:
    """Checks of ``-T`` that depend on other options.

    Raises
    ------
    CommandError
        0 K with ``--statistics classical`` or with ``--kappa``.
    """
    from tdphonon.sampling import check_temperatures as check

    try:
        check(temperatures, statistics or "quantum", positive=kappa)
    except ValueError as error:
        option = "--statistics classical" if statistics == "classical" else "--kappa"
        raise CommandError(f"-T: {error} ({option})") from None


def add_report_options(parser: argparse.ArgumentParser, json_help: str, plots_help: str) -> None:
    """``--json FILE``, ``--plots DIR``, ``--no-plots`` and ``-q/--quiet`` of ``run``, ``kappa``."""
    parser.add_argument(
        "--json", type=output_file, metavar="FILE", help=f"{json_help} (its directory must exist)"
    )
    parser.add_argument(
        "--plots",
        type=output_dir,
        metavar="DIR",
        default=Path("."),
        help=f"directory for {plots_help} (default: current)",
    )
    parser.add_argument("--no-plots", action="store_true", help="do not write plots")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or logs")


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """``-m/--model``: a matgl model folder or name, or 'emt'."""
    parser.add_argument(
        "-m",
        "--model",
        help="matgl model folder, shipped model or hub name (tdphonon models lists them), or "
        "'emt' (default: $TDPHONON_MODEL, else the shipped M3GNet-phonondb-PBEsol)",
    )


def add_device_option(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """``--device``: auto, cpu, cuda or cuda:N (checked against the GPUs torch sees)."""
    parser.add_argument(
        "--device",
        type=device,
        default=default,
        help=f"auto, cpu, cuda or cuda:N (default {default})",
    )


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """``--retries`` and ``--timeout`` of the database connection."""
    parser.add_argument(
        "--retries",
        type=positive_int,
        default=3,
        metavar="N",
        help="database connection attempts (default 3)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="give up on an unreachable database after about S seconds, all attempts together "
        f"(default {DEFAULT_TIMEOUT_S:g})",
    )


def connection_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``retries``, ``timeout_ms`` and ``delay`` of :func:`tdphonon.stores.connect_store` and
    :func:`~tdphonon.stores.connect_launchpad` for ``--retries`` and ``--timeout``: see
    :func:`tdphonon.stores.connection_budget`.
    """
    from tdphonon.stores import connection_budget

    return connection_budget(args.retries, args.timeout)


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """``--store`` of the commands that run flows here (``run``, ``kappa``)."""
    parser.add_argument(
        "--store",
        type=store_spec,
        help="store: a directory for the embedded database, or a jobflow.yaml / JSON file "
        "with a JobStore (e.g. MongoDB + GridFS); default ~/.tdphonon/store",
    )


def add_structure_filter_options(parser: argparse.ArgumentParser) -> None:
    """Which structures of the inputs a campaign takes (``run``, ``submit``): see
    :class:`tdphonon.campaign.StructureFilter`; :func:`structure_filter` makes it."""
    group = parser.add_argument_group(
        "structure selection",
        "criteria that every structure taken passes (a collection's records are judged on "
        "their stated id, formula, atoms and space group, before they are parsed)",
    )
    group.add_argument(
        "--max-atoms", type=positive_int, metavar="N", help="at most N atoms in the cell given"
    )
    group.add_argument(
        "--elements",
        nargs="+",
        type=element,
        metavar="X",
        help="compounds containing any of these elements",
    )
    group.add_argument(
        "--exclude-elements",
        nargs="+",
        type=element,
        metavar="X",
        help="leave out compounds containing any of these elements",
    )
    group.add_argument(
        "--spacegroups",
        nargs="+",
        type=space_group,
        metavar="SG",
        help="space-group numbers or symbols (225 or Fm-3m)",
    )
    group.add_argument(
        "--ids",
        nargs="+",
        metavar="ID",
        help="these names only (collection ids such as mp-149, or file stems)",
    )
    group.add_argument(
        "--ids-file",
        type=ids_file,
        metavar="FILE",
        help="the names of a text file (whitespace or comma separated; with --ids: both)",
    )
    group.add_argument(
        "--sample",
        type=positive_int,
        metavar="N",
        help="a random sample of N of the structures that pass the other criteria, "
        "reproducible with --sample-seed (a larger sample contains a smaller one)",
    )
    group.add_argument(
        "--sample-seed",
        type=non_negative_int,
        metavar="S",
        help="seed of --sample, >= 0 (default: --seed)",
    )


#: Destinations of :func:`add_structure_filter_options`.
_FILTER_OPTIONS = (
    "max_atoms",
    "elements",
    "exclude_elements",
    "spacegroups",
    "ids",
    "ids_file",
    "sample",
    "sample_seed",
)


def structure_filter(args: argparse.Namespace) -> Any:
    """The :class:`~tdphonon.campaign.StructureFilter` of :func:`add_structure_filter_options`,
    or None when no criterion is given."""
    if all(getattr(args, name, None) is None for name in _FILTER_OPTIONS):
        return None
    from tdphonon.campaign import StructureFilter

    ids = None
    if args.ids is not None or args.ids_file is not None:
        ids = [*(args.ids or []), *(args.ids_file or [])]
    return StructureFilter(
        max_atoms=args.max_atoms,
        elements=tuple(args.elements or ()),
        exclude_elements=tuple(args.exclude_elements or ()),
        spacegroups=tuple(args.spacegroups or ()),
        ids=ids,
        sample=args.sample,
        seed=args.sample_seed if args.sample_seed is not None else getattr(args, "seed", 0),
    )


def add_workers_options(parser: argparse.ArgumentParser) -> None:
    """``--workers`` and ``--retry-failed`` of a campaign run on this machine (``run``)."""
    group = parser.add_argument_group("campaigns on this machine")
    group.add_argument(
        "--workers",
        type=positive_int_or_auto,
        metavar="N",
        help="worker processes, each loading the model once (default auto: one per core)",
    )
    group.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the structures that failed in an earlier run (default: skipped, as "
        "finished ones are)",
    )


def add_sscha_options(parser: argparse.ArgumentParser) -> None:
    """Options of the potential, supercell and SSCHA (``run``, ``kappa`` and ``submit``)."""
    add_model_option(parser)
    cell = parser.add_mutually_exclusive_group()
    cell.add_argument(
        "--supercell",
        nargs="+",
        type=int,
        action=SupercellAction,
        metavar="N",
        help="supercell of the cell in the structure file, as phonopy's --dim: 3 positive "
        "integers (diagonal) or 9 (matrix, row by row, determinant > 0); e.g. 3 3 3 of a "
        "4-atom conventional fcc cell: 108 atoms (the size used is printed)",
    )
    cell.add_argument(
        "--min-length",
        type=positive_float,
        default=10.0,
        metavar="ANGSTROM",
        help="choose the smallest supercell that keeps the point group and whose periodic "
        "images are this far apart (default 10)",
    )
    parser.add_argument(
        "--no-relax", action="store_true", help="keep the given geometry (e.g. DFT-relaxed)"
    )
    parser.add_argument(
        "--born",
        type=existing_file,
        metavar="FILE",
        help="phonopy BORN file (dielectric tensor, Born effective charges of the "
        "independent atoms of the primitive cell of the structure as given): LO-TO splitting "
        "in the bands, DOS and labelled frequencies (the potentials give no Born charges)",
    )
    parser.add_argument(
        "--statistics",
        choices=["quantum", "classical"],
        default="quantum",
        help="phonon statistics of the thermal displacements (default quantum)",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="random seed, >= 0 (default 0)"
    )
    parser.add_argument(
        "--tolerance",
        type=positive_float,
        default=0.05,
        metavar="THZ",
        help="target accuracy (bootstrap standard error) of every renormalised frequency "
        "at the labelled points and the q-points of the supercell, THz (> 0; default 0.05)",
    )
    parser.add_argument(
        "--max-snapshots",
        type=positive_int,
        default=1024,
        metavar="N",
        help="largest sample size the adaptive sampling may use (default 1024)",
    )
    parser.add_argument(
        "--max-evaluations",
        type=positive_int,
        default=20000,
        metavar="N",
        help="force evaluations allowed per temperature; a temperature that has not converged "
        "by then is reported as not converged with its errors (default 20000; in a campaign "
        "a bound on the cost of a crystal that does not converge)",
    )
    add_device_option(parser)
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=16,
        metavar="N",
        help="supercells per model call (default 16)",
    )


def sscha_maker(
    args: argparse.Namespace, structure: Any = None, progress: bool | None = None
) -> Any:
    """The :class:`~tdphonon.flows.sscha.SSCHAMaker` of the options of :func:`add_sscha_options`.

    Also checks the temperatures (:func:`check_temperatures`). Progress bars
    (``SSCHAMaker.progress``) are on unless ``--quiet`` or ``progress=False`` (flows run
    elsewhere). ``structure`` (the crystal as read) is needed with ``--born``, whose
    file is read for it (:func:`tdphonon.structures.read_born`).
    """
    from tdphonon.flows.sscha import SSCHAMaker

    check_temperatures(args.temperatures, args.statistics)
    born = None
    if getattr(args, "born", None) is not None:
        from tdphonon.structures import read_born

        if structure is None:
            raise CommandError("--born belongs to one crystal: give a single structure with it")
        born = read_born(args.born, structure)
    return SSCHAMaker(
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        progress=not getattr(args, "quiet", False) if progress is None else progress,
        **({"relax_maker": None} if args.no_relax else {}),
        supercell_matrix=supercell_matrix(args.supercell),
        min_length=args.min_length,
        sscha_settings={
            "statistics": args.statistics,
            "seed": args.seed,
            "frequency_tolerance": args.tolerance,
            "max_snapshots": args.max_snapshots,
            "max_force_evaluations": args.max_evaluations,
        },
        born=born,
    )


def add_kappa_options(parser: argparse.ArgumentParser) -> None:
    """Options of the kappa calculation (``kappa`` and ``run --kappa``)."""
    group = parser.add_argument_group("thermal conductivity")
    group.add_argument(
        "--mesh",
        nargs=3,
        type=positive_int,
        default=[11, 11, 11],
        metavar="N",
        help="q-point mesh of the kappa calculation, 3 positive integers (default 11 11 11)",
    )
    group.add_argument("--lbte", action="store_true", help="solve the LBTE (default: RTA)")
    group.add_argument("--isotope", action="store_true", help="add isotope scattering")
    group.add_argument(
        "--fc3-method",
        choices=["random", "finite"],
        default="random",
        help="fc3 from random displacements + symfc (default) or finite differences",
    )
    group.add_argument(
        "--fc3-snapshots",
        type=positive_int_or_auto,
        default="auto",
        metavar="N",
        help="random fc3 supercells (+/- pairs), or 'auto' (phono3py's estimate; default)",
    )
    group.add_argument(
        "--fc3-unpaired",
        action="store_true",
        help="random fc3 displacements without their opposite (default: +/- pairs)",
    )
    group.add_argument(
        "--fc3-supercell",
        nargs="+",
        type=int,
        action=SupercellAction,
        metavar="N",
        help="fc3 supercell of the cell given, as phonopy's --dim: 3 positive integers or 9 "
        "(matrix, determinant > 0)",
    )
    group.add_argument(
        "--fc3-min-length",
        type=positive_float,
        default=8.0,
        metavar="ANGSTROM",
        help="fc3 supercell: periodic images this far apart (default 8)",
    )


def conductivity_maker(args: argparse.Namespace) -> Any:
    """The :class:`ThermalConductivityMaker` of the options of :func:`add_kappa_options`."""
    from tdphonon.flows.conductivity import ThermalConductivityMaker

    return ThermalConductivityMaker(
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        fc3_method=args.fc3_method,
        fc3_snapshots=args.fc3_snapshots,
        fc3_plusminus=not args.fc3_unpaired,
        fc3_supercell_matrix=supercell_matrix(args.fc3_supercell),
        fc3_min_length=args.fc3_min_length,
        mesh=tuple(args.mesh),
        kappa_method="lbte" if args.lbte else "rta",
        isotope=args.isotope,
        seed=args.seed,
    )
