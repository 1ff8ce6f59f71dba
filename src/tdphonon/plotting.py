"""Figures: band structures at several temperatures, SSCHA convergence."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from pymatgen.phonon.bandstructure import PhononBandStructureSymmLine
from pymatgen.phonon.plotter import PhononBSPlotter


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Lay out, write (150 dpi) and close a figure."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def plot_band_structures(
    band_structures: Mapping[str, PhononBandStructureSymmLine],
    path: str | Path,
    title: str = "",
    note: str | None = None,
    errors: Mapping[str, tuple[Mapping[str, Sequence[float]], Mapping[str, Sequence[float]]]]
    | None = None,
) -> Path:
    """Overlay band structures (e.g. harmonic and several temperatures) on one path.

    Parameters
    ----------
    band_structures : mapping of label to band structure
        All on the same q-path; the first is drawn in black (harmonic by convention).
    path : str or Path
        Output image file.
    title : str
        Figure title.
    note : str, optional
        A remark written under the axes, e.g. that the bands have no LO-TO splitting.
    errors : mapping of label to (frequencies, errors), optional
        For the curves that have them, the frequencies at the labelled points and their
        standard errors (THz, dicts keyed by point label, ``Gamma`` for the zone centre):
        drawn as ±1 sigma error bars at those points.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.cm.plasma(
        [0.1 + 0.75 * i / max(1, len(band_structures) - 2) for i in range(len(band_structures))]
    )
    ticks = None
    for index, (label, bands) in enumerate(band_structures.items()):
        data = PhononBSPlotter(bands).bs_plot_data()
        color = "black" if index == 0 else colors[index - 1]
        style = "--" if index == 0 else "-"
        for segment, (distances, frequencies) in enumerate(
            zip(data["distances"], data["frequency"], strict=True)
        ):
            for band in frequencies:
                ax.plot(
                    distances,
                    band,
                    style,
                    color=color,
                    lw=1.0,
                    label=label if segment == 0 and band is frequencies[0] else None,
                )
        ticks = data["ticks"]
        if errors and label in errors:
            _error_bars(ax, ticks, *errors[label], color=color)
    if ticks is not None:
        labels = [r"$\Gamma$" if t in ("GAMMA", "Γ", r"\Gamma") else t for t in ticks["label"]]
        ax.set_xticks(ticks["distance"], labels)
        for x in ticks["distance"]:
            ax.axvline(x, color="grey", lw=0.5)
        ax.set_xlim(ticks["distance"][0], ticks["distance"][-1])
    ax.axhline(0, color="grey", lw=0.5)
    if errors:
        ax.text(
            0.01,
            0.99,
            "error bars: ±1σ (bootstrap) at the labelled points",
            transform=ax.transAxes,
            va="top",
            fontsize=7,
            color="dimgrey",
        )
    ax.set_ylabel("Frequency (THz)")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    if note:
        ax.set_xlabel(note, fontsize=8, color="dimgrey", wrap=True)
    return _save(fig, path)


def _error_bars(
    ax: Any,
    ticks: Mapping[str, Sequence[Any]],
    frequencies: Mapping[str, Sequence[float]],
    errors: Mapping[str, Sequence[float]],
    color: Any,
) -> None:
    """±1 sigma error bars at the labelled points of a band plot."""
    for x, tick in zip(ticks["distance"], ticks["label"], strict=True):
        for name in str(tick).split("|"):
            name = "Gamma" if name.strip("$") in ("GAMMA", "Γ", r"\Gamma") else name
            if name in errors and name in frequencies:
                values = np.asarray(frequencies[name])
                ax.errorbar(
                    np.full(len(values), x),
                    values,
                    yerr=errors[name],
                    fmt="none",
                    ecolor=color,
                    elinewidth=1.0,
                    capsize=3,
                )


def plot_convergence(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    path: str | Path,
    tolerance: float | None = None,
) -> Path:
    """SSCHA convergence: frequency change and statistical error per iteration.

    Parameters
    ----------
    histories : mapping of label to list of iteration records (dicts)
        Each record has ``frequency_change``, ``frequency_error`` and
        ``n_force_evaluations``.
    path : str or Path
        Output image file.
    tolerance : float, optional
        Frequency tolerance (THz) drawn as a reference line.
    """
    fig, (ax_change, ax_cost) = plt.subplots(1, 2, figsize=(10, 4))
    for label, history in histories.items():
        iterations = [record["iteration"] for record in history]
        line = ax_change.semilogy(
            iterations,
            [record["frequency_change"] for record in history],
            "o-",
            label=f"{label} change",
        )[0]
        ax_change.semilogy(
            iterations,
            [record["frequency_error"] for record in history],
            "s--",
            color=line.get_color(),
            label=f"{label} error",
        )
        ax_cost.plot(
            iterations, [record["n_force_evaluations"] for record in history], "o-", label=label
        )
    if tolerance:
        ax_change.axhline(tolerance, color="grey", lw=0.8, ls=":")
    ax_change.set_xlabel("Iteration")
    ax_change.set_ylabel("RMS frequency change / error (THz)")
    ax_change.legend(fontsize=7)
    ax_cost.set_xlabel("Iteration")
    ax_cost.set_ylabel("Force evaluations (cumulative)")
    ax_cost.legend(fontsize=7)
    return _save(fig, path)


def plot_kappa_temperature(
    temperatures: Sequence[float],
    curves: Mapping[str, Sequence[Sequence[float] | None]],
    path: str | Path,
    title: str = "",
) -> Path:
    """Lattice thermal conductivity versus temperature, one curve per fc2.

    Each curve is the isotropic average (xx + yy + zz) / 3 of the kappa tensors; temperatures
    where kappa is not defined (None) are left out and marked with a cross on the axis.

    Parameters
    ----------
    temperatures : sequence of float
        K.
    curves : mapping of label to per-temperature kappa
        E.g. ``{"harmonic": [...], "SSCHA (renormalized)": [...]}``, each entry six
        components (W/m-K, xx yy zz yz xz xy) or None.
    path : str or Path
        Output image file.
    title : str
        Figure title.
    """
    fig, ax = plt.subplots(figsize=(5.5, 4))
    styles = [("o--", "black"), ("s-", "tab:red"), ("^-", "tab:blue"), ("v-", "tab:green")]
    for index, (label, kappas) in enumerate(curves.items()):
        marker, color = styles[index % len(styles)]
        points = [
            (t, sum(k[:3]) / 3) for t, k in zip(temperatures, kappas, strict=True) if k is not None
        ]
        missing = [t for t, k in zip(temperatures, kappas, strict=True) if k is None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker, color=color, label=label)
        if missing:
            ax.plot(
                missing,
                [0.0] * len(missing),
                "x",
                color=color,
                ms=9,
                clip_on=False,
                label=f"{label}: not defined",
            )
    ax.set_xlabel("Temperature (K)")
    ax.set_ylabel(r"$\kappa_L$ (W m$^{-1}$ K$^{-1}$), (xx+yy+zz)/3")
    ax.set_ylim(bottom=0, top=1.1 * ax.get_ylim()[1])  # room for the top marker
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)
