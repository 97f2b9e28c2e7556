"""`emomatch experiment`: named experiments, their rows, baselines, resumption; the subsample
keys and the TensorBoard logger they rely on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from emomatch.config import load_config
from emomatch.data import select_split
from emomatch.data.splits import subsample_labeled, subsample_pool, training_split
from emomatch.errors import ConfigError, DataError, EmomatchError
from emomatch.experiments import load_spec, run_experiment, shipped_experiments
from emomatch.experiments.spec import row_configs
from emomatch.store import FeatureStore
from emomatch.training import fit
from emomatch.training.prepare import prepare_training_data
from tests.support.experiments import TWO_ROWS, write_base, write_spec


@pytest.fixture(scope="module")
def finished(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two-row experiment, run once for the tests that only read it."""
    folder = tmp_path_factory.mktemp("experiment")
    spec = load_spec(write_spec(folder))
    run_experiment(spec, write_base(folder, tiny_store), folder / "out")
    return folder / "out"


def test_shipped_experiments_load_and_their_rows_validate(tiny_store, tmp_path) -> None:
    assert set(shipped_experiments()) >= {
        "modalities",
        "semi",
        "meld",
        "ablation",
        "unlabeled-quantity",
        "matching",
        "labels",
    }
    base = write_base(tmp_path, tiny_store)
    for name in shipped_experiments():
        spec = load_spec(name)
        for row, cfg in row_configs(spec, base):
            for key, value in {**spec.set, **row.set}.items():
                section, field = key.split(".")
                got = getattr(getattr(cfg, section), field)
                assert got == value, (name, row.name, key)


def test_ablation_is_table_7(tiny_store, tmp_path) -> None:
    spec = load_spec("ablation")
    switches = {
        (r.set["loss.unlabeled"], r.set["loss.reconstruction"], r.set["loss.matching"]): (
            r.paper["wap"],
            r.paper["ua"],
        )
        for r in spec.rows
    }
    # METHOD.md section 7: fully (none, MMD, rec, both), semi (MMD, both)
    assert switches == {
        (False, False, False): (72.7, 71.5),
        (False, False, True): (72.0, 71.5),
        (False, True, False): (72.5, 71.7),
        (False, True, True): (73.0, 72.5),
        (True, False, True): (72.9, 71.5),
        (True, True, True): (75.6, 74.5),
    }


def test_experiment_runs_every_row_and_the_baselines(finished: Path) -> None:
    for row in ("fully", "semi"):
        metrics = json.loads((finished / row / "metrics.json").read_text())
        assert metrics["modalities"] == ["acoustic", "lexical"]
        assert metrics["semi_supervised"] is (row == "semi")
    (data,) = (finished / "baselines").iterdir()
    assert data.name.startswith("AL-")
    for name in ("logreg", "linear_svm"):
        assert json.loads((data / name / "metrics.json").read_text())["modalities"] == [
            "acoustic",
            "lexical",
        ]
    manifest = json.loads((finished / "experiment.json").read_text())
    assert manifest["rows"]["semi"]["config"]["loss"]["unlabeled"] is True
    assert set(json.loads((finished / "timings.json").read_text())) == {"fully", "semi"}


def test_rerun_skips_finished_runs(finished: Path, tiny_store, monkeypatch) -> None:
    import emomatch.experiments.run as run_module

    calls: list[str] = []
    monkeypatch.setattr(run_module, "resume_or_train", lambda *a, **k: calls.append("t"))
    monkeypatch.setattr(run_module, "train_folds", lambda *a, **k: calls.append("f"))
    monkeypatch.setattr(run_module, "run_baselines", lambda *a, **k: calls.append("b"))
    before = {p: p.stat().st_mtime_ns for p in finished.rglob("metrics.json")}
    said: list[str] = []
    spec = load_spec(write_spec(finished.parent))
    run_experiment(spec, finished.parent / "base.yaml", finished, say=said.append)
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("metrics.json")} == before
    assert "2 training runs (2 already finished)" in said[0]


def test_finished_runs_of_another_config_or_seeds_are_refused(finished: Path) -> None:
    spec = load_spec(write_spec(finished.parent))
    base = finished.parent / "base.yaml"
    before = {p: p.stat().st_mtime_ns for p in finished.rglob("metrics.json")}
    with pytest.raises(ConfigError, match="differs in loss.alpha"):
        run_experiment(spec, base, finished, ["loss.alpha=0.5"])
    with pytest.raises(ConfigError, match="finished run of other seeds or folds"):
        run_experiment(spec, base, finished, seeds=2)
    # display settings may change: the finished runs are reused as they are
    run_experiment(spec, base, finished, ["train.progress_bar=true"])
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("metrics.json")} == before


