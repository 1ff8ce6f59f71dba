"""Shared fixtures: locations of ../shared (models, DFT data) and small crystals."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_blas():
    """Small matrices: threaded BLAS is slower on the 2-core CI machines."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """tdphonon's caches (training graphs) in a temporary folder, not in the home folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TDPHONON_CACHE", str(tmp_path_factory.mktemp("tdphonon-cache")))
    yield
    mp.undo()


def _find_shared() -> Path:
    """``$TDPHONON_SHARED``, else ``shared/`` beside the repository, else beside the checkout
    this one was cloned from (a clean clone in a temporary folder, as CI makes)."""
    if os.environ.get("TDPHONON_SHARED"):
        return Path(os.environ["TDPHONON_SHARED"])
    repo = Path(__file__).resolve().parents[1]
    candidates = [repo.parent / "shared"]
    try:
        origin = subprocess.run(
            ["git", "-C", str(repo), "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin and Path(origin).is_dir():
        candidates.append(Path(origin).resolve().parent / "shared")
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED = _find_shared()
MODELS = Path(os.environ.get("TDPHONON_MODEL_DIR", SHARED / "models"))
M3GNET_MP = MODELS / "M3GNet-MP-2021.2.8-PES"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set TDPHONON_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def m3gnet_path() -> Path:
    if not (M3GNET_MP / "model.json").is_file():
        pytest.skip(f"M3GNet model not found at {M3GNET_MP} (set TDPHONON_MODEL_DIR)")
    return M3GNET_MP


@pytest.fixture(scope="session")
def al_emt_phonon():
    """fcc Al (EMT) with harmonic force constants in a 32-atom supercell."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    unitcell = PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.cell[:],
        scaled_positions=atoms.get_scaled_positions(),
    )
    phonon = Phonopy(unitcell, supercell_matrix=np.eye(3, dtype=int) * 2, primitive_matrix="F")
    phonon.generate_displacements(distance=0.01)
    forces = []
    for supercell in phonon.supercells_with_displacements:
        displaced = atoms.__class__(
            supercell.symbols, cell=supercell.cell, positions=supercell.positions, pbc=True
        )
        displaced.calc = EMT()
        forces.append(displaced.get_forces())
    phonon.forces = np.array(forces)
    phonon.produce_force_constants()
    return phonon
