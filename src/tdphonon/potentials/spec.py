"""One typed reference to a potential: what jobs receive instead of ``(model, device, batch_size)``.

A :class:`PotentialSpec` names the model (a matgl folder or hub name, ``"emt"``, a fine-tuned
model stored in a JobStore, or the ``OutputReference`` of a fine-tuning job that has not run
yet), the device and the batch size. It is made by a Maker (from its public ``model``,
``device`` and ``batch_size`` fields), :meth:`~PotentialSpec.resolve`\\ d where the flow is
made, stored in the job inputs (it is :class:`~monty.json.MSONable`) and turned into a
calculator on the worker by :meth:`~PotentialSpec.calculator`.

The path of a model, first to last::

    Maker(model=..., device=..., batch_size=...)
      -> PotentialSpec(...).resolve()            # where the flow is made
      -> job input (JSON)                        # jobflow / FireWorks
      -> PotentialSpec.calculator(store)         # on the worker
           -> stored.fetch_stored_model          # fine-tuned models only
           -> factory.cached_calculator -> factory.get_calculator
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monty.json import MSONable

from tdphonon.potentials import factory
from tdphonon.potentials.stored import as_stored_model, fetch_stored_model

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator
    from pymatgen.core import Structure

    from tdphonon.potentials.base import ForceCalculator

__all__ = ["PotentialSpec", "ase_calculator", "is_output_reference"]


def is_output_reference(value: Any) -> bool:
    """Whether ``value`` is a jobflow ``OutputReference`` (without importing jobflow)."""
    jobflow = sys.modules.get("jobflow")
    return jobflow is not None and isinstance(value, jobflow.OutputReference)


@dataclass(frozen=True)
class PotentialSpec(MSONable):
    """The potential of a job: model, device and batch size.

    Parameters
    ----------
    model : str, os.PathLike, StoredModel, dict, OutputReference or None
        A matgl model folder or hub name, ``"emt"`` (ASE's EMT), a fine-tuned model stored
        in a JobStore (:class:`~tdphonon.schemas.StoredModel`, its dict, or its
        ``tdphonon-model://<uuid>/<sha256>`` URI), the ``OutputReference`` of a model an
        earlier job makes, or None: :func:`~tdphonon.potentials.default_model`.
    device : str
        ``"cpu"``, ``"cuda"`` (``"cuda:N"``) or ``"auto"`` (CUDA when available).
    batch_size : int
        Structures (supercells) per model call, >= 1.
    """

    model: Any = None
    device: str = "auto"
    batch_size: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not self.device.strip():
            raise ValueError(f"device must be a non-empty string, got {self.device!r}")
        if isinstance(self.batch_size, bool) or int(self.batch_size) != self.batch_size:
            raise ValueError(f"batch_size must be an integer, got {self.batch_size!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "batch_size", int(self.batch_size))

    # -- where the flow is made ----------------------------------------------------------------

    def resolve(self, structure: Structure | None = None, *, check: bool = False) -> PotentialSpec:
        """The spec as jobs should receive it, resolved where the flow is made.

        ``None`` becomes :func:`~tdphonon.potentials.default_model` (``$TDPHONON_MODEL``,
        else the shipped ``M3GNet-phonondb-PBEsol``); an existing model folder becomes an
        absolute path (workers may run elsewhere); a stored fine-tuned model
        (``StoredModel``, its dict or URI) becomes its ``tdphonon-model://`` URI; an
        ``OutputReference`` (a model that an earlier job makes) and anything else (a hub
        name, ``"emt"``) pass unchanged.

        Parameters
        ----------
        structure : Structure, optional
            With ``check``: a crystal whose elements the model must know.
        check : bool
            Load the model now (on the CPU unless the device is ``"auto"``: the machine
            making the flow may have no GPU) and check the elements of ``structure``. An
            ``OutputReference`` cannot be checked before it exists and is not.

        Returns
        -------
        PotentialSpec

        Raises
        ------
        ModelLoadError
            With ``check``, if the model cannot be loaded.
        UnsupportedElementError
            With ``check``, if an element of ``structure`` is not supported.
        """
        resolved = replace(self, model=_resolve_model(self.model))
        if check and not is_output_reference(resolved.model):
            device = resolved.device if resolved.device == "auto" else "cpu"
            calculator = replace(resolved, device=device).calculator()
            if structure is not None:
                calculator.check_elements(structure.symbol_set)
        return resolved

    def model_string(self) -> str | None:
        """The model as a plain string (a stored model as its URI), None for the default.

        For inputs that must be plain JSON, such as atomate2's ``calculator_kwargs``.
        """
        stored = as_stored_model(self.model)
        if stored is not None:
            return stored.uri
        return None if self.model is None else str(self.model)

    # -- on the worker -------------------------------------------------------------------------

    def locate(self, store: Any = None) -> str:
        """The model as :func:`~tdphonon.potentials.get_calculator` loads it.

        A stored fine-tuned model is fetched into the local model cache (its folder is
        returned); None becomes :func:`~tdphonon.potentials.default_model`.

        Parameters
        ----------
        store : jobflow.JobStore, optional
            Store to fetch a stored model from (default: the running job's store, then
            jobflow's configured one).

        Returns
        -------
        str
            Model folder, hub name or ``"emt"``.
        """
        if is_output_reference(self.model):
            raise ValueError("the model is an OutputReference: the job making it has not run")
        stored = as_stored_model(self.model)
        if stored is not None:
            return str(fetch_stored_model(stored, store))
        return factory.default_model() if self.model is None else str(self.model)

    def calculator(self, store: Any = None) -> ForceCalculator:
        """The :class:`~tdphonon.potentials.ForceCalculator`, cached per process.

        Parameters
        ----------
        store : jobflow.JobStore, optional
            Store to fetch a stored model from (see :meth:`locate`).

        Returns
        -------
        ForceCalculator
            Shared by all jobs of the process with the same spec: consecutive jobs on one
            worker do not reload the model.
        """
        model = None if self.model is None else self.locate(store)
        return factory.cached_calculator(model, self.device, self.batch_size)


def _resolve_model(model: Any) -> Any:
    if is_output_reference(model):
        return model
    stored = as_stored_model(model)
    if stored is not None:
        return stored.uri
    if model is None:
        model = factory.default_model()
    text = str(model).strip() or None
    if text is not None and text.lower() != "emt" and Path(text).expanduser().exists():
        return str(Path(text).expanduser().resolve())
    return text


def ase_calculator(
    model: str | None = None, device: str = "auto", batch_size: int = 16
) -> Calculator:
    """ASE calculator of tdphonon's potential (correct matgl convention), for atomate2.

    atomate2's force-field makers build their calculator from a ``calculator_meta``
    naming a callable; :func:`tdphonon.jobs.sscha.relax_job` gives them
    ``{"@module": "tdphonon.potentials", "@callable": "ase_calculator"}`` with the
    spec's fields as ``calculator_kwargs``.
    """
    return PotentialSpec(model, device, batch_size).calculator().as_ase_calculator()
