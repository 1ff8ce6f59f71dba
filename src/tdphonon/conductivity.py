"""Lattice thermal conductivity with phono3py: third-order force constants and kappa.

Two small pieces, free of jobflow, in phonopy style:

* :func:`compute_fc3`: third-order force constants of a crystal from a
  :class:`~tdphonon.potentials.ForceCalculator`. By default from supercells with random
  displacements of every atom (phono3py's ``generate_displacements(number_of_snapshots=...)``)
  fitted with symfc (``produce_fc3(fc_calculator="symfc")``), which needs far fewer supercells
  than the finite-difference pairs of displacements (``method="finite"``, phono3py's
  traditional solver).
* :class:`ThermalConductivity`: phono3py's Boltzmann transport (RTA by default, LBTE on
  request) for one set of third-order force constants and any number of second-order ones
  (harmonic, or renormalised by the SSCHA at a temperature), on the fc2 supercell, which may
  differ from the fc3 one (phono3py's ``phonon_supercell_matrix``). Before solving, the fc2
  phonons are checked on the q-mesh: with imaginary modes (other than the acoustic modes at
  Gamma) kappa is not defined and the result says why instead of failing.

Units are phonopy's (VASP-like) units: Å, eV, AMU, THz; force constants in eV/Å² and eV/Å³;
kappa in W/m-K as six components ``xx yy zz yz xz xy``.

:func:`load_phono3py` reads DFT force sets (``phono3py_params*.yaml[.xz]`` or a
``phono3py_disp.yaml`` with a ``FORCES_FC3`` file), so that the potential and DFT can be
compared on the same grid with the same code.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray
from phonopy.structure.atoms import PhonopyAtoms
from pymatgen.core import Structure

from tdphonon.phonons import IMAGINARY_TOLERANCE
from tdphonon.sampling import check_temperatures
from tdphonon.structures import (
    choose_supercell_matrix,
    supercell_matrix_array,
    to_ase_atoms,
    to_phonopy_atoms,
)

if TYPE_CHECKING:
    from phono3py import Phono3py

    from tdphonon.potentials import ForceCalculator

__all__ = [
    "FC3_MIN_LENGTH",
    "KAPPA_COMPONENTS",
    "ConductivitySettings",
    "DFTKappa",
    "KappaResult",
    "ThermalConductivity",
    "ThirdOrderForceConstants",
    "compute_fc3",
    "dft_kappa",
    "load_phono3py",
    "minimum_fc3_snapshots",
]

logger = logging.getLogger(__name__)

#: Order of the six kappa components (phono3py's, Voigt-like).
KAPPA_COMPONENTS = ("xx", "yy", "zz", "yz", "xz", "xy")

#: Default minimum distance between periodic images of the fc3 supercell, Å (64 atoms for
#: diamond Si and rock-salt NaCl: the 2x2x2 conventional cell phono3py's examples use).
FC3_MIN_LENGTH = 8.0

#: Default displacement of the fc3 supercells, Å (phono3py's default).
FC3_DISTANCE = 0.03


#: Mode-resolved arrays of a :class:`KappaResult` (phono3py's per q-point and band data).
MODE_DATA_FIELDS = (
    "qpoints",
    "weights",
    "frequencies",
    "group_velocities",
    "gammas",
    "mode_kappa",
    "heat_capacities",
)


# -- third-order force constants ----------------------------------------------------------------


@dataclass
class ThirdOrderForceConstants:
    """Third-order force constants of a crystal and how they were obtained.

    Attributes
    ----------
    fc3 : ndarray, shape (n_unit, N, N, 3, 3, 3)
        Compact third-order force constants (first index over the atoms of the unit cell,
        which is also the primitive cell), eV/Å³.
    supercell_matrix : ndarray, shape (3, 3)
        fc3 supercell of the unit cell (phonopy convention).
    method : str
        ``"random"`` (random displacements + symfc) or ``"finite"`` (finite differences).
    distance : float
        Displacement amplitude, Å.
    n_supercells : int
        Displaced supercells evaluated (the force evaluations of fc3, the undisplaced
        reference supercell not counted).
    n_force_evaluations : int
        All supercell evaluations, the undisplaced reference included.
    fc2 : ndarray, shape (n_unit, N, 3, 3), optional
        Second-order force constants fitted from the same supercells (compact), eV/Å².
    wall_time : float
        Seconds spent (forces and fit).
    random_seed : int or None
        Seed of the random displacements.
    plusminus : bool
        Random displacements in +/- pairs.
    """

    fc3: NDArray[np.float64]
    supercell_matrix: NDArray[np.int_]
    method: str
    distance: float
    n_supercells: int
    n_force_evaluations: int
    fc2: NDArray[np.float64] | None = None
    wall_time: float = 0.0
    random_seed: int | None = None
    plusminus: bool = False


@contextmanager
def _symfc_errors(n_atoms: int, matrix: NDArray[np.int_]) -> Iterator[None]:
    """Turn symfc's internal failures (seen on very small supercells) into a clear error."""
    try:
        yield
    except (AssertionError, np.linalg.LinAlgError, IndexError) as error:
        raise ValueError(
            f"symfc could not build the third-order basis of the {n_atoms}-atom fc3 supercell "
            f"{matrix.tolist()} ({type(error).__name__}); use a larger fc3 supercell "
            "(fc3_min_length / --fc3-min-length, or --fc3-supercell)"
        ) from error


