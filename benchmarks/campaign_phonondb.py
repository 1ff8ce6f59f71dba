"""The phonondb campaign of issue 11: which crystals, in which order, and what is done.

The campaign is ``tdphonon run`` over ``../shared/data/phonondb/unitcells.json.xz``
(PBEsol-relaxed cells) restricted to an id list that this script writes; it runs in pieces,
in several sittings, each piece's table exported with ``tdphonon analyze --export`` into
``benchmarks/results/campaign_phonondb/`` (the per-compound summaries; the store is not
kept). ``tdphonon analyze --from benchmarks/results/campaign_phonondb/part-*.json.xz``
analyses all pieces together.

The selection (``select``), reproducible from the seed:

* every cell of at most ``--max-atoms`` atoms (the cell as phonondb gives it, its
  conventional cell) whose elements the model knows;
* all of them that contain an alkali metal (Li, Na, K, Rb, Cs; phonondb has no elemental
  alkali metal) and all perovskite-derived ones (ABX3 with corner-sharing BX6 octahedra, by
  :mod:`tdphonon.analysis`' CrystalNN features), the two families the study found to
  renormalise most;
* then a seeded random sample of the other cells until ``--total`` compounds.

The order of the runs is a seeded shuffle of the selection, so any finished prefix is a
random sample of it (an interrupted campaign is still representative).

Usage::

    python benchmarks/campaign_phonondb.py select [--total 500] [--max-atoms 10] [--seed 0]
    python benchmarks/campaign_phonondb.py next N     # the next N ids not yet exported
    tdphonon run ../shared/data/phonondb/unitcells.json.xz --ids-file next.txt -T 300 \\
        --tolerance 0.2 --min-length 8 --max-evaluations 1000 --workers 2 \\
        --store campaign-store --no-plots --json run.json
    tdphonon analyze --store campaign-store --export \\
        benchmarks/results/campaign_phonondb/part-<K>.json.xz
    python benchmarks/campaign_phonondb.py status     # done / failed / remaining
    python benchmarks/campaign_phonondb.py report     # analysis of every piece, families
    python benchmarks/campaign_phonondb.py compare --before OLD --after NEW [--json F]
"""

from __future__ import annotations

import argparse
import json
import lzma
import random
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "campaign_phonondb"
UNITCELLS = HERE.parent.parent / "shared" / "data" / "phonondb" / "unitcells.json.xz"
SELECTION = RESULTS / "selection.json"
ALKALI = ("Li", "Na", "K", "Rb", "Cs")


def _records(path: Path) -> list[dict[str, Any]]:
    with lzma.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def _supported_elements(model: str | None) -> set[str] | None:
    """Elements of the model's training set (None: every element, e.g. EMT is not asked)."""
    from tdphonon.potentials import get_calculator

    return set(get_calculator(model).supported_elements or ()) or None


def _perovskite_derived(record: dict[str, Any]) -> bool:
    from pymatgen.core import Composition
    from pymatgen.io.vasp import Poscar

    from tdphonon.analysis import structure_features

    if Composition(record["formula"]).anonymized_formula != "ABC3":
        return False
    structure = Poscar.from_str(record["poscar"]).structure
    features = structure_features({record["mpid"]: structure})
    return bool(features.loc[record["mpid"], "perovskite_derived"])


def select(total: int, max_atoms: int, seed: int, model: str | None) -> dict[str, Any]:
    """The campaign's ids: families first, then a seeded sample; in a seeded run order."""
    from pymatgen.core import Composition

    records = [r for r in _records(UNITCELLS) if r["nat_unit"] <= max_atoms]
    known = _supported_elements(model)
    elements = {r["mpid"]: set(Composition(r["formula"]).as_dict()) for r in records}
    unsupported = [r["mpid"] for r in records if known and not elements[r["mpid"]] <= known]
    records = [r for r in records if r["mpid"] not in set(unsupported)]
    why: dict[str, list[str]] = {}
    for record in records:
        reasons = []
        if elements[record["mpid"]] & set(ALKALI):
            reasons.append("alkali")
        if _perovskite_derived(record):
            reasons.append("perovskite-derived")
        if reasons:
            why[record["mpid"]] = reasons
    others = [r["mpid"] for r in records if r["mpid"] not in why]
    random.Random(seed).shuffle(others)
    for mpid in others[: max(0, total - len(why))]:
        why[mpid] = ["sample"]
    order = sorted(why, key=lambda m: int(m.split("-")[1]))
    random.Random(seed + 1).shuffle(order)
    by_id = {r["mpid"]: r for r in records}
    return {
        "source": "../shared/data/phonondb/unitcells.json.xz",
        "max_atoms": max_atoms,
        "total": total,
        "seed": seed,
        "n_cells_up_to_max_atoms": len(records) + len(unsupported),
        "unsupported_elements": unsupported,
        "counts": {
            "alkali": sum("alkali" in w for w in why.values()),
            "perovskite-derived": sum("perovskite-derived" in w for w in why.values()),
            "sample": sum(w == ["sample"] for w in why.values()),
            "total": len(why),
        },
        "order": [
            {"id": m, "formula": by_id[m]["formula"], "spg": by_id[m]["spg"], "why": why[m]}
            for m in order
        ],
    }


