"""Interatomic potentials: energies and forces of many structures through one interface.

The rest of tdphonon computes forces only through a :class:`ForceCalculator`:

* :class:`MatglCalculator` evaluates a matgl ``Potential`` (M3GNet, TensorNet, ...) on batches
  of structures, one model call per batch.
* :class:`AseCalculator` wraps any ASE calculator (one call per structure), e.g. EMT for fast
  tests.

:func:`get_calculator` builds either from a model name/folder (or the ``TDPHONON_MODEL``
environment variable), and :func:`load_potential` loads a matgl model **with the correct
message-passing convention**: the pretrained weights of the matgl <= 2.x era (such as
``M3GNet-MP-2021.2.8-PES``) are silently wrong under matgl >= 3 unless the pre-3.0
destination aggregation is restored (see :mod:`tdphonon._matgl_legacy`).

How the convention of a model is decided, first match wins:

1. the ``message_convention`` argument of :func:`load_potential`;
2. a ``tdphonon.json`` sidecar in the model folder (written by :func:`save_potential`);
3. the ``metadata`` of ``model.json`` (``message_convention`` or ``matgl_version``);
4. the model name: legacy pretrained names end in ``-PES`` (destination), names of models
   retrained for matgl >= 3 read ``<Arch>-PES-...`` (source);
5. otherwise a :class:`LegacyConventionWarning` is issued and ``"destination"`` is assumed,
   since every model of this project descends from the legacy pretrained weights.
"""

from __future__ import annotations

import abc
import json
import os
import re
import socket
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from tdphonon import _matgl_legacy as legacy

if TYPE_CHECKING:
    from matgl.apps.pes import Potential

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_ENV_VAR",
    "AseCalculator",
    "ForceCalculator",
    "LegacyConventionWarning",
    "MatglCalculator",
    "ModelLoadError",
    "NonFiniteForcesError",
    "UnsupportedElementError",
    "default_model",
    "get_calculator",
    "load_potential",
    "message_convention",
    "save_potential",
]

#: Environment variable naming the model to use when none is given.
MODEL_ENV_VAR = "TDPHONON_MODEL"

#: The model used when none is given and ``TDPHONON_MODEL`` is unset: the universal M3GNet
#: that the study fine-tuned, by its matgl hub name (downloaded once into matgl's cache).
DEFAULT_MODEL = "M3GNet-MP-2021.2.8-PES"

_MODEL_FILES = ("model.json", "model.pt", "state.pt")
_HUB_ORG = "materialyze"
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w\-.]*/[\w\-.]+$")


class UnsupportedElementError(ValueError):
    """A structure contains an element the potential was not trained for.

    Parameters
    ----------
    elements : Iterable[str]
        The unsupported element symbols.
    model : str
        Name of the potential.
    """

    def __init__(self, elements: Iterable[str], model: str) -> None:
        self.elements = tuple(sorted(set(elements)))
        self.model = model
        super().__init__(
            f"element(s) {', '.join(self.elements)} not supported by the potential {model!r}"
        )


class ModelLoadError(RuntimeError):
    """A potential could not be loaded (folder missing or incomplete, hub unreachable, ...)."""


class NonFiniteForcesError(RuntimeError):
    """The potential returned NaN or infinite energies or forces."""


class LegacyConventionWarning(UserWarning):
    """The message convention of a matgl model could not be determined and was assumed."""


# ---------------------------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------------------------