def compute_fc3(
    structure: Structure,
    calculator: ForceCalculator,
    supercell_matrix: Sequence | NDArray | None = None,
    min_length: float = FC3_MIN_LENGTH,
    method: Literal["random", "finite"] = "random",
    number_of_snapshots: int | Literal["auto"] = "auto",
    distance: float = FC3_DISTANCE,
    random_seed: int | None = 0,
    cutoff_pair_distance: float | None = None,
    plusminus: bool = True,
    symprec: float = 1e-5,
) -> ThirdOrderForceConstants:
    """Third-order force constants of ``structure`` from a potential.

    Parameters
    ----------
    structure : Structure
        Unit cell, used as the primitive cell too (e.g. the standard primitive cell).
    calculator : ForceCalculator
        Potential; its ``compute`` gives the supercell forces.
    supercell_matrix : array, optional
        fc3 supercell (3 integers or 3x3, phonopy convention); by default the near-cubic
        supercell with periodic images ``min_length`` apart
        (:func:`~tdphonon.structures.choose_supercell_matrix`).
    min_length : float
        Minimum image distance of the default supercell, Å.
    method : {"random", "finite"}
        Random displacements of all atoms fitted with symfc, or phono3py's finite
        differences (pairs of displacements, traditional solver).
    number_of_snapshots : int or "auto"
        Random supercells (pairs with ``plusminus``); ``"auto"`` is phono3py's estimate,
        4 x the supercells whose forces match the number of symfc fc3 basis functions.
    distance : float
        Displacement, Å (each atom's random displacement has this length).
    random_seed : int, optional
        Seed of the random displacements.
    cutoff_pair_distance : float, optional
        Finite differences only: skip pairs further apart than this, Å.
    plusminus : bool
        Random displacements only: each random supercell also with the opposite
        displacements (``number_of_snapshots`` pairs). The odd-order terms (fc2, fc4)
        cancel in the fc3 part of the fit; measured with M3GNet on Si, 16 pairs give kappa
        within 5 % of finite differences where 32 unpaired supercells are 30 % off.
    symprec : float
        Symmetry tolerance, Å.

    Returns
    -------
    ThirdOrderForceConstants
    """
    from phono3py import Phono3py

    if method not in ("random", "finite"):
        raise ValueError(f"unknown fc3 method {method!r}: use 'random' or 'finite'")
    if distance <= 0:
        raise ValueError(f"the displacement distance must be positive, got {distance}")
    if supercell_matrix is None:
        supercell_matrix = choose_supercell_matrix(structure, min_length=min_length)
    matrix = supercell_matrix_array(supercell_matrix, "fc3 supercell matrix")
    start = time.perf_counter()
    calculator.check_elements(structure.symbol_set)
    ph3 = Phono3py(
        to_phonopy_atoms(structure),
        supercell_matrix=matrix,
        primitive_matrix=np.eye(3),
        symprec=symprec,
        log_level=0,
    )
    if method == "random":
        if number_of_snapshots != "auto":
            number_of_snapshots = int(number_of_snapshots)
            needed = minimum_fc3_snapshots(ph3, plusminus)
            if number_of_snapshots < needed:
                kind = "+/- pairs" if plusminus else "random supercells"
                raise ValueError(
                    f"{number_of_snapshots} {kind} are too few for the symfc fc2 + fc3 fit of "
                    f"this {len(ph3.supercell)}-atom supercell (at least {needed}; 'auto' "
                    "is safer)"
                )
        with _symfc_errors(len(ph3.supercell), matrix):
            ph3.generate_displacements(
                distance=distance,
                number_of_snapshots=number_of_snapshots,
                random_seed=random_seed,
                is_plusminus=plusminus,
            )
    else:
        ph3.generate_displacements(distance=distance, cutoff_pair_distance=cutoff_pair_distance)
    displaced = [cell for cell in ph3.supercells_with_displacements if cell is not None]
    _, (reference,) = calculator.compute([to_ase_atoms(ph3.supercell)])
    _, forces = calculator.compute([to_ase_atoms(cell) for cell in displaced])
    forces = np.asarray(forces) - reference  # residual forces of the reference cell removed
    if method == "finite":
        # phono3py wants a force set for every displacement, skipped pairs included.
        full = np.zeros((len(ph3.supercells_with_displacements), *reference.shape))
        mask = [cell is not None for cell in ph3.supercells_with_displacements]
        full[np.flatnonzero(mask)] = forces
        forces = full
    ph3.forces = forces
    # Finite differences: phono3py's traditional solver does not impose the translational
    # (acoustic sum rule) and permutation symmetries unless asked; without them kappa can be
    # wrong by orders of magnitude (near-zero acoustic modes scatter strongly). symfc's
    # basis satisfies them by construction.
    with _symfc_errors(len(ph3.supercell), matrix):
        ph3.produce_fc3(
            fc_calculator="symfc" if method == "random" else "traditional",
            symmetrize_fc3r=method == "finite",
            is_compact_fc=True,
        )
    return ThirdOrderForceConstants(
        fc3=np.asarray(ph3.fc3),
        supercell_matrix=matrix,
        method=method,
        distance=float(distance),
        n_supercells=len(displaced),
        n_force_evaluations=len(displaced) + 1,
        fc2=None if ph3.fc2 is None else np.asarray(ph3.fc2),
        wall_time=time.perf_counter() - start,
        random_seed=random_seed if method == "random" else None,
        plusminus=bool(plusminus) if method == "random" else True,
    )


