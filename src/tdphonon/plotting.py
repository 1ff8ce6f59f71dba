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


# -- campaign analysis (tdphonon.analysis, ``tdphonon analyze``) --------------------------------

#: Rows of the lanthanides and actinides below the main table (0-based grid rows).
_F_BLOCK_ROWS = {57: 7, 89: 8}


def _periodic_table_cell(z: int) -> tuple[int, int]:
    """(row, column), 0-based, of element ``z`` in the 18-column periodic table."""
    from pymatgen.core import Element

    for first, row in _F_BLOCK_ROWS.items():
        if first <= z <= first + 14:
            return row, 2 + z - first
    element = Element.from_Z(z)
    return element.row - 1, element.group - 1


def plot_periodic_table(
    values: Mapping[str, float],
    path: str | Path,
    counts: Mapping[str, int] | None = None,
    label: str = "",
    title: str = "",
) -> Path:
    """Periodic-table heat map: one value per element (e.g. the mean score of its compounds).

    Parameters
    ----------
    values : mapping of element symbol to float
        Elements without a value are drawn grey.
    path : str or Path
        Output image file.
    counts : mapping of element symbol to int, optional
        Written in each cell (``n=``): how many compounds the value averages.
    label : str
        Colour bar label.
    title : str
        Figure title.
    """
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle
    from pymatgen.core import Element

    finite = {k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)}
    fig, ax = plt.subplots(figsize=(13, 6.5))
    cmap = plt.get_cmap("viridis")
    low, high = (min(finite.values()), max(finite.values())) if finite else (0.0, 1.0)
    norm = Normalize(vmin=low, vmax=high if high > low else low + 1e-9)
    for z in range(1, 119):
        symbol = Element.from_Z(z).symbol
        row, column = _periodic_table_cell(z)
        y = row + (0.4 if row >= 7 else 0.0)  # a gap above the f-block
        value = finite.get(symbol)
        face = cmap(norm(value)) if value is not None else (0.93, 0.93, 0.93)
        ax.add_patch(Rectangle((column, y), 0.95, 0.95, facecolor=face, edgecolor="white"))
        dark = value is not None and norm(value) < 0.6
        color = "white" if dark else ("black" if value is not None else "darkgrey")
        ax.text(
            column + 0.47,
            y + 0.32,
            symbol,
            ha="center",
            va="center",
            fontsize=9,
            color=color,
            weight="bold",
        )
        if value is not None:
            ax.text(
                column + 0.47,
                y + 0.62,
                f"{value:.3g}",
                ha="center",
                va="center",
                fontsize=6.5,
                color=color,
            )
            if counts and symbol in counts:
                ax.text(
                    column + 0.47,
                    y + 0.84,
                    f"n={counts[symbol]}",
                    ha="center",
                    va="center",
                    fontsize=5.5,
                    color=color,
                )
    ax.set_xlim(-0.2, 18.1)
    ax.set_ylim(9.5, -0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(mappable, ax=ax, fraction=0.025, pad=0.01, label=label)
    ax.set_title(title)
    return _save(fig, path)


def plot_groups(
    frame: Any,
    group: str,
    target: str,
    path: str | Path,
    top: int = 15,
    label: str = "",
    title: str = "",
) -> Path:
    """Box plots with the points over them: ``target`` per group, one colour per temperature.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per compound and temperature, with ``group``, ``target`` and
        ``temperature`` columns (rows without a finite target or a group are left out).
    group : str
        Column of the groups (e.g. ``prototype``, ``spacegroup_symbol``).
    target : str
        Column of the values.
    path : str or Path
        Output image file.
    top : int
        The ``top`` groups with the most compounds are shown, ordered by their median.
    label, title : str
        Axis label of the values (default ``target``) and figure title.
    """
    rows = frame[np.isfinite(frame[target].astype(float)) & frame[group].notna()]
    counts = rows.groupby(group)["id" if "id" in rows else target].nunique()
    shown = counts.sort_values(ascending=False, kind="stable").index[:top]
    order = rows[rows[group].isin(shown)].groupby(group)[target].median().sort_values().index
    temperatures = sorted(rows["temperature"].dropna().unique()) or [np.nan]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.38 * max(1, len(order)) * len(temperatures) ** 0.5))
    colors = plt.cm.plasma(np.linspace(0.1, 0.8, len(temperatures)))
    width = 0.8 / len(temperatures)
    rng = np.random.default_rng(0)  # jitter of the points
    for k, (temperature, color) in enumerate(zip(temperatures, colors, strict=True)):
        at_t = rows if np.isnan(temperature) else rows[rows["temperature"] == temperature]
        offset = (k - (len(temperatures) - 1) / 2) * width
        data = [at_t.loc[at_t[group] == g, target].astype(float).to_numpy() for g in order]
        positions = np.arange(len(order)) + offset
        present = [i for i, d in enumerate(data) if len(d)]
        if present:
            ax.boxplot(
                [data[i] for i in present],
                positions=positions[present],
                widths=width * 0.8,
                vert=False,
                showfliers=False,
                patch_artist=True,
                boxprops={"facecolor": (*color[:3], 0.25), "edgecolor": color},
                medianprops={"color": color},
                whiskerprops={"color": color},
                capprops={"color": color},
            )
        for i in present:
            jitter = rng.uniform(-0.3, 0.3, len(data[i])) * width
            ax.plot(
                data[i],
                positions[i] + jitter,
                "o",
                ms=3.5,
                color=color,
                alpha=0.8,
                label=(
                    f"{temperature:g} K" if i == present[0] and np.isfinite(temperature) else None
                ),
            )
    ax.set_yticks(np.arange(len(order)), [f"{g}  (n={counts[g]})" for g in order], fontsize=8)
    ax.set_ylim(-0.6, len(order) - 0.4)
    ax.set_xlabel(label or target)
    if len(temperatures) > 1 or np.isfinite(temperatures[0]):
        ax.legend(fontsize=8, loc="best")
    ax.set_title(title)
    return _save(fig, path)


