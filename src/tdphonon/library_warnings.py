"""Warnings of the libraries tdphonon drives that tell its users nothing.

Each is filtered by its message, category and the module it is attributed to, so that the
same text from anywhere else still shows:

* jobflow's ``run_locally`` enters every job's folder with monty's deprecated ``cd``
  (``FutureWarning: cd is deprecated``): jobflow's business, not the user's.
* atomate2's ASE relaxation converts its final atoms to pymatgen, which keeps only
  ``FixAtoms`` / ``FixCartesian`` constraints (``UserWarning: Only FixAtoms ...``):
  tdphonon's relaxation uses ``FixSymmetry`` only during the optimisation, so nothing
  that matters is dropped.
* jobflow orders a flow whose jobs no longer reference each other (``UserWarning: Some
  jobs are not connected``): after a run, references are resolved into values, and the
  flows of a campaign's materials are independent by design.
"""

from __future__ import annotations

import warnings

__all__ = ["LIBRARY_WARNINGS", "ignore_library_warnings"]

#: (message regex, category, module regex) of each warning :func:`ignore_library_warnings`
#: filters out.
LIBRARY_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"cd is deprecated", FutureWarning, r"jobflow\.managers\.local"),
    (r"Only FixAtoms and FixCartesian is supported", UserWarning, r"atomate2\.ase\."),
    (r"Some jobs are not connected", UserWarning, r"jobflow\.core\.flow"),
)


def ignore_library_warnings() -> None:
    """Add filters that ignore :data:`LIBRARY_WARNINGS` (to the current warning filters).

    Process-wide when called as is (the command line); inside ``warnings.catch_warnings()``
    only until that block ends.
    """
    for message, category, module in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