def minimum_fc3_snapshots(phono3py: Phono3py, plusminus: bool = True) -> int:
    """Fewest random supercells (pairs with ``plusminus``) for a determined symfc fit.

    symfc fits fc2 and fc3 together; each supercell gives ``3 N`` force equations. Unpaired
    supercells must determine both bases, ``(n_fc2 + n_fc3) / 3N`` of them; a +/- pair
    separates the even (fc3) from the odd (fc2) part, so ``max(n_fc2, n_fc3) / 3N`` pairs.
    One more is required: fits exactly at the bound were measured to return garbage (Si,
    M3GNet: kappa of 1e10 W/m-K). Well-conditioned fits need more still: phono3py's
    ``"auto"`` takes 4 times the fc3 estimate.
    """
    from phonopy.interface.symfc import SymfcFCSolver

    solver = SymfcFCSolver(phono3py.supercell, symmetry=phono3py.symmetry)
    sizes = solver.estimate_basis_size(orders=[2, 3])
    needed = max(sizes.values()) if plusminus else sum(sizes.values())
    return math.ceil(needed / (3 * len(phono3py.supercell))) + 1


# -- thermal conductivity -----------------------------------------------------------------------


@dataclass
class ConductivitySettings:
    """How kappa is computed (phono3py options).

    Attributes
    ----------
    mesh : tuple of 3 int
        q-point sampling mesh (Gamma-centred).
    method : {"rta", "lbte"}
        Relaxation-time approximation or the direct solution of the linearised
        Boltzmann equation.
    isotope : bool
        Add isotope scattering (natural abundances, or ``mass_variances``).
    mass_variances : list of float, optional
        Mass variance parameter of each atom of the unit cell (isotope scattering).
    boundary_mfp : float, optional
        Boundary scattering mean free path, micrometre.
    frequency_tolerance : float
        Frequencies below this (THz, negative) are imaginary modes, which make kappa
        undefined (the acoustic modes at Gamma excepted).
    """

    mesh: tuple[int, int, int] = (11, 11, 11)
    method: Literal["rta", "lbte"] = "rta"
    isotope: bool = False
    mass_variances: list[float] | None = None
    boundary_mfp: float | None = None
    frequency_tolerance: float = IMAGINARY_TOLERANCE

    def __post_init__(self) -> None:
        mesh = np.atleast_1d(np.asarray(self.mesh, dtype=int))
        if mesh.shape == (1,):
            mesh = np.repeat(mesh, 3)
        if mesh.shape != (3,) or (mesh < 1).any():
            raise ValueError(f"the q-mesh must be 3 positive integers, got {self.mesh}")
        self.mesh = tuple(int(n) for n in mesh)
        self.method = str(self.method).lower()
        if self.method not in ("rta", "lbte"):
            raise ValueError(f"unknown kappa method {self.method!r}: use 'rta' or 'lbte'")
        if self.frequency_tolerance > 0:
            raise ValueError("frequency_tolerance must be <= 0 THz")


