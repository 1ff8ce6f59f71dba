"""Cost per compound: CPU and wall time of every stage of ``tdphonon run`` for real phonondb crystals.

For a seeded sample of phonondb unit cells (``unitcells.json.xz``) of increasing size (atoms
per standard primitive cell, 2 to 40+), each compound's :class:`~tdphonon.flows.SSCHAMaker`
flow is made and run as ``tdphonon run CELL -T 300`` runs it (the Maker's defaults: atomate2
relaxation, harmonic phonons with a 10 Å supercell, quantum SSCHA to 0.05 THz per mode,
embedded MontyDB store, one fresh store per compound), with timers on every stage:

* relaxation, harmonic job, and each SSCHA iteration, split into force evaluations (the
  model calls: batched ``ForceCalculator.compute_ragged`` and ASE ``calculate`` in the
  relaxation), the force-constant fit, the bootstrap, the rest of the SSCHA step, the final
  result (free energy, sigma^A) and documents (band structure, DOS, renormalisation);
* store reads and writes (``JobStore.query`` / ``update``, BSON/JSON encoding included),
  serialisation of job outputs (jobflow's ``jsanitize``), jobflow (resolving references,
  responses, the local manager), flow construction;
* once per process: imports (with a tiny EMT flow that imports what the jobs import lazily)
  and model load (a campaign pays them once, not per compound).

Times are exclusive: a stage nested in another (forces inside a job, a store read inside
the SSCHA job) counts for the inner one only, so the stages of a compound add up to its
total. The instrumentation wraps those functions with timers and changes nothing else.

The cost of a compound is its CPU time (``time.process_time``) with one thread
(``OMP_NUM_THREADS=1``, which this script sets when unset, and one torch thread): core-seconds,
which stay meaningful on a shared, oversubscribed machine where the wall time also counts
the waits for a core (both are recorded). The compounds per core-hour are ``3600 / mean CPU
time`` over the compounds of at most 10 atoms per primitive cell, without and with the
once-per-process cost shared over the sample; the growth of the cost with cell size is the
slope of log(CPU time) against log(atoms) (primitive and supercell).

Usage::

    nice -n 15 python benchmarks/bench_campaign_cost.py [--n 4] [--max-atoms 10]
        [--min-atoms 2] [--temperature 300] [--model PATH] [--seed 0] [--include FILE ...]
        [--max-evaluations N] [--tolerance THZ] [--gc-freeze]
        [--json benchmarks/results/bench_campaign_cost.json]

``--model`` defaults to ``$TDPHONON_MODEL``, else ``../shared/models/M3GNet-MP-2021.2.8-PES``;
the cells come from ``$TDPHONON_SHARED/data/phonondb/unitcells.json.xz`` (default
``../shared``).
"""

from __future__ import annotations

import time

_START, _START_CPU = time.perf_counter(), time.process_time()

import argparse  # noqa: E402
import json  # noqa: E402
import lzma  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from functools import wraps  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch: one core, honestly

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDPHONON_SHARED", ROOT.parent / "shared"))
DEFAULT_MODEL = SHARED / "models" / "M3GNet-MP-2021.2.8-PES"
UNITCELLS = SHARED / "data" / "phonondb" / "unitcells.json.xz"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "bench_campaign_cost.json"
#: Size classes (atoms per standard primitive cell) the sample is spread over.
SIZE_BINS = ((2, 2), (3, 5), (6, 10), (11, 20), (21, 40), (41, 10_000))
#: Cells up to this size count for the compounds per core-hour (the issue's target).
SMALL_CELL = 10

# -- stage timers -------------------------------------------------------------------------------


