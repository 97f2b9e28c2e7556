"""A new user's first hour (issue 22): threads that share the machine, labelled data alone,
`emomatch resume`, per-split evaluation, `--version`, the public API's names, `extract
--labels`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import emomatch
from emomatch import threads
from emomatch.cli import app
from emomatch.config import config_from_dict
from emomatch.corpora import prepare_corpus
from emomatch.errors import DataError
from emomatch.extract.mediawrite import write_wav
from emomatch.rundir import METRICS_FILE, RunFolder
from emomatch.runs import train_and_report
from emomatch.store import FeatureStore
from emomatch.synthetic import write_synthetic_store
from tests.support.builders import TINY_MODEL, make_config, tiny_corpus
from tests.support.runs import CrashMidEpoch

runner = CliRunner()


@pytest.fixture(scope="module")
def labelled_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of labelled utterances only: no `unlabeled` split."""
    path = tmp_path_factory.mktemp("labelled") / "store"
    write_synthetic_store(tiny_corpus(n_unlabeled=0, n_train=48, n_test=32), path)
    return path


def _config(tmp_path: Path, store: Path, **train: object) -> str:
    raw = {
        "data": {"store": str(store)},
        "model": TINY_MODEL,
        "train": {"batch_size": 16, "max_epochs": 1, "progress_bar": False, **train},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    yield
    torch.set_num_threads(before)
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# --- threads ---------------------------------------------------------------------------------


def test_cpus_follow_the_cgroup_quota_not_the_host(tmp_path, monkeypatch) -> None:
    v2 = tmp_path / "cpu.max"
    v2.write_text("150000 100000\n")
    assert threads.cgroup_cpu_limit(v2) == 1.5
    v2.write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(v2) is None
    quota, period = tmp_path / "q", tmp_path / "p"
    quota.write_text("50000")
    period.write_text("100000")
    assert threads.cgroup_cpu_limit(tmp_path / "none", quota, period) == 0.5
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1.5)
    assert threads.available_cpus() == 2, "a quota of 1.5 CPUs on 8 allowed cores is 2 threads"
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.available_cpus() == 8


def test_share_machine_sets_passive_openmp_and_torch_threads(keep_threads, monkeypatch) -> None:
    for var in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME"):
        monkeypatch.delenv(var, raising=False)
    assert threads.share_machine(1) == 1
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ["KMP_BLOCKTIME"] == "0"
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3, "the user's OMP_NUM_THREADS is the default"