@dataclass
class KappaResult:
    """Thermal conductivity of one fc2 at some temperatures.

    Attributes
    ----------
    temperatures : ndarray, shape (n_T,)
        K.
    kappa : ndarray, shape (n_T, 6)
        W/m-K, components ``xx yy zz yz xz xy``; NaN where not defined.
    reasons : list of str or None
        Per temperature, why kappa is not defined (None where it is).
    min_frequency : float
        Lowest fc2 frequency on the q-mesh, acoustic modes at Gamma excluded, THz.
    qpoints : ndarray, shape (n_q, 3)
        Irreducible q-points of the mesh (reciprocal lattice coordinates).
    weights : ndarray, shape (n_q,)
        Their multiplicities.
    frequencies : ndarray, shape (n_q, n_band)
        THz.
    group_velocities : ndarray, shape (n_q, n_band, 3)
        THz Å.
    gammas : ndarray, shape (n_T, n_q, n_band)
        Phonon-phonon linewidths (imaginary part of the self energy, RTA), THz.
    mode_kappa : ndarray, shape (n_T, n_q, n_band, 6)
        Mode contributions, weighted by the q-point multiplicity: their sum over q and
        bands divided by ``weights.sum()`` is kappa, W/m-K.
    heat_capacities : ndarray, shape (n_T, n_q, n_band)
        Mode heat capacities, eV/K.
    wall_time : float
        Seconds spent.
    """

    temperatures: NDArray[np.float64]
    kappa: NDArray[np.float64]
    reasons: list[str | None]
    min_frequency: float
    qpoints: NDArray[np.float64] | None = None
    weights: NDArray[np.int_] | None = None
    frequencies: NDArray[np.float64] | None = None
    group_velocities: NDArray[np.float64] | None = None
    gammas: NDArray[np.float64] | None = None
    mode_kappa: NDArray[np.float64] | None = None
    heat_capacities: NDArray[np.float64] | None = None
    wall_time: float = 0.0

    @property
    def defined(self) -> list[bool]:
        """Per temperature, whether kappa is defined."""
        return [reason is None for reason in self.reasons]

    def kappa_lists(self) -> list[list[float] | None]:
        """Per temperature, the six components (W/m-K) or None where not defined."""
        return [
            None if reason is not None else [float(v) for v in row]
            for row, reason in zip(self.kappa, self.reasons, strict=True)
        ]

    def mode_data(self) -> dict[str, Any]:
        """Mode-resolved arrays (for the data store), None where not computed."""
        return {name: getattr(self, name) for name in MODE_DATA_FIELDS}