class StageClock:
    """Exclusive wall and CPU time per (job, stage) of wrapped functions.

    A stage entered inside another is subtracted from the outer one, so the stage times of a
    compound add up to its total. The job is the jobflow job being run (its name). CPU time
    (``time.process_time``, one thread) is what a compound costs in core-seconds on a
    shared machine, where the wall time also holds the waits for a core.
    """

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], float] = defaultdict(float)
        self.cpu: dict[tuple[str, str], float] = defaultdict(float)
        self.counts: dict[tuple[str, str], int] = defaultdict(int)
        self.job = "(flow)"
        self._stack: list[list[Any]] = []
        self._patches: list[tuple[Any, str, Any]] = []

    def reset(self) -> None:
        """Forget the times (between compounds)."""
        self.totals.clear()
        self.cpu.clear()
        self.counts.clear()
        self.job = "(flow)"

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a block as stage ``name`` of the current job (exclusive of nested stages)."""
        start, start_cpu = time.perf_counter(), time.process_time()
        self._stack.append([name, 0.0, 0.0])
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            elapsed_cpu = time.process_time() - start_cpu
            _, nested, nested_cpu = self._stack.pop()
            self.totals[(self.job, name)] += elapsed - nested
            self.cpu[(self.job, name)] += elapsed_cpu - nested_cpu
            if self._stack:
                self._stack[-1][1] += elapsed
                self._stack[-1][2] += elapsed_cpu

    def inside(self, name: str) -> bool:
        """Whether stage ``name`` is open."""
        return any(entry[0] == name for entry in self._stack)

    def count(self, name: str, n: int = 1) -> None:
        """Count ``n`` events ``name`` (e.g. force evaluations) for the current job."""
        self.counts[(self.job, name)] += n

    # -- patching ----------------------------------------------------------------------------

    def _replace(self, owner: Any, attr: str, make: Callable[[Callable], Callable]) -> None:
        raw = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr)
        if raw is None:
            return  # not in this version of the code: nothing to time
        if isinstance(raw, classmethod):
            new: Any = classmethod(make(raw.__func__))
        elif isinstance(raw, staticmethod):
            new = staticmethod(make(raw.__func__))
        else:
            new = make(raw)
        self._patches.append((owner, attr, raw))
        setattr(owner, attr, new)

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        """Time ``owner.attr`` as stage ``name``."""

        def make(func: Callable) -> Callable:
            @wraps(func)
            def timed(*args: Any, **kwargs: Any) -> Any:
                with self.stage(name):
                    return func(*args, **kwargs)

            return timed

        self._replace(owner, attr, make)

    def wrap_generator(self, owner: Any, attr: str, name: str) -> None:
        """Time ``owner.attr`` and every step of the iterator it returns as ``name``."""

        def make(func: Callable) -> Callable:
            @wraps(func)
            def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
                with self.stage(name):
                    iterator = iter(func(*args, **kwargs))
                while True:
                    with self.stage(name):
                        try:
                            item = next(iterator)
                        except StopIteration:
                            return
                    yield item

            return timed

        self._replace(owner, attr, make)

    def wrap_job_run(self, job_class: Any) -> None:
        """Time ``Job.run`` as the job's own stage ``job``, naming the current job."""

        def make(func: Callable) -> Callable:
            @wraps(func)
            def timed(job: Any, *args: Any, **kwargs: Any) -> Any:
                outer, self.job = self.job, job.name
                try:
                    with self.stage("job"):
                        return func(job, *args, **kwargs)
                finally:
                    self.job = outer

            return timed

        self._replace(job_class, "run", make)

    def wrap_forces(self, owner: Any, attr: str, counter: str, n_of: Callable) -> None:
        """Time model calls as ``forces``; count the structures evaluated as ``counter``."""

        def make(func: Callable) -> Callable:
            @wraps(func)
            def timed(*args: Any, **kwargs: Any) -> Any:
                if not self.inside("forces"):
                    self.count(counter, n_of(*args, **kwargs))
                with self.stage("forces"):
                    return func(*args, **kwargs)

            return timed

        self._replace(owner, attr, make)

    def install(self) -> None:
        """Wrap the stages of a tdphonon flow (jobflow, stores, model, SSCHA core, jobs)."""
        import jobflow.core.job as jobflow_job
        import jobflow.core.store as jobflow_store

        import tdphonon.jobs.sscha as sscha_jobs
        import tdphonon.sscha as sscha_core
        from tdphonon.flows.sscha import SSCHAMaker
        from tdphonon.potentials.base import ForceCalculator

        self.wrap_job_run(jobflow_job.Job)
        self.wrap(jobflow_job.Job, "resolve_args", "jobflow")
        self.wrap(jobflow_job.Response, "from_job_returns", "jobflow")
        self.wrap(jobflow_job, "prepare_replace", "jobflow")
        self.wrap(jobflow_job, "jsanitize", "serialise")
        self.wrap_generator(jobflow_store.JobStore, "query", "store_read")
        self.wrap(jobflow_store.JobStore, "update", "store_write")
        self.wrap(SSCHAMaker, "make", "make_flow")
        self.wrap_forces(
            ForceCalculator, "compute_ragged", "evaluations", lambda _, s, *a, **k: len(s)
        )
        try:
            from matgl.ext.ase import PESCalculator

            self.wrap_forces(PESCalculator, "calculate", "ase_calls", lambda *a, **k: 1)
        except ImportError:
            pass
        from ase.calculators.emt import EMT

        self.wrap_forces(EMT, "calculate", "ase_calls", lambda *a, **k: 1)
        self.wrap(sscha_core.SSCHA, "step", "sscha_other")
        self.wrap(sscha_core.SSCHA, "_fit", "fit")
        self.wrap(sscha_core.SSCHA, "_fits", "fit")
        self.wrap(sscha_core.SSCHA, "_bootstrap_errors", "bootstrap")
        self.wrap(sscha_core.SSCHA, "result", "result")
        self.wrap(sscha_jobs, "_temperature_doc", "final_doc")

    def uninstall(self) -> None:
        """Put every wrapped function back."""
        for owner, attr, raw in reversed(self._patches):
            setattr(owner, attr, raw)
        self._patches.clear()