def test_an_interrupted_row_resumes_from_its_last_epoch(tiny_store, tmp_path) -> None:
    spec = load_spec(write_spec(tmp_path))
    out = tmp_path / "out"
    # the "fully" row stopped after its first epoch of two: a checkpoint, no metrics.json
    first = load_config(write_base(tmp_path, tiny_store, epochs=1), row_overrides_of(spec, 0))
    fit(first, out / "fully")
    history = (out / "fully" / "logs" / "metrics.csv").read_text().splitlines()
    said: list[str] = []
    run_experiment(spec, write_base(tmp_path, tiny_store, epochs=2), out, say=said.append)
    resumed = (out / "fully" / "logs" / "metrics.csv").read_text().splitlines()
    epochs = {line.split(",")[0] for line in resumed[1:]}
    assert epochs == {"0", "1"}
    # the first epoch's rows are the interrupted run's, kept rather than trained again
    assert resumed[1:3] == history[1:3]
    assert (out / "fully" / "metrics.json").is_file()
    assert any(s.startswith("run 1 of 2: fully") for s in said)


def row_overrides_of(spec, i: int) -> list[str]:
    from emomatch.experiments.spec import row_overrides

    return row_overrides(spec, spec.rows[i], [])


def test_a_user_override_of_a_row_key_is_an_error(tiny_store, tmp_path) -> None:
    spec = load_spec(write_spec(tmp_path))
    with pytest.raises(ConfigError, match="row 'fully' sets loss.unlabeled"):
        run_experiment(
            spec, write_base(tmp_path, tiny_store), tmp_path / "o", ["loss.unlabeled=true"]
        )
    assert not (tmp_path / "o").exists()


def test_bad_experiment_files_name_the_problem(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown experiment 'ablaton'; shipped: ablation"):
        load_spec("ablaton")
    bad = write_spec(tmp_path, TWO_ROWS.replace("column: semi", "column: fully"))
    with pytest.raises(ConfigError, match="two rows fill the same table cell: A\\+L / fully"):
        load_spec(bad)
    typo = write_spec(tmp_path, TWO_ROWS.replace("paper: {wap: 70.3", "paper: {wapp: 70.3"))
    with pytest.raises(ConfigError, match=r"two-rows.yaml, line \d+: rows.0.paper"):
        load_spec(typo)


def test_train_fraction_is_stratified_and_nested(tiny_store) -> None:
    store = FeatureStore(tiny_store)
    whole = select_split(store, "split", "train", ["acoustic"], True)
    quarter = subsample_labeled(whole, 0.25, seed=3)
    half = subsample_labeled(whole, 0.5, seed=3)
    counts = np.bincount(whole.labels(), minlength=4)
    assert (np.bincount(quarter.labels(), minlength=4) == np.ceil(0.25 * counts)).all()
    assert set(quarter.rows) <= set(half.rows) <= set(whole.rows)
    assert set(subsample_labeled(whole, 0.25, seed=4).rows) != set(quarter.rows)
    # at least one per class however small the share: every class stays learnable
    tiny = subsample_labeled(whole, 0.001, seed=0)
    assert sorted(tiny.labels().tolist()) == [0, 1, 2, 3]


def test_unlabeled_pool_subsample_reaches_training(tiny_store, tmp_path) -> None:
    base = write_base(tmp_path, tiny_store)
    pool = len(prepare_training_data(load_config(base)).unlabeled)
    half = prepare_training_data(load_config(base, ["data.unlabeled_fraction=0.5"]))
    assert len(half.unlabeled) == -(-pool // 2)
    ten = prepare_training_data(load_config(base, ["data.unlabeled_count=10"]))
    assert len(ten.unlabeled) == 10
    assert set(ten.unlabeled.rows) <= set(half.unlabeled.rows)
    with pytest.raises(DataError, match=f"unlabeled_count={pool + 1} but the unlabelled pool"):
        subsample_pool(half.unlabeled, 1.0, pool + 1, 0)
    halved = load_config(base, ["data.train_fraction=0.5"]).data
    smaller = training_split(FeatureStore(tiny_store), halved)
    assert len(smaller) < len(half.train)
    with pytest.raises(ConfigError, match="unlabeled_fraction or unlabeled_count, not both"):
        load_config(base, ["data.unlabeled_count=10", "data.unlabeled_fraction=0.5"])


def test_tensorboard_logger_writes_events(tiny_store, tmp_path) -> None:
    base = write_base(tmp_path, tiny_store)
    cfg = load_config(base, ["train.loggers=[csv, tensorboard]", "loss.unlabeled=false"])
    fit(cfg, tmp_path / "run")
    events = list((tmp_path / "run" / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert {"train/cls", "val/ua", "val/loss"} <= set(acc.Tags()["scalars"])
    assert (tmp_path / "run" / "logs" / "metrics.csv").is_file()


def test_tensorboard_missing_is_a_clear_error(tiny_store, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    base = write_base(tmp_path, tiny_store)
    cfg = load_config(base, ["train.loggers=[csv, tensorboard]"])
    with pytest.raises(EmomatchError, match="pip install 'emomatch\\[tensorboard\\]'"):
        fit(cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match="csv must stay among the loggers"):
        load_config(base, ["train.loggers=[tensorboard]"])