def test_train_threads_option_is_used_and_recorded(labelled_store, tmp_path, keep_threads) -> None:
    torch.set_num_threads(2)
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["train", _config(tmp_path, labelled_store), "--out", str(run), "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 1
    assert RunFolder(run).read_config()["train"]["threads"] == 1


# --- labelled data alone ---------------------------------------------------------------------


def test_store_without_unlabelled_pool_trains_fully_supervised(
    labelled_store, tmp_path, caplog
) -> None:
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        result = runner.invoke(app, ["train", _config(tmp_path, labelled_store), "--out", str(run)])
    assert result.exit_code == 0, result.output
    notices = [r for r in caplog.records if "training fully supervised" in r.getMessage()]
    assert len(notices) == 1
    assert RunFolder(run).read_metrics()["semi_supervised"] is False
    assert RunFolder(run).read_config()["loss"]["unlabeled"] is False


def test_extract_a_folder_with_a_labels_file_without_text(tmp_path) -> None:
    clips = tmp_path / "clips"
    rng = np.random.default_rng(0)
    rows = ["id,label,speaker"]
    for i, label in enumerate(["happy", "sad", "happy", "sad"]):
        write_wav(clips / f"c{i}.wav", 0.3 * rng.standard_normal(8000))
        rows.append(f"c{i},{label},s{i % 2}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    store = tmp_path / "store"
    result = runner.invoke(
        app,
        ["extract", str(clips), "--labels", str(labels), "--out", str(store)]
        + ["--modalities", "acoustic", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    fs = FeatureStore(store)
    assert len(fs) == 4 and fs.classes == ["happy", "sad"]
    # lexical features need the text: asked for without a text column, one clear error
    result = runner.invoke(
        app,
        ["extract", str(clips), "--transcripts", str(labels), "--out", str(tmp_path / "s2")]
        + ["--modalities", "acoustic,lexical", "--no-progress"],
    )
    assert result.exit_code == 2 and "no 'text' column" in result.output
    text_only = tmp_path / "t.csv"
    text_only.write_text("id,text\nc0,hello\n")
    with pytest.raises(DataError, match="no 'label' column"):
        prepare_corpus("folder", clips, tmp_path / "m", labels=str(text_only))


# --- resume, evaluate per split, version, public names ---------------------------------------


def test_resume_continues_a_run_with_its_saved_overrides(labelled_store, tmp_path) -> None:
    cfg = make_config(labelled_store, seed=3, loss={"alpha": 0.5}, train={"max_epochs": 3})
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_and_report(cfg, run, callbacks=[CrashMidEpoch(epoch=1, batch=1)])
    assert RunFolder(run).can_resume() and not RunFolder(run).is_finished()
    result = runner.invoke(app, ["resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "test (test): WAP" in result.output
    saved = config_from_dict(RunFolder(run).read_config())
    assert saved.seed == 3 and saved.loss.alpha == 0.5
    assert RunFolder(run).read_metrics()["best_epoch"] is not None
    again = runner.invoke(app, ["resume", str(run)])
    assert again.exit_code == 0, "a finished run is read back"
    # `train --resume` without the overrides names the command that needs none
    plain = tmp_path / "plain.yaml"
    plain.write_text(make_config(labelled_store, train={"max_epochs": 3}).to_yaml())
    differs = runner.invoke(app, ["train", str(plain), "--out", str(run), "--resume"])
    assert differs.exit_code == 2 and f"emomatch resume {run}" in differs.output
    missing = runner.invoke(app, ["resume", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "holds no run" in missing.output


def test_evaluate_another_split_keeps_the_test_report(labelled_store, tmp_path) -> None:
    run = tmp_path / "run"
    train_and_report(make_config(labelled_store, loss={"unlabeled": False}), run)
    folder = RunFolder(run)
    assert runner.invoke(app, ["evaluate", str(run)]).exit_code == 0
    test_report = (folder.evaluation_dir() / METRICS_FILE).read_text()
    result = runner.invoke(app, ["evaluate", str(run), "--split", "validation"])
    assert result.exit_code == 0, result.output
    assert (folder.evaluation_dir() / METRICS_FILE).read_text() == test_report
    validation = json.loads((folder.evaluation_dir("validation") / METRICS_FILE).read_text())
    assert validation["split"] == "validation"


def test_version_and_public_names() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"emomatch {emomatch.__version__}"
    names = dir(emomatch)
    assert {"load", "train", "evaluate", "export", "Predictor"} <= set(names)
    assert not {"Any", "Path", "TYPE_CHECKING", "Mapping"} & set(names)


def test_help_shows_extras_and_whole_examples(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    shown = runner.invoke(app, ["transcribe", "--help"], terminal_width=80).output
    assert "pip install 'emomatch[asr]'" in " ".join(shown.split())
    for command, example in (
        ("extract", "acoustic.feature_set=eGeMAPSv02"),
        ("extract", "lexical.model=/models/bert-large"),
        ("prepare", "camera_map=A=1,B=2"),
        ("predict", "lexical.model=/models/bert-large"),
    ):
        shown = runner.invoke(app, [command, "--help"], terminal_width=80).output
        assert example in shown and "…" not in shown, command


# --- what training and extraction print ------------------------------------------------------


def test_training_prints_nothing_unactionable_and_counts_epochs_from_one(
    labelled_store, tmp_path, capfd
) -> None:
    import emomatch

    cfg = make_config(labelled_store, train={"max_epochs": 2, "progress_bar": True})
    emomatch.train(cfg, out=tmp_path / "run")
    printed = "".join(capfd.readouterr())
    assert "litlogger" not in printed and "weights_only" not in printed
    assert "LeafSpec" not in printed
    assert "Epoch 2/2" in printed and "Epoch 1/1" not in printed


def test_extract_summary_of_text_alone_has_no_real_time_factor() -> None:
    from dataclasses import replace

    from emomatch.extract.run import ExtractionSummary

    text = ExtractionSummary(Path("s"), 3, 0, 0, 2.0, 0.0, Path("s/errors.jsonl"))
    assert "real-time factor" not in str(text) and "extracted 3" in str(text)
    assert "real-time factor 2.0" in str(replace(text, media_seconds=4.0))


def test_prepare_names_its_problems_file(tmp_path) -> None:
    write_wav(tmp_path / "clips" / "a.wav", np.zeros(1600))
    write_wav(tmp_path / "clips" / "b.wav", np.zeros(1600))
    (tmp_path / "t.csv").write_text("id,text\na,hello\n")
    result = runner.invoke(
        app,
        ["prepare", "folder", str(tmp_path / "clips"), "--out", str(tmp_path / "m")]
        + ["--option", f"transcripts={tmp_path / 't.csv'}"],
    )
    assert result.exit_code == 0, result.output
    assert f"1 problem(s) (listed in {tmp_path / 'm' / 'problems.txt'})" in result.output
    corpus = json.loads((tmp_path / "m" / "corpus.json").read_text())
    assert corpus == {"name": "clips", "synthetic": False, "language": None}


def test_a_split_of_few_steps_an_epoch_is_warned_about(labelled_store, caplog) -> None:
    from emomatch.training.prepare import prepare_training_data

    one_batch = make_config(labelled_store, loss={"unlabeled": False}, train={"batch_size": 64})
    with caplog.at_level(logging.WARNING):
        prepare_training_data(one_batch).loaders(one_batch)
    assert any("1 optimizer step(s) an epoch" in r.getMessage() for r in caplog.records)
    caplog.clear()
    enough = make_config(
        labelled_store,
        loss={"unlabeled": False},
        train={"batch_size": 64, "min_steps_per_epoch": 5},
    )
    with caplog.at_level(logging.WARNING):
        prepare_training_data(enough).loaders(enough)
    assert not [r for r in caplog.records if "optimizer step" in r.getMessage()]
