"""jobflow jobs of tdphonon, one module per workflow concept.

* :mod:`tdphonon.jobs.common`: cached force calculators shared by all jobs.
* :mod:`tdphonon.jobs.sscha`: relaxation, harmonic phonons and SSCHA iterations.
"""

from tdphonon.jobs.common import ase_calculator, get_force_calculator
from tdphonon.jobs.sscha import (
    harmonic_job,
    phonon_doc_force_constants,
    relax_job,
    sscha_iteration_job,
)

__all__ = [
    "ase_calculator",
    "get_force_calculator",
    "harmonic_job",
    "phonon_doc_force_constants",
    "relax_job",
    "sscha_iteration_job",
]
