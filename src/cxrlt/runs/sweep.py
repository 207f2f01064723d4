"""Sweeps: variants of one base configuration over seeds, each an ordinary run, then one summary.

A variant is a name and a list of `key=value` overrides of the base
configuration: every combination of `--grid KEY=V1,V2` values, or a named
`--variant NAME:KEY=V,KEY=V`. Run (variant, seed) applies the variant's
overrides, `train.seed=SEED` and `name=BASE-VARIANT-seedSEED` to the base;
everything else, `data.split.seed` included, stays as the base has it, so
every run of a sweep is evaluated on the same images and the variants can
be compared image by image (paired).

A run is exactly the plain command `cxrlt sweep --print-commands` prints:
`cxrlt train DIR/base.yaml OVERRIDES --out DIR/runs/VARIANT/seedN`, or
`cxrlt train --resume DIR/runs/VARIANT/seedN` once the run has started. The
sweep runs it in a process of its own, which keeps a failing run from
taking the others down, pins it to its share of the machine (with `--jobs
N`: GPU number k mod the visible GPUs, and the CPU threads split evenly),
and makes a sweep that is stopped and started again do what one plain run
does: finished runs (their metrics, predictions and labels saved) are
skipped, started ones resume from their last finished epoch.

Scored out of fold (`--folds K`): each run is a k-fold run instead
(`cxrlt kfold DIR/base.yaml OVERRIDES --folds K --out ...`, the base's
images cut into K patient-grouped folds, `cxrlt.runs.kfold`), and its
results are its out-of-fold predictions: every non-test image scored by
the model that did not train on its patient. Seeds and variants of such a
sweep share the folds (`data.split.seed`), so they stay paired image by
image.

Shared first stages: a run whose first stage would train exactly as an
earlier run of the same seed (same configuration apart from its name, its
later stages and its evaluation settings), such as `bce` and `bce` followed
by classifier re-training, gets a copy of that finished stage (of every
fold, out of fold) and trains only its own later stages. It waits for that
run when both are pending.

The sweep folder (`cxrlt.layout.SweepFiles`) is claimed as a cxrlt folder
of kind "sweep" and locked while a sweep command works on it. `sweep.json`
holds the variants, seeds and baseline, and the time, attempts and last
error of every run this sweep ran; later calls may add variants and seeds
but not change one, nor the folds. The summary is `cxrlt.evaluation.sweep`'s.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import yaml

from cxrlt.config import RunConfig, apply_overrides, load_yaml, parse_config
from cxrlt.errors import ConfigError, CxrltError, InputError, Interrupted, clip, echo
from cxrlt.io import read_json, write_json, write_text
from cxrlt.layout import KFoldFiles, RunFiles, StageFiles
from cxrlt.ownership import check_name, is_locked
from cxrlt.runs.folder import KFoldFolder, RunFolder, SweepFolder

if TYPE_CHECKING:
    from cxrlt.evaluation.sweep import RunOutcome

SEED_KEY = "train.seed"
POLL_SECONDS = 0.5
# Exit code of a `cxrlt` command stopped by Ctrl-C (`cxrlt.errors.Interrupted`).
INTERRUPTED = 130


# ------------------------------------------------------------------ variants
@dataclass(frozen=True)
class Variant:
    """A name and the overrides it applies to the base configuration."""

    name: str
    overrides: tuple[str, ...]


def split_values(text: str) -> list[str]:
    """Split at the commas outside brackets, braces and quotes (`a,[1,2],'x,y'` has three values)."""
    parts, depth, quote, current = [], 0, "", []
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts]


def _override(text: str, where: str) -> str:
    key, equals, _ = text.partition("=")
    if not equals or not key.strip():
        raise ConfigError(f"{where}: {echo(text)} is not KEY=VALUE (e.g. loss.name=focal)")
    if key.strip() == SEED_KEY:
        raise ConfigError(f"{where}: {SEED_KEY} is set per run from --seeds; give the seeds there")
    return f"{key.strip()}={text.partition('=')[2]}"


def grid_variants(grids: Sequence[str]) -> list[Variant]:
    """Every combination of the `KEY=V1,V2,...` grids, named by their values joined with '-'."""
    axes: list[list[tuple[str, str]]] = []
    for grid in grids:
        key, equals, values = grid.partition("=")
        where = f"--grid {clip(grid)}"
        if not equals or not key.strip() or not values.strip():
            raise ConfigError(f"{where}: expected KEY=V1,V2,... (e.g. loss.name=bce,focal)")
        _override(f"{key}=x", where)
        axes.append([(key.strip(), value) for value in split_values(values)])
    variants: list[Variant] = [Variant("", ())]
    for axis in axes:
        variants = [Variant(f"{v.name}-{value}" if v.name else value, v.overrides + (f"{key}={value}",))
                    for v in variants for key, value in axis]
    if not axes:
        return []
    for variant in variants:
        _check_variant_name(variant.name, "--grid values")
    return variants


def named_variant(text: str) -> Variant:
    """`NAME:KEY=V,KEY=V` (or `NAME` / `NAME:` for the base as it is)."""
    name, _, overrides = text.partition(":")
    _check_variant_name(name.strip(), f"--variant {clip(text)}")
    items = [item for item in split_values(overrides) if item] if overrides.strip() else []
    return Variant(name.strip(), tuple(_override(item, f"--variant {name.strip()}") for item in items))


def _check_variant_name(name: str, where: str) -> None:
    try:
        check_name(name, "variant name")
    except InputError as exc:
        raise ConfigError(f"{where}: {exc}; name it with --variant NAME:KEY=VALUE,...") from None


def parse_seeds(text: str) -> tuple[int, ...]:
    """`0,1,2` as (0, 1, 2): distinct integers."""
    try:
        seeds = tuple(int(part) for part in split_values(text))
    except ValueError:
        raise ConfigError(f"--seeds {echo(text)}: expected integers separated by commas, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {echo(text)}: a seed is repeated")
    return seeds


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs: its variants in order, its seeds, the variant the others are compared with, and the
    number of folds each run is scored out of (None: each run is one ordinary run)."""

    variants: tuple[Variant, ...]
    seeds: tuple[int, ...]
    baseline: str
    folds: int | None = None

    @classmethod
    def build(cls, variants: Sequence[Variant], seeds: Sequence[int], baseline: str | None,
              folds: int | None = None) -> "SweepSpec":
        names = [v.name for v in variants]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"variant name(s) {', '.join(repeated)} given more than once; every variant needs its "
                              "own name (name grid points with --variant NAME:KEY=VALUE,...)")
        if not variants:
            raise ConfigError("give the variants to run: --grid KEY=V1,V2 and/or --variant NAME:KEY=VALUE,...")
        if not seeds:
            raise ConfigError("give at least one seed (--seeds 0,1,2)")
        chosen = baseline or names[0]
        if chosen not in names:
            raise ConfigError(f"--baseline {echo(chosen)} is not one of the variants ({', '.join(names)})")
        if folds is not None and folds < 2:
            raise ConfigError(f"--folds must be at least 2 (5 is usual), got {folds}")
        return cls(tuple(variants), tuple(seeds), chosen, folds)

    def to_json(self) -> dict[str, Any]:
        return {"variants": {v.name: list(v.overrides) for v in self.variants}, "seeds": list(self.seeds),
                "baseline": self.baseline, "folds": self.folds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SweepSpec":
        variants = tuple(Variant(name, tuple(overrides)) for name, overrides in data["variants"].items())
        return cls(variants, tuple(int(s) for s in data["seeds"]), data["baseline"], data.get("folds"))

    def extend(self, other: "SweepSpec | None", folder: Path) -> "SweepSpec":
        """This (saved) sweep with `other`'s new variants and seeds added; a changed variant is refused."""
        if other is None:
            return self
        if other.folds != self.folds:
            scored = {None: "one run per variant and seed"}
            raise ConfigError(
                f"{folder} is a sweep of {scored.get(self.folds, f'{self.folds} folds')}, not "
                f"{scored.get(other.folds, f'{other.folds} folds')}; its runs cannot change how they are scored: "
                "use another --out folder")
        mine = {v.name: v for v in self.variants}
        for variant in other.variants:
            if variant.name in mine and mine[variant.name].overrides != variant.overrides:
                before, after = (' '.join(v.overrides) or '(the base)' for v in (mine[variant.name], variant))
                raise ConfigError(
                    f"{folder} already runs variant {variant.name} as {before}, not {after}; a sweep may gain "
                    "variants and seeds but not change one: give this one another name, or use another --out folder")
        variants = self.variants + tuple(v for v in other.variants if v.name not in mine)
        seeds = self.seeds + tuple(s for s in other.seeds if s not in self.seeds)
        return SweepSpec(variants, seeds, other.baseline, self.folds)


# ---------------------------------------------------------------------- runs
@dataclass
class PlannedRun:
    """One (variant, seed) of a sweep: its overrides, resolved configuration and folder (a run folder, or a
    k-fold folder when the sweep is scored out of `folds` folds)."""

    variant: str
    seed: int
    overrides: tuple[str, ...]
    config: RunConfig
    files: RunFiles | KFoldFiles
    folds: int | None = None
    donor: "PlannedRun | None" = None

    @property
    def key(self) -> str:
        return f"{self.variant}/seed{self.seed}"

    @property
    def started(self) -> bool:
        """Its configuration is saved (`config.yaml`, or a k-fold folder's `kfold.yaml`)."""
        return self.files.config.is_file()

    @property
    def finished(self) -> bool:
        """Its result metrics, predictions and labels are saved (what the summary reads)."""
        results = self.files.results
        return results.metrics.is_file() and results.predictions.is_file() and results.labels.is_file()

    def _run_folders(self) -> list[RunFiles]:
        """The run folders that train: its own, or one per fold."""
        if isinstance(self.files, KFoldFiles):
            return [self.files.fold(k) for k in range(self.folds or 0)]
        return [self.files]

    def first_stages(self) -> list[StageFiles]:
        """Its first stage's files (one per fold out of fold)."""
        name = self.config.stage_list()[0].name
        return [run.stage(0, name) for run in self._run_folders()]

    def claim(self) -> None:
        """Claim its folder (and every fold's run folder) before anything is copied in."""
        if isinstance(self.files, KFoldFiles):
            KFoldFolder(self.files.path).claim()
        for run in self._run_folders():
            RunFolder(run.path).claim()


def first_stage_key(config: RunConfig) -> str:
    """Everything that decides how the first stage trains: the configuration without name, later stages, evaluation.

    `tau_normalise` is left out too: it is tuned when a run finishes, after training.
    """
    raw = config.model_dump(mode="json")
    del raw["name"], raw["evaluation"]
    first = config.stage_list()[0].model_dump(mode="json")
    del first["tau_normalise"]
    raw["stages"] = [first]
    return json.dumps(raw, sort_keys=True)


def plan_runs(base: dict[str, Any], spec: SweepSpec, folder: SweepFolder) -> list[PlannedRun]:
    """Every run of the sweep, seed by seed (all variants of the first seed first), each configuration validated."""
    name = str(base.get("name") or "run")
    runs: list[PlannedRun] = []
    first_stages: dict[str, PlannedRun] = {}
    for seed in spec.seeds:
        for variant in spec.variants:
            overrides = variant.overrides + (f"{SEED_KEY}={seed}", f"name={name}-{variant.name}-seed{seed}")
            config = parse_config(apply_overrides(base, overrides),
                                  origin=f"variant {variant.name} (overrides {' '.join(variant.overrides) or 'none'})")
            files = folder.run(variant.name, seed) if spec.folds is None else folder.kfold(variant.name, seed)
            run = PlannedRun(variant.name, seed, overrides, config, files, spec.folds)
            run.donor = first_stages.setdefault(first_stage_key(config), run)
            if run.donor is run:
                run.donor = None
            runs.append(run)
    return runs


def train_arguments(run: PlannedRun, base: Path) -> list[str]:
    """Arguments of the `cxrlt` command that trains (or resumes) `run`: `cxrlt train`, or `cxrlt kfold` out of fold."""
    command = "train" if run.folds is None else "kfold"
    if run.started:
        return [command, "--resume", str(run.files.path), "--no-progress"]
    folds = [] if run.folds is None else ["--folds", str(run.folds)]
    return [command, str(base), *run.overrides, *folds, "--out", str(run.files.path), "--no-progress"]


# --------------------------------------------------------------------- sweep
@dataclass
class Job:
    """A run in progress in its own process."""

    run: PlannedRun
    process: subprocess.Popen
    started: float
    log_offset: int
    slot: int
    cpu_seconds: float = 0.0

    def reap(self, block: bool = False) -> bool:
        """Whether the process has ended (waiting for it with `block`); notes the CPU time it and its children used.

        The CPU time of a process reaches this one's children usage when it is
        reaped, and only this call reaps it, so the difference is its own.
        """
        before = _children_cpu()
        code = self.process.wait() if block else self.process.poll()
        if code is None:
            return False
        self.cpu_seconds = _children_cpu() - before
        return True


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Sweep:
    """A sweep folder, its base configuration and its planned runs."""

    folder: SweepFolder
    base: dict[str, Any]
    spec: SweepSpec
    runs: list[PlannedRun] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    # ---------------------------------------------------------- opening
    @classmethod
    def open(cls, out: str | Path, base: str | Path | None = None, spec: SweepSpec | None = None) -> "Sweep":
        """The sweep in `out`: a new one of `base` and `spec`, or the saved one (with `spec`'s additions).

        Every run's configuration is validated; nothing is written.
        """
        folder = SweepFolder(out)
        if folder.started:
            saved = load_yaml(folder.base)
            if base is not None and load_yaml(base) != saved:
                raise ConfigError(
                    f"{folder.path} holds a sweep of another base configuration (its {folder.BASE}) than {base}; "
                    f"continue it with `cxrlt sweep --resume {folder.path}`, or choose another --out folder")
            state = read_json(folder.state)
            merged = SweepSpec.from_json(state).extend(spec, folder.path)
            sweep = cls(folder, saved, merged, records=dict(state.get("runs", {})))
        else:
            folder.check_claimable()
            if base is None or spec is None:
                raise ConfigError(f"{folder.path} holds no sweep (no {folder.BASE}); start one with "
                                  "`cxrlt sweep BASE.yaml --variant ... --seeds ... --out DIR`")
            sweep = cls(folder, load_yaml(base), spec)
        sweep.runs = plan_runs(sweep.base, sweep.spec, folder)
        return sweep

    def save(self) -> None:
        """Claim the folder and write the spec and records (the base last when new: it marks a started sweep)."""
        self.folder.claim()
        write_json(self.folder.state, {**self.spec.to_json(), "runs": self.records})
        if not self.folder.started:
            write_text(self.folder.base, yaml.safe_dump(self.base, sort_keys=False))

    # ---------------------------------------------------------- commands
    def pending(self) -> list[PlannedRun]:
        """Runs neither finished nor being written by another process."""
        return [run for run in self.runs if not run.finished and not is_locked(run.files.path)]

    def commands(self) -> list[str]:
        """One plain `cxrlt train` (or `cxrlt kfold`) command per pending run (first stages already finished
        elsewhere are copied in)."""
        lines = []
        for run in self.pending():
            self._check_started(run)
            self._reuse_first_stage(run)
            lines.append(shlex.join(["cxrlt", *train_arguments(run, self.folder.base)]))
        return lines

    def _check_started(self, run: PlannedRun) -> None:
        """A started run must be the one this sweep would start (else its folder belongs to another experiment)."""
        if not run.started:
            return
        saved = parse_config(load_yaml(run.files.config), origin=str(run.files.config))
        if saved.model_dump(mode="json") != run.config.model_dump(mode="json"):
            raise ConfigError(
                f"{run.files.path} holds a run with other settings than variant {run.variant}, seed {run.seed} of "
                f"this sweep (its {run.files.config.name} differs); move that folder away to run it again")

    def _reuse_first_stage(self, run: PlannedRun) -> bool:
        """Copy the donor's finished first stage (of every fold) into a run that has not started; whether it was."""
        donor = run.donor
        if donor is None or run.started:
            return False
        pairs = [(source, target) for source, target in zip(donor.first_stages(), run.first_stages())
                 if not target.folder.exists()]
        if not pairs or not all(source.done.is_file() for source, _ in pairs):
            return False
        run.claim()
        for source, target in pairs:
            staging = target.folder.parent / f".{target.folder.name}.copy"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(source.folder, staging)
            os.replace(staging, target.folder)
        return True

    # ---------------------------------------------------------- running
    def train(self, jobs: int = 1, progress: bool = True, executable: Sequence[str] | None = None) -> None:
        """Train every pending run, `jobs` at a time, each in its own `cxrlt train` process."""
        from cxrlt.progress import progress_bar

        pending = self.pending()
        busy = [run for run in self.runs if not run.finished and run not in pending]
        # A run whose shared first stage is being trained by another process would otherwise train its own.
        busy += [run for run in pending if any(run.donor is other for other in busy)]
        todo = self._read_data([run for run in pending if run not in busy])
        pool = _Pool(list(executable or [sys.executable, "-m", "cxrlt"]), jobs, cpu_threads(jobs), visible_gpus())
        print(_plan_text(self, todo, busy, pool), flush=True)
        total, done = len(self.runs), sum(run.finished for run in self.runs)
        bar = progress_bar(total=total, initial=done, enabled=progress, desc="sweep", unit="run", dynamic_ncols=True)
        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
        try:
            while todo or pool.running:
                for slot in pool.free_slots():
                    run = next((r for r in todo if not _waits_for_donor(r, todo, pool.running)), None)
                    if run is None:
                        break
                    todo.remove(run)
                    self._launch(run, slot, pool)
                time.sleep(POLL_SECONDS if pool.running else 0)
                for job in pool.ended():
                    record = self._record(job)
                    done += record["status"] == "finished"
                    bar.update(record["status"] == "finished")
                    bar.write(_finished_line(job.run, record, done, total, pool.seconds_left(len(todo))))
        except KeyboardInterrupt:
            stopped = list(pool.running.values())
            self._stop(stopped)
            raise Interrupted(
                f"sweep stopped with {sum(run.finished for run in self.runs)} of {total} runs finished"
                + (f"; {', '.join(job.run.key for job in stopped)} stopped after their last finished epoch"
                   if stopped else "")
                + f". Continue with `cxrlt sweep --resume {self.folder.path}` (finished runs are skipped, stopped "
                  "ones resume)") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
            bar.close()

    def _read_data(self, runs: list[PlannedRun]) -> list[PlannedRun]:
        """Read each data set of `runs` once, here, before any run starts; the runs whose data could be read.

        A generated source (`synthetic`) writes its images on first read, and
        two runs starting together would write them at the same time. A data
        set that cannot be read fails its runs, with the reason, up front.
        """
        from cxrlt.data.sources import load_table

        problems: dict[str, str | None] = {}
        readable = []
        for run in runs:
            key = json.dumps(run.config.data.model_dump(mode="json"), sort_keys=True)
            if key not in problems:
                try:
                    load_table(run.config.data)
                    problems[key] = None
                except CxrltError as exc:
                    problems[key] = str(exc)
            if problems[key] is None:
                readable.append(run)
            else:
                self._fail(run, f"its data cannot be read: {problems[key]}")
        return readable

    def _fail(self, run: PlannedRun, error: str) -> None:
        """Record a run that could not be started."""
        self.records[run.key] = {**self.records.get(run.key, {}), "status": "failed", "error": error}
        write_json(self.folder.state, {**self.spec.to_json(), "runs": self.records})
        print(f"{run.key}: failed: {error}", flush=True)

    def _launch(self, run: PlannedRun, slot: int, pool: "_Pool") -> None:
        """Start the process of `run` in `slot` (or record why it cannot start)."""
        try:
            self._check_started(run)
            if self._reuse_first_stage(run):
                print(f"{run.key}: reuses the finished stage {run.first_stages()[0].folder.name} of "
                      f"{run.donor.key}", flush=True)
        except CxrltError as exc:
            self._fail(run, str(exc))
            return
        env = {**os.environ, "OMP_NUM_THREADS": str(pool.threads), "MKL_NUM_THREADS": str(pool.threads),
               "CXRLT_NO_PROGRESS": "1"}
        if pool.gpus:
            env["CUDA_VISIBLE_DEVICES"] = pool.gpus[slot % len(pool.gpus)]
        arguments = [*pool.command, *train_arguments(run, self.folder.base)]
        log = self.folder.log(run.variant, run.seed)
        log.parent.mkdir(parents=True, exist_ok=True)
        offset = log.stat().st_size if log.is_file() else 0
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"$ {shlex.join(arguments)}\n")
            out.flush()
            # A session of its own: a Ctrl-C in the terminal reaches the sweep alone, which stops each run once.
            process = subprocess.Popen(arguments, stdout=out, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True, preexec_fn=partial(_die_with, os.getpid()))
        pool.running[slot] = Job(run, process, time.monotonic(), offset, slot)

    def _record(self, job: Job) -> dict[str, Any]:
        """Note how a run's process ended in sweep.json; the record."""
        run, code = job.run, job.process.returncode
        previous = self.records.get(run.key, {})
        record = {
            "status": "finished" if code == 0 and run.finished else
                      "interrupted" if code == INTERRUPTED else "failed",
            "seconds": round(float(previous.get("seconds") or 0.0) + time.monotonic() - job.started, 3),
            "cpu_seconds": round(float(previous.get("cpu_seconds") or 0.0) + job.cpu_seconds, 3),
            "attempts": int(previous.get("attempts") or 0) + 1,
            "exit_code": code,
            "error": None if code == 0 and run.finished else _error_text(self.folder.log(run.variant, run.seed),
                                                                            job.log_offset, code),
        }
        self.records[run.key] = record
        write_json(self.folder.state, {**self.spec.to_json(), "runs": self.records})
        return record

    def _stop(self, jobs: list[Job]) -> None:
        """Ctrl-C each run once and wait for them to save; a second Ctrl-C kills them."""
        for job in jobs:
            _signal(job.process, signal.SIGINT)
        try:
            for job in jobs:
                job.reap(block=True)
        except KeyboardInterrupt:
            for job in jobs:
                _signal(job.process, signal.SIGKILL)
                job.reap(block=True)
        for job in jobs:
            self._record(job)


