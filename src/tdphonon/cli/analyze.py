"""``tdphonon analyze``: a campaign's table, structure features, trends and drivers."""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from tdphonon.cli import CommandError
from tdphonon.cli.options import (
    add_connection_options,
    add_report_options,
    add_store_option,
    connection_kwargs,
    existing_file,
    launchpad_file,
    non_negative_int,
    output_file,
    positive_int,
    temperature,
)

#: Targets of the analysis: name -> label on plots.
LABELS = {"sigma_a": r"$\sigma^A$", "mean_relative_shift": "mean relative frequency shift"}

ANALYZE_EPILOG = """\
examples:
  tdphonon analyze --json analysis.json --plots figures      # the embedded store
  tdphonon analyze --store jobflow.yaml --temperature 300 --csv table.csv
  tdphonon analyze --target sigma_a --estimator gradient_boosting --folds 10
  tdphonon analyze --export part1.json.xz                   # the campaign without its store
  tdphonon analyze --from part1.json.xz part2.json.xz --json analysis.json

What it computes (docs/analysis.md):
  table     one row per compound and temperature: status and reason, sigma_a (anharmonicity
            score), mean_relative_shift (mean relative frequency shift), ... and the
            structure features (elemental statistics, alkali fraction, radii,
            electronegativity differences, coordination, bond lengths, octahedra,
            perovskite-derived flag, density, space group, prototype)
  trends    mean score per element (periodic-table heat map), prototype and space group
  drivers   a random forest (or gradient boosting) predicting each target from the
            features: cross-validated R^2 and MAE against the mean-value baseline (all
            temperatures of a compound in one fold) and permutation importance
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``analyze`` to the sub-command parsers."""
    parser = sub.add_parser(
        "analyze",
        help="table, trends and drivers of anharmonicity across a campaign",
        description="Read a campaign from a store, add structure features to each compound, "
        "show trends of the anharmonicity score (sigma_a) and the relative frequency shift by "
        "element, prototype and space group, and fit a model of what drives them.",
        epilog=ANALYZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_option(parser)
    parser.add_argument(
        "--from",
        dest="inputs",
        nargs="+",
        type=existing_file,
        default=[],
        metavar="FILE",
        help="files of --export (.json, .json.xz, .json.gz) to analyse instead of the store "
        "(with it, when --store is given): pieces of a campaign run on several machines or "
        "stores; a compound in several keeps its best row (completed first)",
    )
    parser.add_argument(
        "--export",
        type=output_file,
        metavar="FILE",
        help="write the campaign's table and crystals (no arrays; a few kB per compound) to "
        "FILE (.json, .json.xz, .json.gz) for --from; then analyse as usual",
    )
    parser.add_argument(
        "--launchpad",
        type=launchpad_file,
        metavar="FILE",
        help="my_launchpad.yaml: waiting and fizzled FireWorks in the table",
    )
    parser.add_argument(
        "--target",
        nargs="+",
        choices=["sigma_a", "mean_relative_shift"],
        default=["sigma_a", "mean_relative_shift"],
        help="measures to analyse (default both; the first is the JSON's 'model')",
    )
    parser.add_argument(
        "--temperature",
        type=temperature,
        metavar="K",
        help="only this temperature (default: all; temperature is then a model feature)",
    )
    parser.add_argument(
        "--estimator",
        choices=["random_forest", "gradient_boosting"],
        default="random_forest",
        help="scikit-learn model of the drivers (default random_forest)",
    )
    parser.add_argument(
        "--folds",
        type=positive_int,
        default=5,
        metavar="N",
        help="cross-validation folds, >= 2 (default 5; needs at least N compounds)",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="random seed, >= 0 (default 0)"
    )
    parser.add_argument(
        "--top",
        type=positive_int,
        default=15,
        metavar="N",
        help="groups (prototypes, space groups) and features shown on plots (default 15)",
    )
    parser.add_argument(
        "--csv",
        type=output_file,
        metavar="FILE",
        help="write the table (one row per compound and temperature, every feature) as CSV",
    )
    parser.add_argument(
        "--parquet", type=output_file, metavar="FILE", help="write the table as Parquet (pyarrow)"
    )
    add_report_options(
        parser,
        json_help="write the summary (compounds, model scores, ranked features, trends)",
        plots_help="the heat maps, box plots, parity and importance plots",
    )
    add_connection_options(parser)
    return parser


def _check(args: argparse.Namespace) -> None:
    """Checks that involve the environment or several options (before reading the store)."""
    if args.folds < 2:
        raise CommandError(f"--folds: cross-validation needs at least 2 folds, got {args.folds}")
    if args.parquet is not None:
        import importlib.util

        if not any(importlib.util.find_spec(m) for m in ("pyarrow", "fastparquet")):
            raise CommandError("--parquet needs pyarrow (pip install pyarrow); use --csv instead")
    args.target = list(dict.fromkeys(args.target))


def command(args: argparse.Namespace) -> int:
    """Analyse, print a short report, write the table, JSON and plots."""
    from tdphonon.analysis import analyze, export_campaign
    from tdphonon.stores import connect_launchpad, connect_store, get_store

    _check(args)
    connection = connection_kwargs(args)
    store = None
    if args.store is not None or not args.inputs:
        store = connect_store(get_store(args.store, **connection), **connection)
    launchpad = connect_launchpad(args.launchpad, **connection) if args.launchpad else None
    if args.export:
        if store is None:
            raise CommandError("--export writes a store's campaign: give --store with --from")
        n_rows = export_campaign(store, args.export, launchpad)
        print(f"wrote {args.export} ({n_rows} rows)")
    try:
        analysis = analyze(
            store,
            files=args.inputs,
            temperature=args.temperature,
            targets=args.target,
            estimator=args.estimator,
            n_splits=args.folds,
            seed=args.seed,
            launchpad=launchpad,
        )
    except ValueError as error:  # no results (at that temperature): one line
        raise CommandError(str(error)) from None
    print(format_report(analysis))
    if args.csv:
        analysis.table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if args.parquet:
        analysis.table.to_parquet(args.parquet, index=False)
        print(f"wrote {args.parquet}")
    if args.json:
        Path(args.json).write_text(json.dumps(analysis.summary(), indent=1))
        print(f"wrote {args.json}")
    if not args.no_plots:
        paths = write_plots(analysis, Path(args.plots), top=args.top)
        print(f"wrote {len(paths)} plots to {args.plots}")
    return 0


def format_report(analysis: Any) -> str:
    """Counts per status, the top prototypes and elements, and the models' scores."""
    table = analysis.table
    compounds = table.drop_duplicates("id")
    counts = compounds["status"].value_counts().sort_index()
    lines = [
        f"{len(compounds)} compounds, {len(table)} rows (compound x temperature): "
        + ", ".join(f"{n} {status}" for status, n in counts.items())
    ]
    for target in analysis.targets:
        for name, title in (("by_prototype", "prototype"), ("by_element", "element")):
            frame = analysis.trends[target][name]
            for t, group in frame.groupby("temperature"):
                head = group.head(5)
                key = "prototype" if title == "prototype" else "element"
                text = ", ".join(
                    f"{row[key]} {row['mean']:.3g} (n={row['count']})" for _, row in head.iterrows()
                )
                lines.append(f"{target} at {t:g} K, highest mean by {title}: {text}")
        if target in analysis.models:
            model = analysis.models[target]
            top = ", ".join(model.importances["name"].head(5))
            lines.append(
                f"{target} model ({model.estimator}, {model.n_splits}-fold CV, "
                f"{model.n_compounds} compounds): R2 {model.r2_cv:.3f} vs baseline "
                f"{model.baseline_r2:.3f}, MAE {model.mae_cv:.3g} vs {model.baseline_mae:.3g}; "
                f"top features: {top}"
            )
        else:
            lines.append(f"{target}: no model: {analysis.notes[target]}")
    return "\n".join(lines)


def _name(value: float) -> str:
    return f"{value:g}K"


def write_plots(analysis: Any, directory: Path, top: int = 15) -> list[Path]:
    """Every figure of the analysis into ``directory`` (created); the paths written.

    Per target: ``<target>_periodic_table_<T>K.png`` (mean over the compounds containing
    each element, at each temperature), ``<target>_by_prototype.png``,
    ``<target>_by_spacegroup.png``, and where a model was fitted ``<target>_parity.png``
    (cross-validated predictions) and ``<target>_importance.png``; and
    ``sigma_a_vs_mean_relative_shift.png``.
    """
    from tdphonon.plotting import (
        plot_groups,
        plot_importance,
        plot_measures,
        plot_parity,
        plot_periodic_table,
    )

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    directory.mkdir(parents=True, exist_ok=True)
    table = analysis.table
    paths = []
    for target in analysis.targets:
        label = LABELS.get(target, target)
        by_element = analysis.trends[target]["by_element"]
        for t, group in by_element.groupby("temperature"):
            paths.append(
                plot_periodic_table(
                    dict(zip(group["element"], group["mean"], strict=True)),
                    directory / f"{target}_periodic_table_{_name(t)}.png",
                    counts=dict(zip(group["element"], group["count"], strict=True)),
                    label=f"mean {label} of the compounds containing the element",
                    title=f"{label} by element at {t:g} K",
                )
            )
        completed = table[table["status"] == "completed"]
        if not completed[target].astype(float).notna().any():
            continue  # nothing to show (and no model)
        for column, name, what in (
            ("prototype", "by_prototype", "prototype (anonymized formula, space group)"),
            ("spacegroup_symbol", "by_spacegroup", "space group"),
        ):
            paths.append(
                plot_groups(
                    completed,
                    column,
                    target,
                    directory / f"{target}_{name}.png",
                    top=top,
                    label=label,
                    title=f"{label} by {what}",
                )
            )
        model = analysis.models.get(target)
        if model is not None:
            paths.append(
                plot_parity(
                    model.predictions["computed"],
                    model.predictions["predicted"],
                    directory / f"{target}_parity.png",
                    scores={
                        "R² (CV)": model.r2_cv,
                        "R² baseline": model.baseline_r2,
                        "MAE": model.mae_cv,
                        "MAE baseline": model.baseline_mae,
                    },
                    label=label,
                    title=f"{model.estimator.replace('_', ' ')}, {model.n_splits}-fold CV",
                )
            )
            paths.append(
                plot_importance(
                    list(model.importances["name"]),
                    model.importances["importance"],
                    directory / f"{target}_importance.png",
                    errors=model.importances["std"],
                    top=top,
                    label=f"increase of the held-out MAE of {label} when shuffled",
                    title=f"what drives {label}",
                )
            )
    if {"sigma_a", "mean_relative_shift"} <= set(table.columns) and _any_finite(table):
        paths.append(
            plot_measures(
                table,
                "sigma_a",
                "mean_relative_shift",
                directory / "sigma_a_vs_mean_relative_shift.png",
                labels=(LABELS["sigma_a"], LABELS["mean_relative_shift"]),
                title="anharmonicity score and frequency renormalisation",
            )
        )
    return paths


def _any_finite(table: Any) -> bool:
    return any(
        math.isfinite(a) and math.isfinite(b)
        for a, b in zip(
            table["sigma_a"].astype(float), table["mean_relative_shift"].astype(float), strict=True
        )
    )
