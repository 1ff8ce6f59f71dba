"""jobflow Makers of tdphonon (atomate2 style), one module per workflow concept.

* :mod:`tdphonon.flows.sscha`: :class:`SSCHAMaker`, temperature-dependent phonons.
* :mod:`tdphonon.flows.conductivity`: :class:`ThermalConductivityMaker` (fc3 + phono3py
  kappa) and :class:`SSCHAConductivityMaker` (SSCHA composed with kappa).
* :mod:`tdphonon.flows.finetune`: :class:`FineTuneMaker` (fine-tune a potential on DFT
  phonon force sets) and :class:`FineTuneSSCHAMaker` (fine-tune once, then the SSCHA).
"""

from tdphonon.flows.conductivity import SSCHAConductivityMaker, ThermalConductivityMaker
from tdphonon.flows.finetune import FineTuneMaker, FineTuneSSCHAMaker
from tdphonon.flows.sscha import SSCHAMaker

__all__ = [
    "FineTuneMaker",
    "FineTuneSSCHAMaker",
    "SSCHAConductivityMaker",
    "SSCHAMaker",
    "ThermalConductivityMaker",
]
