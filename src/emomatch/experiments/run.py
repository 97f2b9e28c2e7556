"""Running an experiment: every row's runs (folds x seeds) and the baselines on the same data.

The output folder is laid out in :mod:`emomatch.experiments.layout`. Running it again skips
finished runs and resumes an interrupted one (:func:`emomatch.runs.resume_or_train`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from emomatch.baseline import run_baselines
from emomatch.config import ExperimentConfig
from emomatch.data.folds import choose_folds
from emomatch.errors import ConfigError
from emomatch.experiments.collect import METRIC_NAMES
from emomatch.experiments.layout import BASELINES_DIR, MANIFEST, TIMINGS, training_runs, versions
from emomatch.experiments.report import write_experiment_report
from emomatch.experiments.spec import ExperimentSpec, Row, row_configs
from emomatch.files import atomic_write_text, hold_lock
from emomatch.rundir import FOLD_PREFIX, SEED_PREFIX, RunFolder
from emomatch.runs import resume_or_train, train_folds
from emomatch.store import FeatureStore
from emomatch.training.fit import config_differences

log = logging.getLogger(__name__)

#: data keys that only shape the unlabelled stream: the baselines never see it
UNLABELED_KEYS = ("unlabeled_store", "unlabeled_split", "unlabeled_fraction", "unlabeled_count")


def data_key(cfg: ExperimentConfig) -> dict[str, Any]:
    """What a baseline's result depends on: the labelled data and the selection metric."""
    data = cfg.data.model_dump(mode="json", exclude=set(UNLABELED_KEYS))
    return {"data": data, "select_metric": cfg.train.select_metric, "seed": cfg.seed}


def data_folder(cfg: ExperimentConfig) -> str:
    """A readable, stable folder name per data setting: ``AVL-1a2b3c4d``."""
    letters = "".join(m[0].upper() for m in cfg.data.modalities)
    digest = hashlib.sha1(json.dumps(data_key(cfg), sort_keys=True).encode()).hexdigest()[:8]
    return f"{letters}-{digest}"


class Progress(Callback):
    """One line per training run: which of how many, the time so far and the time left (the
    mean of the runs trained in this session times the runs still to train)."""

    def __init__(
        self,
        total: int,
        finished: int,
        timings: Path,
        say: Callable[[str], None],
    ) -> None:
        self.total = total
        self.done = finished
        self.trained: list[float] = []
        self.timings = timings
        self.say = say
        self.started = time.monotonic()
        self.run_started = 0.0
        self.where = ""

    def announce(self, where: str) -> None:
        self.where = where

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.run_started = time.monotonic()
        elapsed = self.run_started - self.started
        left = self.total - self.done
        eta = f"{_clock(left * sum(self.trained) / len(self.trained))}" if self.trained else "?"
        cfg = getattr(pl_module, "cfg", None)
        detail = ""
        if cfg is not None:
            detail = f" ({cfg.data.split_field}, seed {cfg.seed})"
        self.say(
            f"run {self.done + 1} of {self.total}: {self.where}{detail}  "
            f"elapsed {_clock(elapsed)}, ETA {eta}"
        )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = time.monotonic() - self.run_started
        self.trained.append(seconds)
        self.done += 1
        if trainer.is_global_zero:
            run_dir = Path(str(trainer.loggers[0].save_dir)).parent
            record_time(self.timings, run_dir, seconds)


def record_time(timings: Path, run_dir: Path, seconds: float) -> None:
    """Add ``seconds`` to the run's wall time (an interrupted run adds each session's)."""
    seen = json.loads(timings.read_text()) if timings.is_file() else {}
    key = str(run_dir.resolve().relative_to(timings.parent.resolve()))
    seen[key] = round(seen.get(key, 0.0) + seconds, 2)
    atomic_write_text(timings, json.dumps(seen, indent=2, sort_keys=True))


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def training_runs_of(
    cfg: ExperimentConfig, row_dir: Path, folds: Sequence[int] | None, seeds: int
) -> list[tuple[Path, ExperimentConfig]]:
    """The single training runs of a row and the config each trains with, laid out as
    ``train_folds`` / ``train_seeds`` lay them out (``fold_k/``, ``seed_S/``)."""
    out = []
    for k in [None] if folds is None else folds:
        for i in range(seeds):
            run = cfg.model_copy(deep=True)
            run.seed = cfg.seed + i
            where = row_dir
            if k is not None:
                run.data.split_field = f"{FOLD_PREFIX}{k}"
                where = where / f"{FOLD_PREFIX}{k}"
            out.append((where / f"{SEED_PREFIX}{run.seed}" if seeds > 1 else where, run))
    return out


#: settings that may differ between a finished run and the same run asked for again
DISPLAY_ONLY = {("train", "progress_bar"), ("train", "num_workers"), ("train", "loggers")}


def check_finished(row: Row, row_dir: Path, runs: Sequence[tuple[Path, ExperimentConfig]]) -> None:
    """A finished run is reused only if it is the run asked for: same config (but for display
    settings), same seeds and folds. Otherwise a changed --set or --seeds would be reported
    with the old runs' scores."""
    for run_dir, cfg in runs:
        run = RunFolder(run_dir)
        if not run.is_finished() or not run.config_path.is_file():
            continue
        saved = run.saved_config()
        changed = [
            ".".join(k)
            for k in config_differences(saved, cfg.model_dump(mode="json"))
            if k not in DISPLAY_ONLY
        ]
        if changed:
            raise ConfigError(
                f"row {row.name!r}: {run_dir} holds a finished run of another config (it differs "
                f"in {', '.join(changed)}); choose another --out or delete that folder"
            )
    asked = {d.resolve() for d, _ in runs}
    other = sorted(d for d in training_runs(row_dir) if d.resolve() not in asked)
    if other:
        raise ConfigError(
            f"row {row.name!r}: {other[0]} is a finished run of other seeds or folds than asked "
            "for (the report would mix them in); choose another --out or delete that folder"
        )


