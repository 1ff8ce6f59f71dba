"""jobflow jobs of tdphonon, one module per workflow concept.

* :mod:`tdphonon.jobs.common`: helpers shared by jobs and flows. Every job gets its
  potential as one :class:`~tdphonon.potentials.PotentialSpec`.
* :mod:`tdphonon.jobs.sscha`: relaxation, harmonic phonons and SSCHA iterations.
* :mod:`tdphonon.jobs.conductivity`: fc3, phono3py kappa per fc2, kappa summary.
* :mod:`tdphonon.jobs.finetune`: fine-tuning job, stored-model archive and fetch.
"""

from tdphonon.jobs.common import ase_calculator, get_force_calculator
from tdphonon.jobs.conductivity import collect_kappa_job, fc3_job, kappa_job
from tdphonon.jobs.finetune import fetch_stored_model, finetune_job
from tdphonon.jobs.sscha import (
    harmonic_job,
    phonon_doc_force_constants,
    relax_job,
    sscha_iteration_job,
)

__all__ = [
    "ase_calculator",
    "collect_kappa_job",
    "fc3_job",
    "fetch_stored_model",
    "finetune_job",
    "get_force_calculator",
    "harmonic_job",
    "kappa_job",
    "phonon_doc_force_constants",
    "relax_job",
    "sscha_iteration_job",
]
