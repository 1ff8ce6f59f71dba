"""The one factory of force calculators, and the one place the environment names the model.

* :func:`default_model`: ``$TDPHONON_MODEL``, else :data:`DEFAULT_MODEL`.
* :func:`get_calculator`: a :class:`~tdphonon.potentials.base.ForceCalculator` from a model
  name or folder, ``"emt"``, or a calculator/potential object.
* :func:`cached_calculator`: the same, built once per process and ``(model, device,
  batch_size)``: consecutive jobs on one worker do not reload the model.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING

from ase.calculators.calculator import Calculator

from tdphonon.potentials.ase_calculators import AseCalculator
from tdphonon.potentials.base import ForceCalculator

if TYPE_CHECKING:
    from matgl.apps.pes import Potential

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_ENV_VAR",
    "cached_calculator",
    "default_model",
    "get_calculator",
]

#: Environment variable naming the model to use when none is given.
MODEL_ENV_VAR = "TDPHONON_MODEL"

#: The model used when none is given and ``TDPHONON_MODEL`` is unset: M3GNet fine-tuned on
#: 1,000 phonondb compounds (PBEsol), shipped with the package (no download). Chosen by the
#: numbers in docs/finetuning.md: phonon errors 1.9x lower than the pretrained
#: ``M3GNet-MP-2021.2.8-PES`` on 30 unseen compounds; relaxed lattices as close to PBEsol
#: (+3.7 % against +3.5 %), and the relaxation converges more often (28 of 30 against 22).
DEFAULT_MODEL = "M3GNet-phonondb-PBEsol"


def default_model() -> str:
    """The model to use when none is given: ``$TDPHONON_MODEL``, else :data:`DEFAULT_MODEL`.

    The one place where the environment names the model.
    """
    return os.environ.get(MODEL_ENV_VAR, "").strip() or DEFAULT_MODEL


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
        from tdphonon.potentials.matgl_models import MatglCalculator

        return MatglCalculator(model, device=device, batch_size=batch_size)
    if isinstance(model, str) and model.strip().lower() == "emt":
        from ase.calculators.emt import EMT

        return AseCalculator(EMT(), name="emt")
    from tdphonon.potentials.matgl_models import MatglCalculator

    return MatglCalculator.from_model(model, device=device, batch_size=batch_size)


@lru_cache(maxsize=4)
def cached_calculator(model: str | None, device: str, batch_size: int) -> ForceCalculator:
    """:func:`get_calculator`, built once per process for each ``(model, device, batch_size)``.

    Parameters
    ----------
    model : str or None
        Model folder (absolute), hub name or ``"emt"``; None: :func:`default_model`.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    batch_size : int
        Structures per model call.

    Returns
    -------
    ForceCalculator
        Shared by all callers in the process: do not modify it.
    """
    return get_calculator(model, device=device, batch_size=batch_size)