def run_experiment(
    spec: ExperimentSpec,
    config: str | Path,
    out: str | Path,
    overrides: Sequence[str] = (),
    folds: str | Sequence[int] | None = None,
    seeds: int = 1,
    say: Callable[[str], None] = log.info,
    command_line: str | None = None,
) -> dict[str, Any]:
    """Run every row of ``spec`` on the base ``config`` (plus ``overrides``) into ``out/<row>``
    and the baselines on each distinct data setting into ``out/baselines``; write the report.

    ``folds``: None (the config's split field), ``"all"`` or fold numbers, as ``train``."""

    out = Path(out)
    if isinstance(folds, str) and folds != "all":
        raise ConfigError(f"folds takes 'all' or fold numbers, got {folds!r}")
    # Every row's config is validated before anything is written or trained.
    rows = row_configs(spec, config, overrides)
    chosen: list[int] | None = None
    if folds is not None:
        first = rows[0][1]
        store = FeatureStore(first.data.store)
        chosen = choose_folds(store, None if isinstance(folds, str) else list(folds))
    runs = {row.name: training_runs_of(cfg, out / row.name, chosen, seeds) for row, cfg in rows}
    for row, _ in rows:
        check_finished(row, out / row.name, runs[row.name])
    out.mkdir(parents=True, exist_ok=True)
    with hold_lock(out, "experiment folder"):
        manifest = _manifest(spec, config, overrides, chosen, seeds, rows, out)
        manifest["command_line"] = command_line or manifest["command_line"]
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
        total = sum(len(v) for v in runs.values())
        finished = sum(RunFolder(d).is_finished() for v in runs.values() for d, _ in v)
        progress = Progress(total, finished, out / TIMINGS, say)
        say(
            f"experiment {spec.name}: {len(rows)} rows, {total} training runs "
            f"({finished} already finished) -> {out}"
        )
        started = time.monotonic()
        for i, (row, cfg) in enumerate(rows, 1):
            progress.announce(f"{row.name} (row {i} of {len(rows)})")
            _run_row(row, cfg, out / row.name, chosen, seeds, progress)
        _run_all_baselines(rows, out, chosen, say)
        manifest["finished"] = _now()
        manifest["wall_seconds_this_session"] = round(time.monotonic() - started, 1)
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
        summary = write_experiment_report(out, out)
    alike = all_rows_alike(summary)
    if alike is not None:
        say(f"warning: {alike}")
    return summary


def all_rows_alike(summary: dict[str, Any]) -> str | None:
    """A warning when every row of an experiment scored exactly the same (None otherwise): the
    rows differ in their settings, so the same scores mean none of them learned anything that
    depends on them (a training split of one batch: one step an epoch; too few epochs)."""
    rows = summary.get("rows", {})
    if len(rows) < 2:
        return None
    scores = {tuple(row.get(k) for k in METRIC_NAMES) for row in rows.values()}
    if len(scores) > 1:
        return None
    (first,) = scores
    shown = ", ".join(
        f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}"
        for name, value in zip(METRIC_NAMES.values(), first, strict=True)
    )
    return (
        f"every row of the experiment scored the same ({shown}): the settings the rows vary "
        "changed nothing; too few optimizer steps an epoch (train.min_steps_per_epoch) or too "
        "few epochs?"
    )


def _run_row(
    row: Row,
    cfg: ExperimentConfig,
    row_dir: Path,
    folds: list[int] | None,
    seeds: int,
    progress: Progress,
) -> dict[str, Any]:
    run = RunFolder(row_dir)
    if run.is_finished():
        return run.read_metrics()
    if folds is None:
        return resume_or_train(cfg, row_dir, resume=True, callbacks=[progress], seeds=seeds)
    return train_folds(cfg, row_dir, folds=folds, resume=True, seeds=seeds, callbacks=[progress])


def _run_all_baselines(
    rows: Sequence[tuple[Row, ExperimentConfig]],
    out: Path,
    folds: list[int] | None,
    say: Callable[[str], None],
) -> None:
    seen: set[str] = set()
    for _, cfg in rows:
        name = data_folder(cfg)
        if name in seen:
            continue
        seen.add(name)
        target = out / BASELINES_DIR / name
        if (target / "summary.json").is_file():
            continue
        say(f"baselines on {'+'.join(cfg.data.modalities)} ({name})")
        run_baselines(cfg, target, folds=folds)


def _manifest(
    spec: ExperimentSpec,
    config: str | Path,
    overrides: Sequence[str],
    folds: list[int] | None,
    seeds: int,
    rows: Sequence[tuple[Row, ExperimentConfig]],
    out: Path,
) -> dict[str, Any]:
    old = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else {}
    return {
        "experiment": spec.name,
        "spec": spec.model_dump(mode="json"),
        "base_config": str(Path(config).resolve()),
        "base_config_text": Path(config).read_text(),
        "overrides": list(overrides),
        "folds": folds,
        "seeds": seeds,
        "rows": {
            row.name: {
                "config": cfg.model_dump(mode="json"),
                "baselines": f"{BASELINES_DIR}/{data_folder(cfg)}",
            }
            for row, cfg in rows
        },
        "versions": versions(),
        "command_line": old.get("command_line"),
        "started": old.get("started", _now()),
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