class ThermalConductivity:
    """phono3py thermal conductivity for fixed fc3 and interchangeable fc2.

    Parameters
    ----------
    phono3py : Phono3py
        A phono3py object holding the crystal, the fc3 and fc2 supercells, the fc3 and,
        when given, NAC parameters. Build it with :meth:`from_force_constants` or
        :func:`load_phono3py`.
    settings : ConductivitySettings, optional
        Mesh, method and scattering options.

    Examples
    --------
    >>> kappa = ThermalConductivity.from_force_constants(structure, fc3, fc3_matrix, fc2_matrix)
    >>> harmonic = kappa.run(harmonic_fc2, [100, 300])
    >>> renormalised = kappa.run(sscha_fc2_300K, [300])
    """

    def __init__(self, phono3py: Phono3py, settings: ConductivitySettings | None = None) -> None:
        if phono3py.fc3 is None:
            raise ValueError("the phono3py object has no third-order force constants")
        self.phono3py = phono3py
        self.settings = settings if settings is not None else ConductivitySettings()
        self.phono3py.mesh_numbers = list(self.settings.mesh)

    @classmethod
    def from_force_constants(
        cls,
        structure: Structure | PhonopyAtoms,
        fc3: NDArray[np.float64] | ThirdOrderForceConstants,
        fc3_supercell_matrix: Sequence | NDArray | None = None,
        fc2_supercell_matrix: Sequence | NDArray | None = None,
        settings: ConductivitySettings | None = None,
        born_charges: NDArray[np.float64] | None = None,
        dielectric: NDArray[np.float64] | None = None,
        symprec: float = 1e-5,
    ) -> ThermalConductivity:
        """Build from a structure (unit = primitive cell) and its force constants.

        Parameters
        ----------
        structure : Structure or PhonopyAtoms
            Unit cell, also the primitive cell (the cell fc3 and fc2 were computed on).
        fc3 : ndarray or ThirdOrderForceConstants
            Compact ``(n_unit, N, N, 3, 3, 3)`` or full ``(N, N, N, 3, 3, 3)`` fc3 on the fc3
            supercell, eV/Å³.
        fc3_supercell_matrix : array
            fc3 supercell (phonopy convention); taken from ``fc3`` when it is a
            :class:`ThirdOrderForceConstants`.
        fc2_supercell_matrix : array, optional
            Supercell of the fc2 later given to :meth:`run`; default: the fc3 supercell.
        settings : ConductivitySettings, optional
            Mesh, method, scattering options.
        born_charges : ndarray, shape (n_unit, 3, 3), optional
            Born effective charges (e); with ``dielectric``, switches on NAC.
        dielectric : ndarray, shape (3, 3), optional
            High-frequency dielectric tensor.
        symprec : float
            Symmetry tolerance, Å.
        """
        from phono3py import Phono3py

        if isinstance(fc3, ThirdOrderForceConstants):
            if fc3_supercell_matrix is None:
                fc3_supercell_matrix = fc3.supercell_matrix
            fc3 = fc3.fc3
        if fc3_supercell_matrix is None:
            raise ValueError("the fc3 supercell matrix is needed")
        fc3_matrix = supercell_matrix_array(fc3_supercell_matrix, "fc3 supercell matrix")
        fc2_matrix = (
            fc3_matrix
            if fc2_supercell_matrix is None
            else supercell_matrix_array(fc2_supercell_matrix, "fc2 supercell matrix")
        )
        ph3 = Phono3py(
            to_phonopy_atoms(structure),
            supercell_matrix=fc3_matrix,
            primitive_matrix=np.eye(3),
            phonon_supercell_matrix=fc2_matrix,
            symprec=symprec,
            log_level=0,
        )
        fc3 = np.asarray(fc3, dtype=float)
        n_super = len(ph3.supercell)
        if fc3.shape[1:] != (n_super, n_super, 3, 3, 3) or fc3.shape[0] not in (
            len(ph3.primitive),
            n_super,
        ):
            raise ValueError(
                f"fc3 of shape {fc3.shape} does not fit the fc3 supercell of {n_super} atoms"
            )
        ph3.fc3 = fc3
        if (born_charges is None) != (dielectric is None):
            raise ValueError("NAC needs both Born effective charges and the dielectric tensor")
        if born_charges is not None:
            born = np.asarray(born_charges, dtype=float)
            if born.shape != (len(ph3.primitive), 3, 3):
                raise ValueError(
                    f"Born charges must have shape ({len(ph3.primitive)}, 3, 3), got {born.shape}"
                )
            ph3.nac_params = {
                "born": born,
                "dielectric": np.asarray(dielectric, dtype=float).reshape(3, 3),
            }
        return cls(ph3, settings)

    @property
    def fc2_supercell_matrix(self) -> NDArray[np.int_]:
        """Supercell of the fc2 (phonopy convention)."""
        matrix = self.phono3py.phonon_supercell_matrix
        return np.asarray(self.phono3py.supercell_matrix if matrix is None else matrix, dtype=int)

    @property
    def n_fc2_atoms(self) -> int:
        """Atoms of the fc2 supercell."""
        return len(self.phono3py.phonon_supercell)

    def check_fc2(self, fc2: NDArray[np.float64]) -> tuple[float, str | None]:
        """Lowest frequency on the mesh (acoustic Gamma modes excluded) and a reason if unstable.

        Parameters
        ----------
        fc2 : ndarray, shape (N2, N2, 3, 3) or (n_unit, N2, 3, 3)
            Second-order force constants on the fc2 supercell, eV/Å².

        Returns
        -------
        min_frequency : float
            THz (negative: imaginary).
        reason : str or None
            Why kappa is not defined, None if the phonons are stable.
        """
        from phonopy import Phonopy

        ph3 = self.phono3py
        phonon = Phonopy(
            ph3.unitcell,
            supercell_matrix=self.fc2_supercell_matrix,
            primitive_matrix=ph3.primitive_matrix,
            symprec=ph3.symmetry.tolerance,
        )
        phonon.force_constants = fc2
        if ph3.nac_params is not None:
            phonon.nac_params = ph3.nac_params
        phonon.run_mesh(list(self.settings.mesh), is_gamma_center=True)
        frequencies = np.array(phonon.mesh.frequencies, dtype=float)
        gamma = np.flatnonzero(np.all(np.abs(phonon.mesh.qpoints) < 1e-8, axis=1))
        if len(gamma):
            frequencies[gamma[0], :3] = np.inf  # acoustic modes at Gamma
        if np.isnan(frequencies).any():
            return float("nan"), "the fc2 gives non-finite phonon frequencies"
        lowest = int(np.argmin(frequencies.min(axis=1)))
        min_frequency = float(frequencies.min())
        if min_frequency < self.settings.frequency_tolerance:
            q = ", ".join(f"{x:.3f}" for x in phonon.mesh.qpoints[lowest])
            return min_frequency, (
                f"imaginary phonon modes: {min_frequency:.3f} THz at q = ({q}) on the "
                f"{'x'.join(map(str, self.settings.mesh))} mesh (dynamically unstable fc2)"
            )
        return min_frequency, None

    def run(self, fc2: NDArray[np.float64], temperatures: Sequence[float]) -> KappaResult:
        """Thermal conductivity with ``fc2`` at ``temperatures``.

        Parameters
        ----------
        fc2 : ndarray, shape (N2, N2, 3, 3) or (n_unit, N2, 3, 3)
            Second-order force constants on the fc2 supercell, eV/Å².
        temperatures : sequence of float
            K (> 0).

        Returns
        -------
        KappaResult
            kappa (W/m-K) per temperature, or the reason it is not defined (imaginary
            modes), with mode-resolved data when defined.
        """
        start = time.perf_counter()
        temperatures = np.asarray(check_temperatures(temperatures, positive=True))
        fc2 = np.asarray(fc2, dtype=float)
        n2 = self.n_fc2_atoms
        if fc2.shape[1:] != (n2, 3, 3) or fc2.shape[0] not in (len(self.phono3py.primitive), n2):
            raise ValueError(
                f"fc2 of shape {fc2.shape} does not fit the fc2 supercell of {n2} atoms"
            )
        min_frequency, reason = self.check_fc2(fc2)
        n_t = len(temperatures)
        if reason is not None:
            return KappaResult(
                temperatures=temperatures,
                kappa=np.full((n_t, 6), np.nan),
                reasons=[reason] * n_t,
                min_frequency=min_frequency,
                wall_time=time.perf_counter() - start,
            )
        ph3 = self.phono3py
        ph3.fc2 = fc2
        ph3.mesh_numbers = list(self.settings.mesh)
        ph3.init_phph_interaction()
        ph3.run_thermal_conductivity(
            is_LBTE=self.settings.method == "lbte",
            temperatures=temperatures,
            is_isotope=self.settings.isotope or self.settings.mass_variances is not None,
            mass_variances=self.settings.mass_variances,
            boundary_mfp=self.settings.boundary_mfp,
            log_level=0,
        )
        conductivity = ph3.thermal_conductivity
        kappa = np.asarray(conductivity.kappa, dtype=float)[0]
        reasons: list[str | None] = [
            None if np.isfinite(row).all() else "phono3py returned a non-finite kappa"
            for row in kappa
        ]
        mode_kappa = getattr(conductivity, "mode_kappa", None)
        gamma = getattr(conductivity, "gamma", None)
        heat_capacities = getattr(conductivity, "mode_heat_capacities", None)
        return KappaResult(
            temperatures=temperatures,
            kappa=kappa,
            reasons=reasons,
            min_frequency=min_frequency,
            qpoints=np.asarray(conductivity.qpoints, dtype=float),
            weights=np.asarray(conductivity.grid_weights, dtype=int),
            frequencies=np.asarray(conductivity.frequencies, dtype=float),
            group_velocities=np.asarray(conductivity.group_velocities, dtype=float),
            gammas=None if gamma is None else np.asarray(gamma, dtype=float)[0],
            mode_kappa=None if mode_kappa is None else np.asarray(mode_kappa, dtype=float)[0],
            heat_capacities=None
            if heat_capacities is None
            else np.asarray(heat_capacities, dtype=float),
            wall_time=time.perf_counter() - start,
        )

    def run_own_fc2(self, temperatures: Sequence[float]) -> KappaResult:
        """Kappa with the fc2 the phono3py object already holds (e.g. DFT force sets)."""
        if self.phono3py.fc2 is None:
            raise ValueError("the phono3py object has no second-order force constants")
        return self.run(np.asarray(self.phono3py.fc2), temperatures)