# -- the sample ---------------------------------------------------------------------------------


def sample_cells(
    n: int, min_atoms: int, max_atoms: int, seed: int, supported: frozenset[str] | None
) -> list[dict[str, Any]]:
    """A seeded sample of phonondb cells spread over :data:`SIZE_BINS` (primitive atoms).

    The bins within ``[min_atoms, max_atoms]`` are filled in turn (smallest first) with
    cells drawn in a seeded random order; elements the model does not know are skipped.
    """
    import numpy as np
    from pymatgen.core import Structure

    from tdphonon.structures import standard_primitive

    if not UNITCELLS.is_file():
        raise SystemExit(f"phonondb unit cells not found: {UNITCELLS} (set TDPHONON_SHARED)")
    with lzma.open(UNITCELLS, "rt") as handle:
        entries = json.load(handle)
    bins = [(lo, hi) for lo, hi in SIZE_BINS if hi >= min_atoms and lo <= max_atoms]
    if not bins:
        raise SystemExit(f"--min-atoms {min_atoms} / --max-atoms {max_atoms}: no size class")
    wanted = [n // len(bins) + (i < n % len(bins)) for i in range(len(bins))]
    chosen: list[list[dict[str, Any]]] = [[] for _ in bins]
    order = np.random.default_rng(seed).permutation(len(entries))
    for index in order:
        if all(len(c) >= w for c, w in zip(chosen, wanted, strict=True)):
            break
        entry = entries[index]
        # the conventional cell bounds the primitive one: skip what cannot fit cheaply
        if entry["nat_unit"] < min_atoms:
            continue
        structure = Structure.from_str(entry["poscar"], fmt="poscar")
        if supported is not None and not set(structure.symbol_set) <= supported:
            continue
        try:
            primitive = standard_primitive(structure)
        except Exception:  # a cell pymatgen cannot analyse is not sampled
            continue
        size = len(primitive)
        for slot, (lo, hi) in enumerate(bins):
            if lo <= size <= hi and min_atoms <= size <= max_atoms:
                if len(chosen[slot]) < wanted[slot]:
                    chosen[slot].append(
                        {
                            "name": f"{entry['formula']}-{entry['mpid']}",
                            "mpid": entry["mpid"],
                            "formula": entry["formula"],
                            "spg": entry["spg"],
                            "structure": structure,
                        }
                    )
                break
    return [cell for group in chosen for cell in group]


# -- one compound -------------------------------------------------------------------------------


def _iteration_number(job: str) -> int | None:
    words = job.split()
    return int(words[-1]) if len(words) >= 2 and words[-2] == "iteration" else None


def _job_kind(job: str) -> str:
    if job == "(flow)":
        return "flow"
    if job.startswith("relax"):
        return "relax"
    if job.startswith("harmonic"):
        return "harmonic"
    if _iteration_number(job) is not None:
        return "sscha"
    return "other"


def _max_error(result: dict[str, Any]) -> float | None:
    """Largest stated error of a reported frequency (commensurate and labelled), THz."""
    import numpy as np

    errors = [np.ravel(result.get("commensurate_frequency_errors", []))]
    errors += [np.ravel(e) for e in (result.get("labelled_frequency_errors") or {}).values()]
    values = np.concatenate(errors) if errors else np.zeros(0)
    return float(values.max()) if values.size else None


def run_compound(
    cell: dict[str, Any],
    model: str,
    temperature: float,
    clock: StageClock,
    workdir: Path,
    sscha_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make and run one compound's flow with the stage timers; one row of the results."""
    from tdphonon.flows.sscha import SSCHAMaker
    from tdphonon.stores import embedded_store, run_flow
    from tdphonon.structures import standard_primitive

    structure = cell["structure"]
    primitive = standard_primitive(structure)
    store = embedded_store(workdir / cell["name"])
    clock.reset()
    error = None
    harmonic: dict[str, Any] | None = None
    results: list[dict[str, Any]] = []
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        with clock.stage("jobflow"):
            maker = SSCHAMaker(model=model, sscha_settings=sscha_settings or {})
            flow = maker.make(structure, temperatures=[temperature])
            harmonic, results = run_flow(flow, store, ensure_success=False)
    except Exception as exc:  # a failed compound is a row, not the end
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu

    def breakdown(totals: dict[tuple[str, str], float]) -> dict[str, Any]:
        stages: dict[str, float] = defaultdict(float)  # whole compound, per stage
        by_kind: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        iterations: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for (job, stage), seconds in totals.items():
            stages[stage] += seconds
            by_kind[_job_kind(job)][stage] += seconds
            number = _iteration_number(job)
            if number is not None:
                iterations[number][stage] += seconds
        return {
            "stages": dict(stages),
            "by_job_kind": {kind: dict(values) for kind, values in by_kind.items()},
            "iterations": [dict(iterations[k], iteration=k) for k in sorted(iterations)],
        }

    counts: dict[str, int] = defaultdict(int)
    for (job, name), value in clock.counts.items():
        counts[f"{_job_kind(job)}_{name}"] += value
    cpu_stages, wall_stages = breakdown(clock.cpu), breakdown(clock.totals)
    forces = cpu_stages["stages"].get("forces", 0.0)
    result = results[0] if results else {}
    supercell = None
    if harmonic is not None and harmonic.get("supercell_matrix") is not None:
        import numpy as np

        supercell = round(abs(np.linalg.det(harmonic["supercell_matrix"]))) * len(primitive)
    return {
        "name": cell["name"],
        "formula": cell.get("formula", primitive.composition.reduced_formula),
        "spg": cell.get("spg"),
        "n_atoms": len(primitive),
        "n_supercell_atoms": supercell,
        "cpu_s": cpu,
        "wall_s": wall,
        "forces_cpu_s": forces,
        "force_fraction": forces / cpu if cpu > 0 else None,
        "non_force_cpu_s": cpu - forces,
        "cpu": cpu_stages,
        "wall": wall_stages,
        "counts": dict(counts),
        "n_force_evaluations": int(counts.get("harmonic_evaluations", 0))
        + int(counts.get("sscha_evaluations", 0)),
        "relax_calls": int(counts.get("relax_ase_calls", 0)),
        "converged": result.get("converged"),
        "n_iterations": result.get("n_iterations"),
        "max_frequency_error": _max_error(result),
        "message": result.get("message"),
        "error": error,
    }


# -- report -------------------------------------------------------------------------------------

STAGE_ORDER = (
    "forces",
    "fit",
    "bootstrap",
    "sscha_other",
    "result",
    "final_doc",
    "job",
    "store_read",
    "store_write",
    "serialise",
    "jobflow",
    "make_flow",
)


def print_row(row: dict[str, Any]) -> None:
    """One compound: totals, then the CPU seconds of each stage per kind of job."""
    status = "ok" if row["error"] is None else f"FAILED {row['error']}"
    print(
        f"\n{row['name']} ({row['spg']}): {row['n_atoms']} atoms/cell, "
        f"{row['n_supercell_atoms']} in the supercell; CPU {row['cpu_s']:.1f} s (wall "
        f"{row['wall_s']:.1f} s), forces {row['forces_cpu_s']:.1f} s "
        f"({100 * (row['force_fraction'] or 0):.0f} %), {row['n_force_evaluations']} "
        f"evaluations + {row['relax_calls']} relaxation steps, {row['n_iterations']} "
        f"iterations, converged {row['converged']}, largest error "
        f"{row['max_frequency_error'] or float('nan'):.3f} THz; {status}",
        flush=True,
    )
    print("  CPU seconds per stage:")
    for kind in ("relax", "harmonic", "sscha", "flow"):
        values = row["cpu"]["by_job_kind"].get(kind)
        if values:
            parts = [f"{s} {values[s]:.2f}" for s in STAGE_ORDER if values.get(s, 0) >= 0.005]
            print(f"  {kind:9s} {sum(values.values()):7.2f} s: " + ", ".join(parts))
    for it in row["cpu"]["iterations"]:
        parts = [f"{s} {it[s]:.2f}" for s in STAGE_ORDER if it.get(s, 0) >= 0.005]
        total = sum(v for k, v in it.items() if k != "iteration")
        print(f"    iteration {it['iteration']:2d} {total:6.2f} s: " + ", ".join(parts))


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) against log(x), None with fewer than two sizes."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x and y]
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def summarise(rows: list[dict[str, Any]], once_cpu_s: float) -> dict[str, Any]:
    """Compounds per core-hour (cells of at most :data:`SMALL_CELL` atoms) and scaling.

    Cost = CPU seconds of one thread (core-seconds); ``once_cpu_s`` (imports, model load)
    is shared over the compounds for the "with start-up" figure.
    """
    done = [r for r in rows if r["error"] is None]
    small = [r for r in done if r["n_atoms"] <= SMALL_CELL]
    summary: dict[str, Any] = {"n_compounds": len(rows), "n_failed": len(rows) - len(done)}
    if small:
        mean_cpu = sum(r["cpu_s"] for r in small) / len(small)
        mean_forces = sum(r["forces_cpu_s"] for r in small) / len(small)
        summary |= {
            "small_cell_max_atoms": SMALL_CELL,
            "n_small": len(small),
            "mean_cpu_s_small": mean_cpu,
            "mean_wall_s_small": sum(r["wall_s"] for r in small) / len(small),
            "mean_forces_cpu_s_small": mean_forces,
            "force_fraction_small": mean_forces / mean_cpu,
            "compounds_per_core_hour_small": 3600 / mean_cpu,
            "compounds_per_core_hour_small_with_startup": 3600
            / (mean_cpu + once_cpu_s / max(len(rows), 1)),
        }
    if done:
        atoms = [r["n_atoms"] for r in done]
        supercells = [r["n_supercell_atoms"] or 0 for r in done]
        summary |= {
            "cpu_vs_atoms_exponent": slope(atoms, [r["cpu_s"] for r in done]),
            "cpu_vs_supercell_atoms_exponent": slope(supercells, [r["cpu_s"] for r in done]),
            "forces_vs_supercell_atoms_exponent": slope(
                supercells, [r["forces_cpu_s"] for r in done]
            ),
            "non_force_vs_supercell_atoms_exponent": slope(
                supercells, [r["non_force_cpu_s"] for r in done]
            ),
        }
    return summary


def warm_up() -> None:
    """Run a tiny EMT flow once, so that the modules the jobs import lazily (atomate2's
    relaxation, ASE optimisers, pymatgen's k-path and its sympy...) count as start-up, once
    per process, and not as part of the first compound."""
    from pymatgen.core import Lattice, Structure

    from tdphonon.flows.sscha import SSCHAMaker
    from tdphonon.stores import embedded_store, run_flow

    al = Structure(
        Lattice.cubic(4.05), ["Al"] * 4, [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    )
    maker = SSCHAMaker(
        model="emt",
        min_length=5.0,
        sscha_settings={"frequency_tolerance": 1.0, "max_iterations": 1},
    )
    with tempfile.TemporaryDirectory(prefix="tdphonon-warm-up-") as workdir:
        run_flow(maker.make(al), embedded_store(workdir), ensure_success=False)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print rows and the summary, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4, help="compounds from phonondb (default 4)")
    parser.add_argument("--min-atoms", type=int, default=2, help="smallest primitive cell")
    parser.add_argument("--max-atoms", type=int, default=10, help="largest primitive cell")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    parser.add_argument("--model", default=None, help="model folder (default $TDPHONON_MODEL)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument(
        "--include", nargs="*", default=[], metavar="FILE", help="further structure files"
    )
    parser.add_argument(
        "--max-evaluations",
        type=int,
        default=None,
        help="cap on the SSCHA force evaluations per compound (SSCHASettings; default: "
        "tdphonon's, 20000): bounds the cost of a compound that does not converge, which is "
        "then reported as such",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="SSCHA frequency tolerance, THz (default: tdphonon's, 0.05)",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after start-up: the cyclic garbage collector then no longer scans "
        "the ~10^6 objects of torch, matgl and pymatgen at every collection (an experiment: "
        "tdphonon itself does not do it)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="output JSON")
    args = parser.parse_args(argv)
    if args.n < 0 or args.min_atoms < 1 or args.max_atoms < args.min_atoms:
        parser.error("--n must be >= 0 and 1 <= --min-atoms <= --max-atoms")
    if args.max_evaluations is not None and args.max_evaluations < 1:
        parser.error("--max-evaluations must be >= 1")
    if not args.temperature > 0:
        parser.error("--temperature must be > 0 K")
    model = args.model or os.environ.get("TDPHONON_MODEL") or str(DEFAULT_MODEL)

    clock = StageClock()
    import jobflow  # noqa: F401
    import torch

    torch.set_num_threads(1)
    from tdphonon.flows.sscha import SSCHAMaker  # noqa: F401
    from tdphonon.potentials import PotentialSpec
    from tdphonon.stores import run_flow  # noqa: F401
    from tdphonon.structures import read_structure

    warm_up()
    imports_s, imports_cpu_s = time.perf_counter() - _START, time.process_time() - _START_CPU
    start, start_cpu = time.perf_counter(), time.process_time()
    calculator = PotentialSpec(model).resolve().calculator()
    model_load_s, model_load_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    if args.gc_freeze:
        import gc

        gc.collect()
        gc.freeze()
    print(
        f"imports {imports_cpu_s:.1f} s CPU ({imports_s:.1f} s wall), model load "
        f"{model_load_cpu_s:.1f} s CPU ({model_load_s:.1f} s wall), {calculator.name}"
    )

    cells = [
        {"name": Path(path).stem, "spg": None, "structure": read_structure(path)}
        for path in args.include
    ]
    start = time.perf_counter()
    cells += sample_cells(
        args.n, args.min_atoms, args.max_atoms, args.seed, calculator.supported_elements
    )
    print(f"sample of {len(cells)} cells in {time.perf_counter() - start:.1f} s")
    sscha_settings = {}
    if args.max_evaluations is not None:
        sscha_settings["max_force_evaluations"] = args.max_evaluations
    if args.tolerance is not None:
        sscha_settings["frequency_tolerance"] = args.tolerance
    settings = {
        "n": args.n,
        "min_atoms": args.min_atoms,
        "max_atoms": args.max_atoms,
        "temperature": args.temperature,
        "model": model,
        "seed": args.seed,
        "include": args.include,
        "sscha_settings": sscha_settings,
        "gc_freeze": args.gc_freeze,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": platform.platform(),
        "python": sys.version.split()[0],
    }
    once = {
        "imports_cpu_s": imports_cpu_s,
        "imports_wall_s": imports_s,
        "model_load_cpu_s": model_load_cpu_s,
        "model_load_wall_s": model_load_s,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)

    def write(rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The JSON so far (after every compound: a long run keeps what it measured)."""
        summary = summarise(rows, imports_cpu_s + model_load_cpu_s) | once
        payload = {"settings": settings, "summary": summary, "compounds": rows}
        args.json.write_text(json.dumps(payload, indent=1, default=float))
        return summary

    rows: list[dict[str, Any]] = []
    clock.install()
    try:
        with tempfile.TemporaryDirectory(prefix="tdphonon-cost-") as workdir:
            for cell in cells:
                row = run_compound(
                    cell, model, args.temperature, clock, Path(workdir), sscha_settings
                )
                print_row(row)
                rows.append(row)
                write(rows)
    finally:
        clock.uninstall()
    summary = write(rows)
    print("\ncompound                      atoms supercell   CPU s  forces  evals  iters conv")
    for row in rows:
        print(
            f"{row['name'][:29]:29s} {row['n_atoms']:5d} {row['n_supercell_atoms'] or 0:9d} "
            f"{row['cpu_s']:7.1f} {100 * (row['force_fraction'] or 0):5.0f} % "
            f"{row['n_force_evaluations']:6d} {row['n_iterations'] or 0:6d} {row['converged']}"
        )
    print("\nsummary:")
    for key, value in summary.items():
        print(f"  {key}: {value:.3g}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
