import json

import numpy as np
import yaml
from typer.testing import CliRunner

from emomatch.cli import app
from emomatch.rundir import METRICS_FILE, RunFolder
from tests.support.builders import TINY_MODEL

runner = CliRunner()


def write_config(tmp_path, store, **extra) -> str:
    cfg = {
        "data": {"store": str(store)},
        "model": TINY_MODEL,
        "train": {
            "batch_size": 16,
            "unlabeled_batch_size": 16,
            "max_epochs": 1,
            "progress_bar": False,
        },
        **extra,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_every_command_has_help() -> None:
    for cmd in ("train", "evaluate", "demo", "synth", "info"):
        result = runner.invoke(app, [cmd, "--help"])
        assert result.exit_code == 0, cmd
        assert "Usage" in result.output


def test_train_then_evaluate(tiny_store, tmp_path) -> None:
    config = write_config(tmp_path, tiny_store)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", config, "--out", str(run), "--set", "seed=3"])
    assert result.exit_code == 0, result.output
    assert "test (test): WAP" in result.output
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 3
    result = runner.invoke(app, ["evaluate", str(run), "--split", "validation"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((RunFolder(run).evaluation_dir("validation") / METRICS_FILE).read_text())
    assert metrics["split"] == "validation" and {"wap", "ua", "confusion"} <= set(metrics)


def test_bad_config_exits_non_zero_naming_the_key(tiny_store, tmp_path) -> None:
    config = write_config(tmp_path, tiny_store, loss={"betta": 1})
    result = runner.invoke(app, ["train", config, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "loss.betta" in result.output


def test_missing_store_exits_non_zero(tmp_path) -> None:
    config = write_config(tmp_path, tmp_path / "nowhere")
    result = runner.invoke(app, ["train", config, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "store.json is missing" in result.output


def test_synth_and_info(tmp_path) -> None:
    out = tmp_path / "s"
    result = runner.invoke(
        app,
        [
            "synth",
            str(out),
            "--n-train",
            "8",
            "--n-validation",
            "4",
            "--n-test",
            "4",
            "--n-unlabeled",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 0 and "acoustic: vector [64]" in result.output


def test_demo_writes_fully_and_semi_summary(tmp_path, monkeypatch) -> None:
    from emomatch import demo as demo_module
    from tests.support.builders import tiny_corpus

    monkeypatch.setattr(demo_module, "DEMO_CORPUS", tiny_corpus())
    monkeypatch.setattr(demo_module, "DEMO_MODEL", TINY_MODEL)
    args = ["demo", "--out", str(tmp_path), "--seeds", "1", "--epochs", "1", "--no-progress"]
    result = runner.invoke(app, [*args, "--source", "features"])
    assert result.exit_code == 0, result.output
    check_demo_summary(tmp_path, result.output)


def check_demo_summary(out, output: str) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    for mode in ("fully", "semi"):
        assert {"wap", "ua", "wa", "weighted_f1", "macro_f1", "confusion"} <= set(summary[mode])
    assert summary["semi"]["runs"][0]["semi_supervised"] is True
    assert summary["fully"]["runs"][0]["semi_supervised"] is False
    assert "fully" in output and "semi" in output
    for baseline in ("logreg", "linear_svm"):
        assert 0.0 <= summary[baseline]["ua"] <= 1.0
        assert baseline in output
    return summary


def test_demo_from_raw_media(tmp_path, monkeypatch) -> None:
    """Generate clips, extract them with the real extractors, train: a miniature demo."""
    from emomatch import demo as demo_module

    monkeypatch.setattr(demo_module, "MEDIA_PER_CLASS", 6)
    monkeypatch.setattr(demo_module, "MEDIA_UNLABELED", 8)
    monkeypatch.setattr(demo_module, "DEMO_MODEL", TINY_MODEL)
    args = ["demo", "--out", str(tmp_path), "--seeds", "1", "--epochs", "1", "--no-progress"]
    result = runner.invoke(app, [*args, "--workers", "1"])
    assert result.exit_code == 0, result.output
    summary = check_demo_summary(tmp_path, result.output)
    assert summary["corpus"]["source"] == "media"
    assert summary["corpus"]["extraction"]["done"] == 6 * 4 + 8
    assert (tmp_path / "media" / "manifest.csv").is_file()
    # A second run reuses the corpus, the store and the finished runs.
    again = runner.invoke(app, [*args, "--workers", "1"])
    assert again.exit_code == 0, again.output
    assert (
        json.loads((tmp_path / "summary.json").read_text())["corpus"]["extraction"]["skipped"] == 32
    )


def test_two_process_ddp_on_cpu(tiny_store, tmp_path) -> None:
    """Several devices run DDP; here two CPU processes over gloo, through the real command."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    config = write_config(tmp_path, tiny_store)
    exe = Path(sys.executable).parent / "emomatch"
    run = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "WORLD_SIZE"))}
    result = subprocess.run(
        [
            str(exe),
            "train",
            config,
            "--out",
            str(run),
            "--set",
            "train.accelerator=cpu",
            "--set",
            "train.devices=2",
            "--set",
            "train.max_epochs=2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MEMBER: 2/2" in result.stderr
    assert json.loads((run / "metrics.json").read_text())["n"] == 64


def test_train_all_folds_from_the_command(tmp_path) -> None:
    from emomatch.synthetic import write_synthetic_store
    from tests.support.builders import tiny_corpus

    store = tmp_path / "store"
    write_synthetic_store(tiny_corpus(speakers=4, folds=2), store)
    config = write_config(tmp_path, store)
    out = tmp_path / "cv"
    result = runner.invoke(app, ["train", config, "--out", str(out), "--folds", "all"])
    assert result.exit_code == 0, result.output
    assert "fold 1: test" in result.output and "mean over 2 fold(s)" in result.output
    assert set(json.loads((out / "metrics.json").read_text())["folds"]) == {"1", "2"}
    result = runner.invoke(app, ["train", config, "--out", str(out), "--folds", "some"])
    assert result.exit_code == 2 and "--folds takes 'all'" in result.output


def test_balance_unlabeled_pool(tiny_store, tmp_path) -> None:
    from emomatch.store import FeatureStore

    config = write_config(tmp_path, tiny_store, loss={"unlabeled": False})
    run = tmp_path / "fully"
    assert runner.invoke(app, ["train", config, "--out", str(run)]).exit_code == 0
    out = tmp_path / "balanced"
    result = runner.invoke(
        app,
        [
            "balance-unlabeled",
            str(tiny_store),
            "--model",
            str(run),
            "--per-class",
            "40",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    balanced = FeatureStore(out)
    counts = balanced.index["pseudo_label"].value_counts()
    assert (counts == 40).all()  # 96 windows: some classes sub-sampled, others over-sampled
    assert balanced.index["label"].isna().all()
    assert balanced.index["id"].is_unique
    assert balanced.index["id"].str.contains("#").any()
    src = FeatureStore(tiny_store)
    uid = balanced.index["id"].iloc[0].split("#")[0]
    row_src = int(np.flatnonzero(src.index["id"] == uid)[0])
    assert np.array_equal(
        balanced.fetch("visual", np.array([0])), src.fetch("visual", np.array([row_src]))
    )
    again = runner.invoke(
        app,
        [
            "balance-unlabeled",
            str(tiny_store),
            "--model",
            str(run),
            "--per-class",
            "40",
            "--out",
            str(out),
        ],
    )
    assert again.exit_code == 2 and "already holds a store" in again.output


def test_balance_unlabeled_with_an_ensemble_or_an_averaged_run(tiny_store, tmp_path) -> None:
    """The pool is labelled by the model the run is scored with: the seeds' ensemble of a
    ``--seeds`` run (which has no checkpoints/ of its own), the averaged ``selected.ckpt`` of a
    ``train.average`` run (not its ``best.ckpt``)."""
    from emomatch.store import FeatureStore

    config = write_config(tmp_path, tiny_store, loss={"unlabeled": False})
    seeds = tmp_path / "seeds"
    result = runner.invoke(app, ["train", config, "--out", str(seeds), "--seeds", "2"])
    assert result.exit_code == 0, result.output
    averaged = tmp_path / "averaged"
    result = runner.invoke(
        app,
        ["train", config, "--out", str(averaged)]
        + ["--set", "train.average=2", "--set", "train.max_epochs=2"],
    )
    assert result.exit_code == 0, result.output
    assert (averaged / "checkpoints" / "selected.ckpt").is_file()
    for run, expected in [
        (seeds, [str(seeds / f"seed_{s}" / "checkpoints" / "best.ckpt") for s in (0, 1)]),
        (averaged, str(averaged / "checkpoints" / "selected.ckpt")),
    ]:
        out = tmp_path / f"balanced-{run.name}"
        args = ["balance-unlabeled", str(tiny_store), "--model", str(run), "--per-class", "10"]
        result = runner.invoke(app, [*args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        balanced = FeatureStore(out)
        assert (balanced.index["pseudo_label"].value_counts() == 10).all()
        assert balanced.meta["info"]["model"] == expected