def load_phono3py(
    path: str | os.PathLike,
    forces: str | os.PathLike | None = None,
    fc2_forces: str | os.PathLike | None = None,
    fc_calculator: str | None = None,
) -> Phono3py:
    """A phono3py object with fc2 and fc3 from DFT force sets.

    Parameters
    ----------
    path : path
        ``phono3py_params*.yaml[.xz]`` (displacements with forces), or
        ``phono3py_disp.yaml`` / ``phono3py.yaml`` with the forces in ``forces``.
    forces : path, optional
        ``FORCES_FC3`` file of the fc3 supercells.
    fc2_forces : path, optional
        ``FORCES_FC2`` file, when fc2 has its own supercell.
    fc_calculator : str, optional
        phono3py's force-constant solver (``"symfc"`` for random displacements; default:
        phono3py's choice: traditional for finite differences, symfc for random ones).

    Raises
    ------
    FileNotFoundError
        A missing file.
    ValueError
        The file holds no forces, so no force constants can be made.
    """
    import phono3py

    path = Path(path)
    for name in (path, forces, fc2_forces):
        if name is not None and not Path(name).is_file():
            raise FileNotFoundError(f"file not found: {name}")
    try:
        ph3 = phono3py.load(
            path,
            forces_fc3_filename=None if forces is None else str(forces),
            forces_fc2_filename=None if fc2_forces is None else str(fc2_forces),
            produce_fc=True,
            fc_calculator=fc_calculator,
            log_level=0,
        )
    except Exception as error:  # phono3py raises many kinds on bad files
        raise ValueError(f"cannot read phono3py data from {path}: {error}") from None
    if ph3.fc3 is None or ph3.fc2 is None:
        raise ValueError(
            f"{path} has no forces for the displaced supercells: give the FORCES_FC3 file "
            "(--forces) or a phono3py_params.yaml"
        )
    return ph3