@dataclass
class _Pool:
    """The processes of a sweep: how each is started, and which slot (device) each holds."""

    command: list[str]
    jobs: int
    threads: int
    gpus: list[str]
    running: dict[int, Job] = field(default_factory=dict)
    finished_seconds: list[float] = field(default_factory=list)

    def free_slots(self) -> list[int]:
        return [slot for slot in range(self.jobs) if slot not in self.running]

    def ended(self) -> list[Job]:
        """Jobs whose process has ended since the last call (their slots are free again)."""
        done = [job for job in list(self.running.values()) if job.reap()]
        for job in done:
            del self.running[job.slot]
            self.finished_seconds.append(time.monotonic() - job.started)
        return done

    def seconds_left(self, waiting: int) -> float:
        """A rough time to the end: the mean run so far, for every run not ended, over the slots."""
        if not self.finished_seconds:
            return 0.0
        return sum(self.finished_seconds) / len(self.finished_seconds) * (waiting + len(self.running)) / self.jobs


def _die_with(parent: int) -> None:
    """In a run's process before it starts: Ctrl-C stops it even when the sweep was started ignoring SIGINT
    (`nohup ... &`), and it dies with the sweep."""
    from cxrlt.processes import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent(parent)


def _terminate_as_interrupt(number: int, frame: Any) -> None:
    """SIGTERM (`kill`, a batch system's stop) ends a sweep as Ctrl-C does: its runs are stopped and saved."""
    raise KeyboardInterrupt