def plot_measures(
    frame: Any,
    x: str,
    y: str,
    path: str | Path,
    labels: tuple[str, str] = ("", ""),
    title: str = "",
) -> Path:
    """Scatter of two measures per compound and temperature, one colour per temperature,
    each point labelled with its formula when there are few (<= 40)."""
    rows = frame[np.isfinite(frame[x].astype(float)) & np.isfinite(frame[y].astype(float))]
    temperatures = sorted(rows["temperature"].dropna().unique())
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    colors = plt.cm.plasma(np.linspace(0.1, 0.8, max(1, len(temperatures))))
    for temperature, color in zip(temperatures, colors, strict=False):
        at_t = rows[rows["temperature"] == temperature]
        ax.plot(at_t[x], at_t[y], "o", color=color, ms=5, alpha=0.85, label=f"{temperature:g} K")
    if len(rows) <= 40 and "formula" in rows:
        for _, row in rows.iterrows():
            ax.annotate(
                str(row["formula"]),
                (row[x], row[y]),
                fontsize=6,
                alpha=0.7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel(labels[0] or x)
    ax.set_ylabel(labels[1] or y)
    if temperatures:
        ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def plot_parity(
    computed: Sequence[float],
    predicted: Sequence[float],
    path: str | Path,
    scores: Mapping[str, float] | None = None,
    label: str = "",
    title: str = "",
) -> Path:
    """Cross-validated predictions against the computed values, with the diagonal.

    ``scores`` (e.g. ``{"R² (CV)": 0.8, "R² baseline": -0.1, "MAE": 0.01}``) are written in
    the corner.
    """
    computed, predicted = np.asarray(computed, float), np.asarray(predicted, float)
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.plot(computed, predicted, "o", ms=5, alpha=0.8, color="tab:blue")
    both = np.concatenate([computed, predicted])
    low, high = (both.min(), both.max()) if len(both) else (0.0, 1.0)
    pad = 0.05 * (high - low or 1.0)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], "--", color="grey", lw=0.8)
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"computed {label}".strip())
    ax.set_ylabel(f"predicted {label} (held-out folds)".strip())
    if scores:
        text = "\n".join(f"{k} = {v:.3g}" for k, v in scores.items() if v is not None)
        ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def plot_importance(
    names: Sequence[str],
    importance: Sequence[float],
    path: str | Path,
    errors: Sequence[float] | None = None,
    top: int = 15,
    label: str = "",
    title: str = "",
) -> Path:
    """Horizontal bars of the ``top`` most important features (most important on top)."""
    order = np.argsort(np.asarray(importance, float))[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(6, 1.0 + 0.3 * len(order)))
    ax.barh(
        np.arange(len(order)),
        np.asarray(importance, float)[order],
        xerr=None if errors is None else np.asarray(errors, float)[order],
        color="tab:blue",
        alpha=0.8,
        error_kw={"lw": 0.8},
    )
    ax.set_yticks(np.arange(len(order)), [str(names[i]) for i in order], fontsize=8)
    ax.xaxis.set_major_locator(plt.MaxNLocator(5))
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel(label or "importance")
    ax.set_title(title)
    return _save(fig, path)
