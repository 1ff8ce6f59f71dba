"""Output documents of the tdphonon jobs (pydantic, atomate2 style).

Arrays are :data:`Array` fields: numpy arrays in Python, nested lists once serialised
(jobflow / monty), numpy again when a document is read back. The large ones (force
constants, snapshot displacements and forces) are named in the ``data=`` argument of the
jobs, so a :class:`jobflow.JobStore` puts them into its additional ``"data"`` store
(GridFS on MongoDB) and the documents themselves stay far below MongoDB's 16 MB limit.

Units: Å, eV, eV/Å (forces), eV/Å² (force constants), THz (frequencies), K.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, Field, PlainSerializer, PlainValidator, WithJsonSchema
from pymatgen.core import Structure
from pymatgen.phonon.bandstructure import PhononBandStructureSymmLine
from pymatgen.phonon.dos import PhononDos

__all__ = [
    "Array",
    "HarmonicPhononDoc",
    "PopulationDoc",
    "PopulationPointer",
    "SSCHAContinuation",
    "SSCHAIterationDoc",
    "SSCHATemperatureDoc",
    "StoredOutput",
]


def _as_float_array(value: Any) -> np.ndarray:
    if isinstance(value, dict) and "blob_uuid" in value:
        raise ValueError(
            "array not loaded from the additional store (query the JobStore with load=True)"
        )
    return np.asarray(value, dtype=float)


#: A float array: numpy in Python, a nested list when serialised.
Array = Annotated[
    np.ndarray,
    PlainValidator(_as_float_array),
    PlainSerializer(lambda array: np.asarray(array).tolist(), return_type=list),
    WithJsonSchema({"type": "array", "items": {}}),
]


class HarmonicPhononDoc(BaseModel):
    """Harmonic phonons of the standard primitive cell computed with the potential."""

    structure: Structure = Field(
        description="Standard primitive cell actually used (unit and primitive cell of phonopy)"
    )
    supercell_matrix: list[list[int]] = Field(
        description="Supercell matrix applied to the standard primitive cell"
    )
    n_supercell_atoms: int = Field(description="Number of atoms in the supercell")
    force_constants: Array = Field(
        description="Full supercell force constants, shape (N, N, 3, 3), eV/Å² (data store)"
    )
    displacements: Array | None = Field(
        None,
        description="Finite displacements of the supercell, shape (n, N, 3), Å (data store); "
        "None when the force constants came from a previous phonon document",
    )
    forces: Array | None = Field(
        None,
        description="Forces of the displaced supercells, shape (n, N, 3), eV/Å, reference "
        "forces not subtracted (data store)",
    )
    reference_energy: float = Field(description="Energy of the undisplaced supercell, eV")
    reference_forces: Array = Field(
        description="Forces of the undisplaced supercell, shape (N, 3), eV/Å (data store)"
    )
    band_structure: PhononBandStructureSymmLine = Field(
        description="Band structure along the Setyawan-Curtarolo path, THz (data store)"
    )
    dos: PhononDos = Field(description="Total phonon density of states, THz (data store)")
    labelled_frequencies: dict[str, list[float]] = Field(
        description="Frequencies at the labelled high-symmetry points, THz, ascending"
    )
    min_frequency: float = Field(description="Lowest frequency (path and q-mesh), THz")
    has_imaginary_modes: bool = Field(description="Whether the crystal is dynamically unstable")
    n_force_evaluations: int = Field(description="Supercell force evaluations spent")
    provenance: dict[str, Any] = Field(
        description="model (potential provenance), settings, source, tdphonon_version"
    )


class PopulationDoc(BaseModel):
    """One population of thermal snapshots with its forces (see tdphonon.sscha.Population)."""

    index: int = Field(description="Running number at this temperature (its random stream)")
    n_snapshots: int = Field(description="Number of snapshots (antithetic pairs)")
    displacements: Array = Field(description="Displacements, shape (n, N, 3), Å (data store)")
    forces: Array = Field(
        description="Forces, shape (n, N, 3), eV/Å, reference not subtracted (data store)"
    )
    energies: Array = Field(description="Supercell energies, shape (n,), eV (data store)")
    sampling_force_constants: Array = Field(
        description="Force constants whose thermal distribution generated the snapshots, "
        "shape (N, N, 3, 3), eV/Å² (data store)"
    )


class StoredOutput(BaseModel):
    """Where a job output is in the JobStore."""

    uuid: str = Field(description="Job uuid")
    index: int = Field(description="Job index (replaced jobs keep the uuid, index + 1)")


class PopulationPointer(StoredOutput):
    """An iteration output whose ``population`` field holds an active population."""

    population_index: int = Field(description="PopulationDoc.index of that population")


class SSCHAContinuation(BaseModel):
    """Compact state that lets the next iteration job continue the SSCHA.

    Only pointers to stored outputs and scalars: the arrays are loaded from the store by
    the next job, so job specs (e.g. FireWorks specs in MongoDB) stay small.
    """

    force_constants: StoredOutput = Field(
        description="Output whose ``force_constants`` are the current force constants"
    )
    populations: list[PopulationPointer] = Field(description="Populations still in use")
    n_target_snapshots: int = Field(description="Current target sample size")
    n_populations_drawn: int = Field(description="Populations drawn so far")
    history: list[dict[str, Any]] = Field(description="IterationRecord of every iteration")


class SSCHAIterationDoc(BaseModel):
    """One SSCHA iteration at one temperature (fields of tdphonon.sscha.IterationRecord)."""

    temperature: float = Field(description="Temperature, K")
    iteration: int = Field(description="Iteration number, from 1")
    n_new_snapshots: int = Field(description="Snapshots drawn (and evaluated) this iteration")
    n_force_evaluations: int = Field(description="Snapshot force evaluations so far at this T")
    n_active_snapshots: int = Field(description="Snapshots of the populations in use")
    effective_sample_size: float = Field(description="Kong-Liu effective sample size")
    frequency_change: float = Field(
        description="RMS change of the frequencies (fit - current), THz"
    )
    max_frequency_change: float = Field(description="Largest frequency change, THz")
    frequency_error: float = Field(description="RMS bootstrap error of the frequencies, THz")
    min_frequency: float = Field(description="Lowest commensurate frequency of the fit, THz")
    n_capped_modes: int = Field(
        description="Modes sampled at the displacement cap (max_displacement), see SSCHASettings"
    )
    converged: bool = Field(description="Convergence criterion met")
    population: PopulationDoc | None = Field(
        None, description="Population drawn in this iteration (arrays in the data store)"
    )
    force_constants: Array | None = Field(
        None,
        description="Force constants after this iteration (start of the next), "
        "(N, N, 3, 3), eV/Å² (data store); None in the final iteration, whose force "
        "constants are those of the SSCHATemperatureDoc",
    )
    continuation: SSCHAContinuation = Field(description="State passed to the next iteration")
    stop_reason: str | None = Field(None, description="Why the iterations stop here, or None")


class SSCHATemperatureDoc(BaseModel):
    """Final SSCHA result at one temperature: renormalised phonons and free energy."""

    temperature: float = Field(description="Temperature, K")
    statistics: str = Field(description="'quantum' (Bose-Einstein) or 'classical'")
    structure: Structure = Field(description="Standard primitive cell")
    supercell_matrix: list[list[int]] = Field(description="Supercell of the standard primitive")
    force_constants: Array = Field(
        description="Renormalised (SSCHA) supercell force constants, (N, N, 3, 3), eV/Å² "
        "(data store)"
    )
    band_structure: PhononBandStructureSymmLine = Field(
        description="Renormalised band structure, THz (data store)"
    )
    dos: PhononDos = Field(description="Renormalised phonon DOS, THz (data store)")
    labelled_frequencies: dict[str, list[float]] = Field(
        description="Renormalised frequencies at the labelled high-symmetry points, THz"
    )
    harmonic_labelled_frequencies: dict[str, list[float]] = Field(
        description="Harmonic (0 K, no zero-point renormalisation) frequencies there, THz"
    )
    frequency_shifts: dict[str, list[float]] = Field(
        description="Renormalised minus harmonic frequency per labelled point, THz"
    )
    mean_frequency_shift: float = Field(
        description="Mean of frequency_shifts, acoustic modes at Gamma excluded, THz"
    )
    min_frequency: float = Field(description="Lowest renormalised frequency, THz")
    commensurate_frequencies: Array = Field(
        description="Frequencies at the q-points commensurate with the supercell, THz"
    )
    commensurate_frequency_errors: Array = Field(
        description="Bootstrap standard errors of commensurate_frequencies, THz"
    )
    free_energy: float | None = Field(
        None, description="SSCHA free energy, eV/atom (None when undefined)"
    )
    free_energy_error: float | None = Field(None, description="Its standard error, eV/atom")
    free_energy_note: str = Field(description="'ok' or why the free energy is undefined")
    has_imaginary_modes: bool = Field(description="Renormalised phonons unstable at T")
    harmonic_has_imaginary_modes: bool = Field(description="Harmonic phonons unstable")
    stabilised: bool = Field(
        description="Harmonic phonons unstable and renormalised phonons stable"
    )
    converged: bool = Field(description="SSCHA converged")
    message: str = Field(description="'converged' or why not")
    n_force_evaluations: int = Field(description="Snapshot force evaluations at this T")
    n_iterations: int = Field(description="SSCHA iterations at this T")
    history: list[dict[str, Any]] = Field(description="IterationRecord of every iteration")
    warm_start: str = Field(
        description="Where the starting force constants came from ('harmonic' or 'T K')"
    )
    final_iteration: SSCHAIterationDoc = Field(description="The last iteration")
    provenance: dict[str, Any] = Field(
        description="model (potential provenance), seed, settings, tdphonon_version"
    )