def exported_status() -> dict[str, str]:
    """phonondb id -> best status over the exported pieces (completed over failed)."""
    from tdphonon.analysis import read_campaign

    parts = sorted(RESULTS.glob("part-*.json*"))
    if not parts:
        return {}
    table, _ = read_campaign(parts)
    status: dict[str, str] = {}
    for material, value in zip(table["material"], table["status"], strict=True):
        if status.get(material) != "completed":
            status[material] = value
    return status


def report(figures: Path) -> dict[str, Any]:
    """``tdphonon analyze`` of every exported piece, plus the two families of the study
    (alkali-containing and perovskite-derived against the rest): their mean measures with
    standard errors, and the comparison with the screening protocol's reference runs."""
    import numpy as np

    from tdphonon.analysis import analyze_table, read_campaign
    from tdphonon.cli.analyze import write_plots

    selection = json.loads(SELECTION.read_text())
    why = {e["id"]: e["why"] for e in selection["order"]}
    parts = sorted(RESULTS.glob("part-*.json*"))
    # one row per crystal: a crystal run with two settings (a rerun with another evaluation
    # cap) keeps its best row, completed first
    table, structures = read_campaign(parts)
    rank = {"completed": 0, "not converged": 1, "failed": 2}
    table = (
        table.assign(_rank=[rank.get(s, 3) for s in table["status"]])
        .sort_values(["material", "_rank"])
        .drop_duplicates("material")
        .drop(columns="_rank")
        .sort_values(["formula", "id"])  # the order of campaign_table (it seeds the CV folds)
        .reset_index(drop=True)
    )
    analysis = analyze_table(table, structures, temperature=300.0, where="campaign pieces")
    table = analysis.table
    statuses = table.drop_duplicates("material")["status"].value_counts().to_dict()
    families: dict[str, Any] = {}
    for kinds, suffix in ((["completed"], ""), (["completed", "not converged"], " +nc")):
        rows = table[table["status"].isin(kinds)]
        alkali = np.array([("alkali" in why.get(m, [])) for m in rows["material"]], dtype=bool)
        perovskite = np.array(
            [("perovskite-derived" in why.get(m, [])) for m in rows["material"]], dtype=bool
        )
        for name, mask in (
            ("alkali", alkali),
            ("perovskite-derived", perovskite),
            ("neither", ~alkali & ~perovskite),
            ("all", np.ones(len(rows), dtype=bool)),
        ):
            group = rows[mask]
            families[name + suffix] = {"n": len(group)}
            for target in ("sigma_a", "mean_relative_shift"):
                values = group[target].astype(float)
                families[name + suffix] |= {
                    f"{target}_mean": float(values.mean()),
                    f"{target}_sem": float(values.std() / np.sqrt(max(len(values), 1))),
                    f"{target}_median": float(values.median()),
                }
    figures.mkdir(parents=True, exist_ok=True)
    write_plots(analysis, figures, top=15)
    summary = analysis.summary()
    summary["families"] = families
    summary["crystal_status_counts"] = {str(k): int(v) for k, v in statuses.items()}
    summary["not_converged"] = [
        {
            k: row[k]
            for k in ("material", "formula", "n_force_evaluations", "n_iterations", "sigma_a")
        }
        for _, row in table[table["status"] == "not converged"].iterrows()
    ]
    summary["parts"] = [p.name for p in parts]
    (RESULTS / "analysis.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def compare(before: list[Path], after: list[Path]) -> dict[str, Any]:
    """The same crystals run twice (same protocol and seed, e.g. before and after a change of
    the sampling): force evaluations, status, and whether every labelled-point frequency and
    sigma^A agree within three combined standard errors (converged rows only)."""
    import numpy as np

    from tdphonon.analysis import read_campaign

    old = read_campaign(before)[0].drop_duplicates("id", keep="last").set_index("id")
    new = read_campaign(after)[0].drop_duplicates("id", keep="last").set_index("id")
    rows = []
    for key in sorted(set(old.index) & set(new.index), key=lambda k: new.loc[k, "formula"]):
        a, b = old.loc[key], new.loc[key]
        row = {
            "material": b["material"],
            "formula": b["formula"],
            "status": [a["status"], b["status"]],
            "n_force_evaluations": [int(a["n_force_evaluations"]), int(b["n_force_evaluations"])],
            "sigma_a": [float(a["sigma_a"]), float(b["sigma_a"])],
        }
        if a["status"] == b["status"] == "completed":
            fa, fb = json.loads(a["frequencies"]), json.loads(b["frequencies"])
            ea, eb = json.loads(a["frequency_errors"]), json.loads(b["frequency_errors"])
            z = np.concatenate(
                [
                    np.abs(np.subtract(fa[q], fb[q])) / np.maximum(np.hypot(ea[q], eb[q]), 1e-6)
                    for q in fa
                ]
            )
            row["max_frequency_z"] = float(z.max())
            row["modes_within_3_sigma"] = float(np.mean(z <= 3.0))
            row["sigma_a_z"] = float(
                abs(a["sigma_a"] - b["sigma_a"]) / np.hypot(a["sigma_a_error"], b["sigma_a_error"])
            )
        rows.append(row)
    evaluations = np.array([r["n_force_evaluations"] for r in rows], dtype=float)
    both = [r for r in rows if "max_frequency_z" in r]
    summary = {
        "n_crystals": len(rows),
        "completed": [
            sum(r["status"][0] == "completed" for r in rows),
            sum(r["status"][1] == "completed" for r in rows),
        ],
        "force_evaluations": evaluations.sum(axis=0).tolist() if len(rows) else [0, 0],
        "evaluation_ratio": float(evaluations[:, 0].sum() / evaluations[:, 1].sum())
        if len(rows)
        else float("nan"),
        "completed_in_both": len(both),
        "modes_within_3_sigma": float(np.mean([r["modes_within_3_sigma"] for r in both]))
        if both
        else float("nan"),
        "sigma_a_within_3_sigma": sum(r["sigma_a_z"] <= 3 for r in both),
        "crystals": rows,
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    """``select``, ``next N``, ``status``, ``report``, ``compare``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    choose = sub.add_parser("select", help="write selection.json")
    choose.add_argument("--total", type=int, default=500)
    choose.add_argument("--max-atoms", type=int, default=10)
    choose.add_argument("--seed", type=int, default=0)
    choose.add_argument("--model", help="whose elements count as known (default: tdphonon's)")
    after = sub.add_parser("next", help="write the next N ids not yet exported to a file")
    after.add_argument("n", type=int)
    after.add_argument("--output", type=Path, default=Path("next.txt"))
    after.add_argument("--retry-failed", action="store_true")
    sub.add_parser("status", help="done, failed and remaining compounds")
    analysis = sub.add_parser("report", help="analysis.json and figures of every piece")
    analysis.add_argument(
        "--figures", type=Path, default=HERE.parent / "docs" / "figures" / "campaign-phonondb"
    )
    twice = sub.add_parser("compare", help="the same crystals in two sets of pieces")
    twice.add_argument("--before", type=Path, nargs="+", required=True)
    twice.add_argument("--after", type=Path, nargs="+", required=True)
    twice.add_argument("--json", type=Path, help="write the comparison here")
    args = parser.parse_args(argv)
    if args.command == "compare":
        result = compare(args.before, args.after)
        for row in result["crystals"]:
            print(
                f"{row['formula']:>12} {row['material']:>10} {row['status'][0]:>13} -> "
                f"{row['status'][1]:<13} evaluations {row['n_force_evaluations'][0]:>5} -> "
                f"{row['n_force_evaluations'][1]:<5}"
                + (
                    f" modes within 3 sigma {row['modes_within_3_sigma']:.0%}, "
                    f"sigma_a z {row['sigma_a_z']:.1f}"
                    if "max_frequency_z" in row
                    else ""
                )
            )
        print({k: v for k, v in result.items() if k != "crystals"})
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return 0
    if args.command == "report":
        summary = report(args.figures)
        print(json.dumps({"families": summary["families"], "model": summary["model"]}, indent=1))
        print("top features:", [f["name"] for f in summary["features"][:10]])
        return 0

    if args.command == "select":
        selection = select(args.total, args.max_atoms, args.seed, args.model)
        RESULTS.mkdir(parents=True, exist_ok=True)
        SELECTION.write_text(json.dumps(selection, indent=1))
        print(json.dumps(selection["counts"]), f"-> {SELECTION}")
        return 0
    selection = json.loads(SELECTION.read_text())
    status = exported_status()
    finished = {"completed", "not converged"}
    if not getattr(args, "retry_failed", False):
        finished.add("failed")
    remaining = [e["id"] for e in selection["order"] if status.get(e["id"]) not in finished]
    if args.command == "next":
        args.output.write_text("\n".join(remaining[: args.n]) + "\n")
        print(f"{min(args.n, len(remaining))} of {len(remaining)} remaining -> {args.output}")
        return 0
    counts: dict[str, int] = {}
    for entry in selection["order"]:
        key = status.get(entry["id"], "remaining")
        counts[key] = counts.get(key, 0) + 1
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