def _signal(process: subprocess.Popen, number: int) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, number)
        except ProcessLookupError:
            pass


def _waits_for_donor(run: PlannedRun, todo: list[PlannedRun], running: dict[int, Job]) -> bool:
    """Whether the run whose first stage `run` would reuse is still to run or running."""
    donor = run.donor
    return donor is not None and (donor in todo or any(job.run is donor for job in running.values()))


def cpu_threads(jobs: int) -> int:
    """Threads per run: OMP_NUM_THREADS (else the CPU cores this process may use) split evenly over `jobs`."""
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    total = int(given) if given.isdigit() and int(given) > 0 else len(os.sched_getaffinity(0))
    return max(1, total // jobs)


def visible_gpus() -> list[str]:
    """The GPUs runs are spread over: CUDA_VISIBLE_DEVICES's entries, else every GPU torch sees."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [entry.strip() for entry in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if entry.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _error_text(log: Path, offset: int, code: int) -> str:
    """The run's own error paragraph from its log (what `cxrlt train` printed last), else its exit code."""
    try:
        with open(log, encoding="utf-8", errors="replace") as handle:
            handle.seek(offset)
            lines = [line.strip() for line in handle.read().splitlines() if line.strip()]
    except OSError:
        lines = []
    ours = [line for line in lines
            if line.startswith(tuple(f"cxrlt {command}: {what}:" for command in ("train", "kfold")
                                     for what in ("error", "interrupted")))]
    text = ours[-1].split(":", 2)[2].strip() if ours else (lines[-1] if lines else "no output")
    return f"exit code {code}: {clip(text, 600)} (log: {log})"


def _plan_text(sweep: Sweep, todo: list[PlannedRun], busy: list[PlannedRun], pool: _Pool) -> str:
    runs = sweep.runs
    finished = sum(run.finished for run in runs)
    resumed = sum(run.started for run in todo)
    where = f"GPUs {','.join(pool.gpus)}" if pool.gpus else "CPU"
    text = (f"sweep {sweep.folder.path}: {len(sweep.spec.variants)} variant(s) x {len(sweep.spec.seeds)} seed(s) = "
            f"{len(runs)} runs{'' if sweep.spec.folds is None else f' of {sweep.spec.folds} folds each'}; "
            f"{finished} finished, {resumed} to resume, {len(todo) - resumed} to start"
            f"; {pool.jobs} at a time on {where}, {pool.threads} CPU thread(s) each")
    if busy:
        text += (f"\nin use by another process, or waiting for the first stage of one that is (skipped; run the "
                 f"sweep again when it has finished): {', '.join(run.key for run in busy)}")
    return text


def _finished_line(run: PlannedRun, record: dict[str, Any], done: int, total: int, left_seconds: float) -> str:
    line = f"[{done}/{total}] {run.key}: {record['status']} after {record['seconds']:.0f} s"
    if record["status"] == "finished":
        mean = read_json(run.files.results.metrics)["mean"]
        line += f"; {'; '.join(f'{k} {mean[k]:.4f}' for k in ('auc', 'ap') if mean.get(k) is not None)}"
    else:
        line += f": {record['error']}"
    if left_seconds > 0:
        line += f" (about {left_seconds / 60:.0f} min left)"
    return line


# ------------------------------------------------------------------ results
def outcomes(sweep: Sweep) -> list["RunOutcome"]:
    """Where every run stands, variant by variant (the order of results.csv)."""
    from cxrlt.evaluation.sweep import RunOutcome

    by_key = {run.key: run for run in sweep.runs}
    out = []
    for variant in sweep.spec.variants:
        for seed in sweep.spec.seeds:
            run = by_key[f"{variant.name}/seed{seed}"]
            record = sweep.records.get(run.key, {})
            if run.finished:
                status, error = "finished", None
            elif is_locked(run.files.path):
                status, error = "running", None
            elif record.get("status") in ("failed", "interrupted"):
                status, error = record["status"], record.get("error")
            else:
                status, error = "pending", None
            out.append(RunOutcome(run.variant, run.seed, status, run.files.results, record.get("seconds"), error,
                                  record.get("cpu_seconds")))
    return out


def patient_keys(config: RunConfig) -> dict[str, str] | None:
    """Image id -> patient of the data the runs were evaluated on (None, with a note, when they cannot be read)."""
    from cxrlt.data.sources import load_table

    try:
        table = load_table(config.data)
    except CxrltError as exc:
        print(f"note: the paired intervals resample images, not patients: the run's data cannot be read ({exc})",
              flush=True)
        return None
    return dict(zip((str(i) for i in table.image_ids), table.patient_groups()))


def collect(sweep: Sweep, resamples: int = 1000) -> dict[str, Any]:
    """Write results.csv and the summary (json, md, png) from the runs as they are now; the summary."""
    from cxrlt.evaluation.sweep import write_summary

    states = outcomes(sweep)
    finished = [run for run in sweep.runs if run.finished]
    first = next((run for run in finished if run.variant == sweep.spec.baseline), finished[0] if finished else None)
    patients = patient_keys(first.config) if first is not None else None
    return write_summary(sweep.folder, states, [v.name for v in sweep.spec.variants], sweep.spec.baseline, patients,
                         resamples, title=f"Sweep {sweep.folder.path}")


def run_sweep(sweep: Sweep, jobs: int = 1, progress: bool = True, train: bool = True,
              resamples: int = 1000) -> dict[str, Any]:
    """Hold the sweep folder, train what is pending (unless `train` is false), then summarise."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if resamples < 1:
        raise ConfigError(f"--resamples must be at least 1 (1000 is usual), got {resamples}")
    if not train and sweep.folder.started and is_locked(sweep.folder.path):
        # The sweep is training in another process, which owns sweep.json: summarise the runs finished so far
        # without writing it (the summary files are written atomically, and that process rewrites them at its end).
        print(f"note: the sweep in {sweep.folder.path} is running in another process; summarising the runs "
              "finished so far", flush=True)
        return collect(sweep, resamples)
    with sweep.folder.claim().lock("sweep"):
        sweep.save()
        if train:
            sweep.train(jobs, progress)
        return collect(sweep, resamples)


def pending_commands(sweep: Sweep) -> list[str]:
    """Hold the sweep folder and return one `cxrlt train` command per pending run."""
    with sweep.folder.claim().lock("sweep"):
        sweep.save()
        return sweep.commands()
