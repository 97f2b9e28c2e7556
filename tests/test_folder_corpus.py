"""A folder of MP4s with a transcript CSV -> manifest -> store -> training, through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from emomatch.cli import app
from emomatch.corpora import prepare_corpus, read_manifest
from emomatch.errors import DataError
from emomatch.extract.mediawrite import write_video, write_wav
from emomatch.store import FeatureStore
from tests.support.builders import TINY_MODEL

runner = CliRunner()
SPLITS = ["train"] * 4 + ["validation"] * 2 + ["test"] * 2


def make_folder(root: Path) -> Path:
    """Two speakers' clips with soundtracks, one audio-only file, and a transcript CSV."""
    rng = np.random.default_rng(0)
    rows = []
    for spk in ("alice", "bob"):
        for k, split in enumerate(SPLITS):
            label = ("happy", "sad")[k % 2]
            pitch = 220.0 if label == "happy" else 110.0
            t = np.arange(8000) / 16000
            audio = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.01 * rng.normal(size=t.size)
            frames = rng.integers(0, 255, size=(6, 32, 32), dtype=np.uint8)
            write_video(root / spk / f"clip{k}.mp4", frames, fps=12, audio=audio)
            rows.append(
                {
                    "id": f"clip{k}.mp4" if spk == "alice" else f"{spk}/clip{k}",
                    "text": f"{label} words number {k}",
                    "label": label,
                    "split": split,
                }
            )
    write_wav(root / "loose.wav", 0.2 * np.sin(np.linspace(0, 800, 8000)))
    rows.append({"id": "ghost", "text": "no such clip", "label": "", "split": ""})
    csv_path = root.parent / "transcripts.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def test_folder_reader_rows(tmp_path: Path) -> None:
    csv_path = make_folder(tmp_path / "clips")
    prepared = prepare_corpus(
        "folder", tmp_path / "clips", tmp_path / "out", transcripts=str(csv_path)
    )
    df = read_manifest(prepared.manifest).set_index("id")
    assert prepared.rows == 17 and prepared.classes == ["happy", "sad"]
    assert df.loc["bob/clip3", "speaker"] == "bob" and df.loc["bob/clip3", "label"] == "sad"
    # A clip matched by its file name; its soundtrack is its audio.
    assert df.loc["alice/clip0", "text"] == "happy words number 0"
    assert df.loc["alice/clip0", "audio"] == df.loc["alice/clip0", "video"] != ""
    assert df.loc["loose", "video"] == "" and df.loc["loose", "split"] == "unlabeled"
    assert df.loc["loose", "speaker"] == "unknown"
    assert any("'ghost' matches no clip" in p for p in prepared.problems)
    assert any(p.startswith("loose: no line") for p in prepared.problems)


def test_folder_reader_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio or video files"):
        prepare_corpus("folder", tmp_path / "empty", tmp_path / "out")
    (tmp_path / "c").mkdir()
    write_wav(tmp_path / "c" / "a.wav", np.zeros(1600))
    bad = tmp_path / "t.csv"
    bad.write_text("file,transcript\na,hello\n")
    with pytest.raises(DataError, match="no 'id' column"):
        prepare_corpus("folder", tmp_path / "c", tmp_path / "out", transcripts=str(bad))


def test_extract_a_folder_then_train(tmp_path: Path) -> None:
    csv_path = make_folder(tmp_path / "clips")
    store = tmp_path / "store"
    result = runner.invoke(
        app,
        ["extract", str(tmp_path / "clips"), "--transcripts", str(csv_path), "--out", str(store),
         "--no-progress", "--option", "visual.detector=none", "--option", "visual.every=2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    fs = FeatureStore(store)
    # The audio-only clip has no lexical text: reported, not stored; the others are.
    assert len(fs) == 16
    errors = [json.loads(x) for x in (store / "errors.jsonl").read_text().splitlines()]
    assert [(e["id"], e["modality"]) for e in errors] == [("loose", "lexical")]
    cfg = {
        "data": {"store": str(store)},
        "model": TINY_MODEL,
        "loss": {"unlabeled": False},
        "train": {"batch_size": 4, "max_epochs": 1, "progress_bar": False},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["n"] == 4