class ForceCalculator(abc.ABC):
    """Energies and forces of many structures; counts force evaluations.

    Subclasses implement :meth:`_evaluate_batch` (and :meth:`provenance`,
    :meth:`as_ase_calculator`); the public :meth:`compute` adds the element check, batching,
    progress bar, counting and the NaN/inf check.

    Attributes
    ----------
    name : str
        Short name of the potential, e.g. ``"M3GNet-MP-2021.2.8-PES"`` or ``"emt"``.
    n_force_evaluations : int
        Number of structures evaluated through :meth:`compute` / :meth:`compute_ragged` so
        far (starts at 0). Evaluations through :meth:`as_ase_calculator` are not counted.
    batch_size : int
        Maximum number of structures per call of the underlying model.
    max_atoms_per_batch : int or None
        Maximum total number of atoms per call (a batch always holds at least one
        structure); ``None`` for no limit.
    """

    name: str
    n_force_evaluations: int
    batch_size: int
    max_atoms_per_batch: int | None

    def __init__(
        self, name: str, batch_size: int = 1, max_atoms_per_batch: int | None = None
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = name
        self.batch_size = int(batch_size)
        self.max_atoms_per_batch = max_atoms_per_batch
        self.n_force_evaluations = 0

    def _batches(self, structures: Sequence[Atoms]) -> Iterator[tuple[int, list[Atoms]]]:
        """Yield ``(start index, structures)`` of consecutive batches within the limits."""
        start = 0
        while start < len(structures):
            stop, n_atoms = start, 0
            while stop < len(structures) and stop - start < self.batch_size:
                n_next = len(structures[stop])
                limit = self.max_atoms_per_batch
                if stop > start and limit is not None and n_atoms + n_next > limit:
                    break
                n_atoms += n_next
                stop += 1
            yield start, list(structures[start:stop])
            start = stop

    # -- to implement -------------------------------------------------------------------------

    @property
    def supported_elements(self) -> frozenset[str] | None:
        """Element symbols the potential supports, or ``None`` if unknown (no check)."""
        return None

    @abc.abstractmethod
    def _evaluate_batch(self, structures: Sequence[Atoms]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Evaluate one batch; return energies ``(k,)`` and a list of ``(n_i, 3)`` forces."""

    @abc.abstractmethod
    def provenance(self) -> dict[str, Any]:
        """Describe the potential for provenance records.

        Returns
        -------
        dict
            At least ``name``, ``kind`` (``"matgl"`` or ``"ase"``), ``path``, ``version``,
            ``message_convention``, ``device`` and ``batch_size``; JSON-serialisable.
        """

    @abc.abstractmethod
    def as_ase_calculator(self) -> Calculator:
        """Return an ASE calculator for the same potential (energy, forces, stress in eV/Å³).

        Returns
        -------
        ase.calculators.calculator.Calculator
            A calculator for relaxations or MD. Its evaluations are not counted in
            :attr:`n_force_evaluations`.
        """

    # -- public API ---------------------------------------------------------------------------

    def check_elements(self, symbols: Iterable[str]) -> None:
        """Raise if any element is not supported by the potential.

        Parameters
        ----------
        symbols : Iterable[str]
            Chemical symbols, e.g. ``atoms.get_chemical_symbols()``.

        Raises
        ------
        UnsupportedElementError
            Naming the unsupported element(s) and the potential.
        """
        supported = self.supported_elements
        if supported is None:
            return
        missing = set(symbols) - supported
        if missing:
            raise UnsupportedElementError(missing, self.name)

    def compute(
        self, structures: Sequence[Atoms], progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Compute energies and forces of structures with the same number of atoms.

        Parameters
        ----------
        structures : Sequence[ase.Atoms]
            Structures to evaluate, all with the same number of atoms (use
            :meth:`compute_ragged` otherwise). They are not modified.
        progress : bool, default False
            Show a tqdm progress bar.

        Returns
        -------
        energies : numpy.ndarray
            Total energy of each structure in eV, shape ``(n,)``, float64.
        forces : numpy.ndarray
            Forces in eV/Å, shape ``(n, n_atoms, 3)``, float64.

        Raises
        ------
        UnsupportedElementError
            Before any work, if an element is not supported.
        ValueError
            If the structures differ in size.
        NonFiniteForcesError
            If the potential returns NaN or infinite energies or forces.
        """
        structures = list(structures)
        self.check_elements({s for atoms in structures for s in atoms.get_chemical_symbols()})
        sizes = {len(a) for a in structures}
        if len(sizes) > 1:
            raise ValueError(
                f"structures have different numbers of atoms {sorted(sizes)}; use compute_ragged()"
            )
        energies, forces = self.compute_ragged(structures, progress=progress)
        if not forces:
            return energies, np.zeros((0, 0, 3))
        return energies, np.stack(forces)

    def compute_ragged(
        self, structures: Sequence[Atoms], progress: bool = False
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Compute energies and forces of structures of any sizes.

        Parameters
        ----------
        structures : Sequence[ase.Atoms]
            Structures to evaluate (not modified).
        progress : bool, default False
            Show a tqdm progress bar.

        Returns
        -------
        energies : numpy.ndarray
            Total energies in eV, shape ``(n,)``.
        forces : list of numpy.ndarray
            Forces in eV/Å, one ``(n_atoms_i, 3)`` float64 array per structure.

        Raises
        ------
        UnsupportedElementError
            Before any work, if an element is not supported.
        NonFiniteForcesError
            If the potential returns NaN or infinite energies or forces.
        """
        structures = list(structures)
        for atoms in structures:
            if not isinstance(atoms, Atoms):
                raise TypeError(f"expected ase.Atoms, got {type(atoms).__name__}")
        self.check_elements({s for atoms in structures for s in atoms.get_chemical_symbols()})
        energies: list[np.ndarray] = []
        forces: list[np.ndarray] = []
        with _progress_bar(len(structures), progress, self.name) as bar:
            for start, chunk in self._batches(structures):
                e, f = self._evaluate_batch(chunk)
                self.n_force_evaluations += len(chunk)
                e = np.asarray(e, dtype=np.float64).reshape(-1)
                f = [np.asarray(fi, dtype=np.float64).reshape(-1, 3) for fi in f]
                if len(e) != len(chunk) or len(f) != len(chunk):
                    raise RuntimeError(
                        f"{self.name}: got {len(e)} energies / {len(f)} force arrays "
                        f"for {len(chunk)} structures"
                    )
                bad = [
                    start + i
                    for i in range(len(chunk))
                    if not (np.isfinite(e[i]) and np.all(np.isfinite(f[i])))
                ]
                if bad:
                    raise NonFiniteForcesError(
                        f"potential {self.name!r} returned NaN/inf energies or forces for "
                        f"structure(s) {bad[:10]}{' ...' if len(bad) > 10 else ''}"
                    )
                energies.append(e)
                forces.extend(f)
                bar.update(len(chunk))
        return (np.concatenate(energies) if energies else np.zeros(0)), forces

    def reset_counter(self) -> None:
        """Set :attr:`n_force_evaluations` back to 0."""
        self.n_force_evaluations = 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, batch_size={self.batch_size}, "
            f"n_force_evaluations={self.n_force_evaluations})"
        )


class _NullBar:
    def update(self, n: int) -> None:
        pass


@contextmanager
def _progress_bar(total: int, enabled: bool, desc: str) -> Iterator[Any]:
    if not enabled:
        yield _NullBar()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="struct") as bar:
        yield bar


# ---------------------------------------------------------------------------------------------
# ASE calculators
# ---------------------------------------------------------------------------------------------


def _emt_elements() -> frozenset[str]:
    from ase.calculators.emt import parameters

    return frozenset(parameters)


class AseCalculator(ForceCalculator):
    """Wrap any ASE calculator; one calculator call per structure.

    Parameters
    ----------
    calc : ase.calculators.calculator.Calculator
        The calculator. It is attached to a copy of each structure, so the caller's
        structures are not modified.
    name : str, optional
        Name; defaults to the lower-case class name (``"emt"``).
    supported_elements : Iterable[str], optional
        Elements the calculator supports, checked before any work. Defaults to the EMT
        parameter set for :class:`ase.calculators.emt.EMT` and to no check otherwise.

    Notes
    -----
    Forces are returned without applying constraints (``apply_constraint=False``), as needed
    for force constants.
    """

    def __init__(
        self,
        calc: Calculator,
        *,
        name: str | None = None,
        supported_elements: Iterable[str] | None = None,
    ) -> None:
        super().__init__(name or type(calc).__name__.lower(), batch_size=1)
        self.calc = calc
        if supported_elements is None:
            from ase.calculators.emt import EMT

            self._supported = _emt_elements() if isinstance(calc, EMT) else None
        else:
            self._supported = frozenset(supported_elements)

    @property
    def supported_elements(self) -> frozenset[str] | None:
        """Element symbols supported, or ``None`` if unknown."""
        return self._supported

    def _evaluate_batch(self, structures: Sequence[Atoms]) -> tuple[np.ndarray, list[np.ndarray]]:
        energies = np.empty(len(structures))
        forces = []
        for i, atoms in enumerate(structures):
            work = atoms.copy()
            work.calc = self.calc
            energies[i] = work.get_potential_energy()
            forces.append(np.array(work.get_forces(apply_constraint=False), dtype=np.float64))
        return energies, forces

    def provenance(self) -> dict[str, Any]:
        """Describe the wrapped calculator (see :meth:`ForceCalculator.provenance`)."""
        import ase

        cls = type(self.calc)
        return {
            "name": self.name,
            "kind": "ase",
            "calculator": f"{cls.__module__}.{cls.__qualname__}",
            "path": None,
            "version": f"ase {ase.__version__}",
            "message_convention": None,
            "device": "cpu",
            "batch_size": self.batch_size,
            "parameters": _jsonable(getattr(self.calc, "parameters", {})),
        }

    def as_ase_calculator(self) -> Calculator:
        """Return the wrapped ASE calculator itself."""
        return self.calc


def _jsonable(obj: Any) -> Any:
    try:
        return json.loads(json.dumps(obj, default=str))
    except (TypeError, ValueError):
        return str(obj)


# ---------------------------------------------------------------------------------------------
# matgl models: locating, loading with the right convention, saving
# ---------------------------------------------------------------------------------------------


def _looks_like_path(text: str) -> bool:
    if text.startswith((".", "~", os.sep)) or os.path.isabs(text):
        return True
    if os.altsep and os.altsep in text:
        return True
    return text.count("/") > 1 or (text.count("/") == 1 and not _HUB_ID_RE.match(text))


def default_model() -> str:
    """The model to use when none is given: ``$TDPHONON_MODEL``, else :data:`DEFAULT_MODEL`.

    The one place where the environment names the model.
    """
    return os.environ.get(MODEL_ENV_VAR, "").strip() or DEFAULT_MODEL


def _hub_address() -> tuple[str, int]:
    """``(host, port)`` to reach the model hub: the proxy's when one applies.

    The proxy settings are those the download itself follows (``HTTPS_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``, ... as read by :func:`urllib.request.getproxies`).
    """
    from urllib.request import getproxies, proxy_bypass

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    scheme = url.scheme or "https"
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if scheme == "https" else 80)
    proxies = getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if proxy and not proxy_bypass(host):
        proxy_url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        default_port = {"https": 443, "socks5": 1080, "socks5h": 1080}.get(proxy_url.scheme, 80)
        return proxy_url.hostname or host, proxy_url.port or default_port
    return host, port


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection(_hub_address(), timeout=timeout):
            return True
    except OSError:
        return False


def _fetch_from_hub(name: str) -> Path:
    """Return the local folder of a hub model, from matgl's cache or downloaded."""
    try:
        from huggingface_hub import hf_hub_download
        from matgl.config import MATGL_CACHE
    except ImportError as err:  # pragma: no cover - both are matgl dependencies
        raise ModelLoadError(f"cannot fetch {name!r} from the hub: {err}") from None
    repo_id = name if "/" in name else f"{_HUB_ORG}/{name}"

    def fetch(local_only: bool) -> Path:
        paths = [
            hf_hub_download(repo_id, fn, cache_dir=str(MATGL_CACHE), local_files_only=local_only)
            for fn in _MODEL_FILES
        ]
        return Path(paths[0]).parent

    try:
        return fetch(local_only=True)
    except Exception:
        pass
    hint = (
        f"{name!r} is not a local model folder (one with {', '.join(_MODEL_FILES)}) and is "
        f"not in matgl's cache ({MATGL_CACHE})"
    )
    if not _hub_reachable():
        raise ModelLoadError(
            f"{hint}, and the model hub is unreachable (offline, or a proxy needed: set "
            f"HTTPS_PROXY). Give a local matgl model folder with --model (or "
            f"{MODEL_ENV_VAR}), or --model emt for a classical potential."
        )
    try:
        return fetch(local_only=False)
    except Exception as err:
        raise ModelLoadError(
            f"{hint}, and downloading {repo_id!r} from the hub failed: {type(err).__name__}: {err}"
        ) from None


def _locate_model(model: str | os.PathLike) -> tuple[Path, str, str]:
    """Return ``(folder, name, origin)`` of a matgl model given as folder or hub name."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        missing = [fn for fn in _MODEL_FILES if not (path / fn).is_file()]
        if missing:
            raise ModelLoadError(
                f"{path} is not a matgl model folder: missing {', '.join(missing)}"
            )
        return path.resolve(), path.resolve().name, "local"
    if path.exists():
        raise ModelLoadError(f"{path} is a file, not a matgl model folder")
    if isinstance(model, os.PathLike) or _looks_like_path(text):
        raise ModelLoadError(f"matgl model folder not found: {path}")
    return _fetch_from_hub(text), text, "hub"


def _read_model_json(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "model.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"cannot read {folder / 'model.json'}: {err}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{folder / 'model.json'} is not a matgl model description")
    return data


def _architecture(data: dict[str, Any]) -> str:
    inner = data.get("kwargs", {}).get("model") if isinstance(data.get("kwargs"), dict) else None
    if isinstance(inner, dict) and "@class" in inner:
        return str(inner["@class"])
    return str(data.get("@class", "unknown"))


def _decide_convention(
    folder: Path, name: str, data: dict[str, Any], explicit: str | None
) -> tuple[str, str]:
    """Return ``(convention, how it was decided)``."""
    if explicit is not None:
        if explicit not in legacy.CONVENTIONS:
            raise ValueError(
                f"message_convention must be one of {legacy.CONVENTIONS}, got {explicit!r}"
            )
        return explicit, "argument"
    try:
        conv = legacy.read_convention_sidecar(folder)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    if conv is not None:
        return conv, f"sidecar {legacy.SIDECAR_NAME}"
    conv = legacy.convention_from_metadata(data.get("metadata"))
    if conv is not None:
        return conv, "model.json metadata"
    conv = legacy.convention_from_name(name)
    if conv is not None:
        return conv, "model name"
    warnings.warn(
        f"matgl model {name!r} ({folder}) records no message convention (no "
        f"{legacy.SIDECAR_NAME}, no version in model.json); assuming the pre-matgl-3 "
        f"'destination' convention. Save models with tdphonon.potentials.save_potential(), or "
        f'write {legacy.SIDECAR_NAME} with {{"message_convention": "source"}} for a model '
        f"trained with matgl >= 3.",
        LegacyConventionWarning,
        stacklevel=3,
    )
    return "destination", "default (undetermined)"


def load_potential(model: str | os.PathLike, *, message_convention: str | None = None) -> Potential:
    """Load a matgl potential with the message-passing convention its weights were trained with.

    Parameters
    ----------
    model : str or os.PathLike
        A local matgl model folder (``model.json``, ``model.pt``, ``state.pt``) or a matgl
        hub name (``"TensorNet-PES-MatPES-PBE-2025.2"`` or ``"owner/name"``).
    message_convention : {"destination", "source"}, optional
        Override the convention the weights were trained with (see the module docstring for
        how it is decided otherwise).

    Returns
    -------
    matgl.apps.pes.Potential
        The potential in eval mode on CPU. For destination-convention M3GNet weights the graph
        convolutions aggregate onto ``edge_index[1]`` (:mod:`tdphonon._matgl_legacy`); for
        destination-convention TensorNet weights the weights are converted. A dict describing
        the loading is attached as ``potential.tdphonon_info``.

    Raises
    ------
    ModelLoadError
        If the folder is missing or incomplete, the hub is unreachable, the files cannot be
        read, the model is not a potential, or the convention cannot be restored for its
        architecture.
    """
    import matgl

    folder, name, origin = _locate_model(model)
    data = _read_model_json(folder)
    arch = _architecture(data)
    try:
        potential = matgl.load_model(folder)
    except Exception as err:
        cause = err.__cause__ or err
        raise ModelLoadError(
            f"matgl could not load the model in {folder}: {type(cause).__name__}: {cause}"
        ) from None
    if not (hasattr(potential, "model") and hasattr(potential, "calc_forces")):
        raise ModelLoadError(
            f"{folder} holds a {type(potential).__name__}, not an interatomic potential "
            f"(matgl.apps.pes.Potential)"
        )

    fix = None
    if arch in legacy.AFFECTED_ARCHITECTURES:
        conv, decided_by = _decide_convention(folder, name, data, message_convention)
        if conv == "destination":
            if arch == "M3GNet":
                legacy.apply_m3gnet_destination_convention(potential)
                fix = (
                    "M3GNetGraphConv.node_update_ sums messages onto edge_index[1] "
                    "(tdphonon._matgl_legacy.DestinationAggregationM3GNetGraphConv)"
                )
            elif arch == "TensorNet":
                legacy.convert_tensornet_destination_weights(potential)
                fix = (
                    "weights converted: tensor_embedding.emb2.weight column halves swapped, "
                    "tensor_embedding.distance_proj2 weight and bias negated"
                )
                conv, decided_by = "source", f"converted from destination ({decided_by})"
            else:
                raise ModelLoadError(
                    f"{name!r} is a {arch} model with weights in the pre-matgl-3 'destination' "
                    f"convention ({decided_by}); tdphonon can restore it only for M3GNet and "
                    f"TensorNet. Pass message_convention='source' if the weights were trained "
                    f"with matgl >= 3."
                )
    else:
        conv, decided_by = "unaffected", f"{arch} is not affected by the matgl 3.0 change"

    potential.eval()
    potential.tdphonon_info = {
        "name": name,
        "path": str(folder),
        "origin": origin,
        "architecture": arch,
        "message_convention": conv,
        "convention_decided_by": decided_by,
        "convention_fix": fix,
        "matgl_version": matgl.__version__,
    }
    return potential


def message_convention(potential: Potential) -> str:
    """Return the convention a loaded potential's weights must be saved with.

    Parameters
    ----------
    potential : matgl.apps.pes.Potential
        A potential, e.g. from :func:`load_potential`, possibly fine-tuned.

    Returns
    -------
    str
        ``"destination"`` for an M3GNet running the restored pre-matgl-3 aggregation, else
        ``"source"`` (current matgl; converted TensorNet weights included).
    """
    conv = legacy.m3gnet_convention(potential)
    return conv if conv is not None else "source"


def save_potential(
    potential: Potential, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None
) -> Path:
    """Save a potential so that :func:`load_potential` reloads it with the right convention.

    Writes matgl's ``model.json``/``model.pt``/``state.pt`` (with the convention and versions
    in ``model.json``'s metadata) and the ``tdphonon.json`` sidecar.

    Parameters
    ----------
    potential : matgl.apps.pes.Potential
        The potential (e.g. fine-tuned from a legacy M3GNet loaded by :func:`load_potential`).
    path : str or os.PathLike
        Output folder (created if needed).
    metadata : dict, optional
        Extra JSON-serialisable metadata to store in ``model.json``.

    Returns
    -------
    Path
        The model folder.
    """
    import matgl

    from tdphonon import __version__

    folder = Path(path)
    conv = message_convention(potential)
    info = {
        "message_convention": conv,
        "matgl_version": matgl.__version__,
        "tdphonon_version": __version__,
    }
    base = getattr(potential, "tdphonon_info", None)
    if isinstance(base, dict):
        info["derived_from"] = base.get("name")
    potential.save(folder, metadata={**(metadata or {}), "tdphonon": info})
    legacy.write_convention_sidecar(
        folder, conv, extra={k: v for k, v in info.items() if k != "message_convention"}
    )
    return folder


# ---------------------------------------------------------------------------------------------
# matgl calculator
# ---------------------------------------------------------------------------------------------


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return device


class MatglCalculator(ForceCalculator):
    """Batched energies and forces with a matgl ``Potential``.

    Each batch of structures is converted to graphs with matgl's
    :class:`matgl.ext.ase.Atoms2Graph` (as :class:`matgl.ext.ase.PESCalculator` does), collated
    into one PyG ``Batch`` (as matgl's data loaders do) and evaluated in one forward pass;
    forces come from autograd inside ``Potential``. Batched results equal one-by-one results to
    float32 rounding (about 1e-5 eV/Å).

    Parameters
    ----------
    potential : matgl.apps.pes.Potential
        The potential; load it with :func:`load_potential` so that legacy weights are fixed
        (or use :meth:`from_model`).
    name : str, optional
        Name; defaults to the model name recorded by :func:`load_potential`.
    device : str, default "auto"
        ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``), or ``"auto"`` (CUDA when available). The
        potential is moved there.
    batch_size : int, default 16
        Maximum number of structures per model call.
    max_atoms_per_batch : int or None, optional
        Maximum total atoms per model call. Defaults to 1024 on CPU, where larger batches
        bring no speed-up and become slower (cache and memory bound; see
        ``benchmarks/bench_force_evaluation.py``), and to no limit on GPU.
    """

    def __init__(
        self,
        potential: Potential,
        *,
        name: str | None = None,
        device: str = "auto",
        batch_size: int = 16,
        max_atoms_per_batch: int | None = None,
    ) -> None:
        from matgl.ext.ase import Atoms2Graph

        info = dict(getattr(potential, "tdphonon_info", None) or {})
        if not info and legacy.m3gnet_convention(potential) == "source":
            warnings.warn(
                "MatglCalculator got an M3GNet potential not loaded with "
                "tdphonon.potentials.load_potential; it runs with matgl's current (source) "
                "message convention, which is wrong for pre-matgl-3 weights such as "
                "M3GNet-MP-2021.2.8-PES.",
                LegacyConventionWarning,
                stacklevel=2,
            )
        self.device = _resolve_device(device)
        if max_atoms_per_batch is None and self.device == "cpu":
            max_atoms_per_batch = 1024
        super().__init__(
            name or info.get("name") or type(potential.model).__name__,
            batch_size,
            max_atoms_per_batch,
        )
        self.potential = potential.to(self.device)
        self.potential.eval()
        self._info = info
        model = potential.model
        self.element_types: tuple[str, ...] = tuple(model.element_types)
        self.cutoff = float(model.cutoff)
        self._converter = Atoms2Graph(self.element_types, self.cutoff)

    @classmethod
    def from_model(
        cls,
        model: str | os.PathLike,
        *,
        device: str = "auto",
        batch_size: int = 16,
        max_atoms_per_batch: int | None = None,
        message_convention: str | None = None,
    ) -> MatglCalculator:
        """Load a model folder or hub name with :func:`load_potential` and wrap it.

        Parameters
        ----------
        model : str or os.PathLike
            Model folder or hub name.
        device : str, default "auto"
            Device (see the class docstring).
        batch_size : int, default 16
            Maximum number of structures per model call.
        max_atoms_per_batch : int or None, optional
            Maximum total atoms per model call (see the class docstring).
        message_convention : {"destination", "source"}, optional
            Override the convention of the weights.

        Returns
        -------
        MatglCalculator
        """
        potential = load_potential(model, message_convention=message_convention)
        return cls(
            potential,
            device=device,
            batch_size=batch_size,
            max_atoms_per_batch=max_atoms_per_batch,
        )

    @property
    def supported_elements(self) -> frozenset[str]:
        """The model's ``element_types``."""
        return frozenset(self.element_types)

    @property
    def message_convention(self) -> str:
        """Convention of the weights as loaded (see :func:`load_potential`)."""
        return self._info.get("message_convention") or message_convention(self.potential)

    @contextmanager
    def _forces_only(self) -> Iterator[None]:
        pot = self.potential
        saved = pot.calc_stresses
        pot.calc_stresses = False
        try:
            yield
        finally:
            pot.calc_stresses = saved

    def _evaluate_batch(self, structures: Sequence[Atoms]) -> tuple[np.ndarray, list[np.ndarray]]:
        import matgl
        import torch
        from torch_geometric.data import Batch

        graphs, lattices, states = [], [], []
        for atoms in structures:
            graph, lattice, state = self._converter.get_graph(atoms)
            graphs.append(graph)
            lattices.append(torch.as_tensor(lattice, dtype=matgl.float_th).reshape(1, 3, 3))
            states.append(torch.as_tensor(np.asarray(state), dtype=matgl.float_th))
        batch = Batch.from_data_list(graphs).to(self.device)
        lat = torch.cat(lattices).to(self.device)
        state_attr = torch.stack(states).to(self.device)
        with torch.enable_grad(), self._forces_only():
            out = self.potential(batch, lat, state_attr)
        # matgl models keep the last forward's intermediate features (with their autograd
        # graph) in ``feature_dict``: drop them to free memory and keep the model deep-copyable.
        if isinstance(getattr(self.potential.model, "feature_dict", None), dict):
            self.potential.model.feature_dict = {}
        energies = out[0].detach().reshape(-1).to("cpu", torch.float64).numpy()
        forces = out[1].detach().to("cpu", torch.float64).numpy()
        counts = [len(a) for a in structures]
        if forces.shape != (sum(counts), 3):
            raise RuntimeError(f"unexpected force array shape {forces.shape} from {self.name}")
        return energies, np.split(forces, np.cumsum(counts)[:-1])

    def provenance(self) -> dict[str, Any]:
        """Describe the model, its convention and the run settings.

        Returns
        -------
        dict
            ``name``, ``kind="matgl"``, ``path``, ``origin``, ``architecture``, ``version``
            (matgl), ``torch_version``, ``message_convention``, ``convention_decided_by``,
            ``convention_fix``, ``device``, ``batch_size``, ``dtype``, ``n_elements``.
        """
        import matgl
        import torch

        return {
            "name": self.name,
            "kind": "matgl",
            "path": self._info.get("path"),
            "origin": self._info.get("origin"),
            "architecture": self._info.get("architecture", type(self.potential.model).__name__),
            "version": f"matgl {matgl.__version__}",
            "torch_version": torch.__version__,
            "message_convention": self.message_convention,
            "convention_decided_by": self._info.get("convention_decided_by", "instance"),
            "convention_fix": self._info.get("convention_fix"),
            "device": self.device,
            "batch_size": self.batch_size,
            "max_atoms_per_batch": self.max_atoms_per_batch,
            "dtype": str(self.potential.data_mean.dtype).replace("torch.", ""),
            "n_elements": len(self.element_types),
        }

    def as_ase_calculator(self) -> Calculator:
        """Return a ``matgl.ext.ase.PESCalculator`` over the (fixed) potential.

        Energies in eV, forces in eV/Å, stress in eV/Å³ (ASE convention). Enables
        ``calc_stresses`` on the potential if it was off.

        Returns
        -------
        matgl.ext.ase.PESCalculator
        """
        from matgl.ext.ase import PESCalculator

        self.potential.calc_stresses = True
        return PESCalculator(self.potential, stress_unit="eV/A3")


# ---------------------------------------------------------------------------------------------
# factory
# ---------------------------------------------------------------------------------------------


def get_calculator(
    model: str | os.PathLike | ForceCalculator | Calculator | Potential | None = None,
    *,
    device: str = "auto",
    batch_size: int = 16,
) -> ForceCalculator:
    """Build a :class:`ForceCalculator` from a model name, folder or calculator.

    Parameters
    ----------
    model : str, os.PathLike, ForceCalculator, ase Calculator, matgl Potential, or None
        ``None``: :func:`default_model` (``$TDPHONON_MODEL``, else :data:`DEFAULT_MODEL`). ``"emt"``
        (case-insensitive): ASE's EMT. A matgl model folder or hub name:
        :class:`MatglCalculator` (legacy weights fixed by :func:`load_potential`). An ASE
        calculator instance is wrapped in :class:`AseCalculator`, a matgl ``Potential``
        object in :class:`MatglCalculator`; a :class:`ForceCalculator` is returned as is.
    device : str, default "auto"
        Device for matgl models (``"cpu"``, ``"cuda"``, ``"auto"``).
    batch_size : int, default 16
        Structures per model call for matgl models.

    Returns
    -------
    ForceCalculator

    Raises
    ------
    ModelLoadError
        If the model cannot be loaded (e.g. not cached and the hub unreachable).
    """
    if model is None:
        model = default_model()
    if isinstance(model, ForceCalculator):
        return model
    if isinstance(model, Calculator):
        return AseCalculator(model)
    if hasattr(model, "calc_forces") and hasattr(model, "model"):  # a matgl Potential object
        return MatglCalculator(model, device=device, batch_size=batch_size)
    if isinstance(model, str) and model.strip().lower() == "emt":
        from ase.calculators.emt import EMT

        return AseCalculator(EMT(), name="emt")
    return MatglCalculator.from_model(model, device=device, batch_size=batch_size)
