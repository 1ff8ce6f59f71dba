"""matgl models: locate, decide the message convention, load, save, and evaluate in batches.

:func:`load_potential` loads a matgl model **with the correct message-passing convention**:
the pretrained weights of the matgl <= 2.x era (such as ``M3GNet-MP-2021.2.8-PES``) are
silently wrong under matgl >= 3 unless the pre-3.0 destination aggregation is restored (see
:mod:`tdphonon.potentials._matgl_legacy`). :class:`MatglCalculator` evaluates a loaded
potential on batches of structures, one model call per batch.

How the convention of a model is decided, first match wins:

1. the ``message_convention`` argument of :func:`load_potential`;
2. a ``tdphonon.json`` sidecar in the model folder (written by :func:`save_potential`);
3. the ``metadata`` of ``model.json`` (``message_convention`` or ``matgl_version``);
4. the model name: legacy pretrained names end in ``-PES`` (destination), names of models
   retrained for matgl >= 3 read ``<Arch>-PES-...`` (source);
5. otherwise a :class:`LegacyConventionWarning` is issued and ``"destination"`` is assumed,
   since every model of this project descends from the legacy pretrained weights.

This module imports torch and matgl (seconds): :mod:`tdphonon.potentials` loads it on first
use only.
"""

from __future__ import annotations

import json
import os
import re
import socket
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from tdphonon.potentials import _matgl_legacy as legacy
from tdphonon.potentials.base import ForceCalculator, LegacyConventionWarning, ModelLoadError
from tdphonon.potentials.catalog import MODEL_FILES as _MODEL_FILES
from tdphonon.potentials.catalog import shipped_model_dir
from tdphonon.potentials.factory import MODEL_ENV_VAR

if TYPE_CHECKING:
    from matgl.apps.pes import Potential

__all__ = ["MatglCalculator", "load_potential", "message_convention", "save_potential"]

_HUB_ORG = "materialyze"
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w\-.]*/[\w\-.]+$")


# ---------------------------------------------------------------------------------------------
# matgl models: locating, loading with the right convention, saving
# ---------------------------------------------------------------------------------------------


def _looks_like_path(text: str) -> bool:
    if text.startswith((".", "~", os.sep)) or os.path.isabs(text):
        return True
    if os.altsep and os.altsep in text:
        return True
    return text.count("/") > 1 or (text.count("/") == 1 and not _HUB_ID_RE.match(text))


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


def _shipped_names() -> str:
    from tdphonon.potentials.catalog import SHIPPED_DIR

    folders = SHIPPED_DIR.iterdir() if SHIPPED_DIR.is_dir() else ()
    names = sorted(p.name for p in folders if shipped_model_dir(p.name))
    return ", ".join(names) or "none installed"


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
            f"{MODEL_ENV_VAR}), a model shipped with tdphonon ({_shipped_names()}; "
            f"tdphonon models lists them), or --model emt for a classical potential."
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
    shipped = shipped_model_dir(text)
    if shipped is not None:
        return shipped, text, "shipped"
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
        convolutions aggregate onto ``edge_index[1]`` (:mod:`tdphonon.potentials._matgl_legacy`); for
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
                    "(tdphonon.potentials._matgl_legacy.DestinationAggregationM3GNetGraphConv)"
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
