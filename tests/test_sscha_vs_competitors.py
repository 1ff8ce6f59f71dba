"""tdphonon's SSCHA against phonopy's MLPSSCHA and hiPhive on the same potential (EMT Al).

Same supercell, statistics, temperature and starting force constants; the competitors
run with many snapshots, and the results must agree within the combined statistical
errors (hiPhive within its second-order cutoff, which truncates long-range terms).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tdphonon.potentials import AseCalculator
from tdphonon.sscha import SSCHA, SSCHASettings

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "competitors.py"


def _competitors():
    if "competitors" not in sys.modules:
        spec = importlib.util.spec_from_file_location("competitors", _PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["competitors"] = module
        spec.loader.exec_module(module)
    return sys.modules["competitors"]


@pytest.mark.parametrize("statistics", ["classical", "quantum"])
def test_agrees_with_mlpsscha_and_hiphive(al_emt_phonon, statistics):
    from ase.calculators.emt import EMT

    pytest.importorskip("hiphive")
    competitors = _competitors()
    phonon, temperature = al_emt_phonon, 800.0
    harmonic = phonon.force_constants

    sscha = SSCHA(
        phonon,
        AseCalculator(EMT()),
        temperature,
        SSCHASettings(statistics=statistics, frequency_tolerance=0.02, seed=5),
    )
    ours = sscha.run()
    assert ours.converged
    ours_error = np.sqrt(np.mean(ours.frequency_errors**2))

    n_snapshots, n_average = 300, 3
    mlpsscha = competitors.run_mlpsscha(
        phonon,
        EMT(),
        temperature,
        statistics=statistics,
        n_snapshots=n_snapshots,
        max_iterations=2 + n_average,
        seed=1,
        initial_force_constants=harmonic,
    )
    theirs = np.mean([it.force_constants for it in mlpsscha[-n_average:]], axis=0)
    theirs_freq = sscha.frequencies(theirs)
    spread = np.std([sscha.frequencies(it.force_constants) for it in mlpsscha[-n_average:]], axis=0)
    theirs_error = np.sqrt(np.mean(spread**2) / n_average)

    shift = np.sqrt(np.mean((theirs_freq - sscha.frequencies(harmonic)) ** 2))
    difference = np.sqrt(np.mean((ours.frequencies - theirs_freq) ** 2))
    combined = np.hypot(ours_error, theirs_error)
    assert shift > 0.1  # a real renormalisation is compared
    assert difference < 3 * combined + 0.005, (difference, ours_error, theirs_error)

    hiphive = competitors.run_hiphive_scph(
        phonon,
        EMT(),
        temperature,
        statistics=statistics,
        n_snapshots=150,
        max_iterations=10,
        alpha=0.5,
        seed=2,
        initial_force_constants=harmonic,
    )
    hiphive_freq = np.mean(
        [sscha.frequencies(it.force_constants) for it in hiphive[-n_average:]], axis=0
    )
    # hiPhive's cutoff (nearest neighbours in this 32-atom cell) truncates the fit
    hiphive_difference = np.sqrt(np.mean((ours.frequencies - hiphive_freq) ** 2))
    assert hiphive_difference < 0.15 * shift + 3 * combined, (hiphive_difference, shift)