@dataclass
class DFTKappa:
    """Kappa from DFT force sets and what was used (see :func:`dft_kappa`)."""

    result: KappaResult
    formula: str
    supercell_matrix: list[list[int]]
    phonon_supercell_matrix: list[list[int]]
    nac: bool
    n_fc3_supercells: int
    n_fc2_supercells: int
    extra: dict[str, Any] = field(default_factory=dict)


def dft_kappa(
    path: str | os.PathLike,
    temperatures: Sequence[float],
    settings: ConductivitySettings | None = None,
    forces: str | os.PathLike | None = None,
    fc2_forces: str | os.PathLike | None = None,
) -> DFTKappa:
    """Kappa from DFT force sets read with :func:`load_phono3py` (fc2 and fc3 both DFT)."""
    ph3 = load_phono3py(path, forces=forces, fc2_forces=fc2_forces)
    kappa = ThermalConductivity(ph3, settings)
    result = kappa.run_own_fc2(temperatures)
    dataset = ph3.dataset or {}
    n_fc3 = len(dataset.get("first_atoms", [])) + sum(
        len(d.get("second_atoms", [])) for d in dataset.get("first_atoms", [])
    )
    if "displacements" in dataset:
        n_fc3 = len(dataset["displacements"])
    phonon_dataset = ph3.phonon_dataset or {}
    n_fc2 = len(phonon_dataset.get("first_atoms", phonon_dataset.get("displacements", [])))
    formula = Structure(
        ph3.unitcell.cell, ph3.unitcell.symbols, ph3.unitcell.scaled_positions
    ).composition.reduced_formula
    return DFTKappa(
        result=result,
        formula=formula,
        supercell_matrix=np.asarray(ph3.supercell_matrix, dtype=int).tolist(),
        phonon_supercell_matrix=np.asarray(
            ph3.phonon_supercell_matrix
            if ph3.phonon_supercell_matrix is not None
            else ph3.supercell_matrix,
            dtype=int,
        ).tolist(),
        nac=ph3.nac_params is not None,
        n_fc3_supercells=n_fc3,
        n_fc2_supercells=n_fc2,
    )
