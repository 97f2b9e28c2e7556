"""The Python snippets of README.md and docs/api.md, run as written (as SpeechBrain runs its
docstring examples), so that a renamed function or argument fails here before a user copies it.

Each document's blocks run in order, in one namespace, inside a folder that holds what they name:
the tiny bundle of the service tests as ``bundles/demo``, generated clips under the names the
snippets use, a small store and ``configs/example.yaml`` training on it, and a running service
for the HTTP example (its address put in place of the documented one)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from emomatch.corpora import write_manifest
from tests.support.builders import TINY_MODEL
from tests.support.serve_fixtures import make_clip, running, tiny_bundle

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED_URL = "http://127.0.0.1:8000"


def python_blocks(path: Path) -> list[str]:
    """The ```python fenced blocks of a Markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M)


def test_the_block_reader_finds_every_block(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("text\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = a + 1\n```\n")
    assert python_blocks(doc) == ["a = 1\n", "b = a + 1\n"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, tiny_store: Path) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("docs")
    bundle = tiny_bundle(tmp_path_factory)
    shutil.copytree(bundle, root / "bundles" / "demo")
    make_clip(root / "clip.mp4", "angry", 1.5, video=True)
    make_clip(root / "meeting.mp4", "sad", 6.0, video=True, seed=1)
    make_clip(root / "call.wav", "happy", 16.0, seed=2)
    make_clip(root / "talk.wav", "neutral", 8.0, seed=3)
    rows = [
        {"id": "c1", "audio": "call.wav", "video": "", "text": "", "start": 1.0, "end": 3.0},
        {"id": "c2", "audio": "", "video": "clip.mp4", "text": "I can't believe it"},
    ]
    for row in rows:
        row.update({k: row.get(k, None) for k in ("start", "end")})
        row.update({"speaker": "s", "label": "", "split": "test"})
    write_manifest(pd.DataFrame(rows), root / "clips.csv")
    (root / "work").mkdir()
    (root / "work" / "store").symlink_to(tiny_store)
    (root / "configs").mkdir()
    config = {
        "data": {"store": "../work/store"},
        "model": TINY_MODEL,
        "train": {"batch_size": 16, "unlabeled_batch_size": 16, "max_epochs": 1},
    }
    (root / "configs" / "example.yaml").write_text(yaml.safe_dump(config))
    yield root


def run_blocks(doc: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch, **names: object) -> None:
    blocks = python_blocks(doc)
    assert blocks, f"{doc} has no python block"
    monkeypatch.chdir(cwd)
    namespace: dict[str, object] = {"__name__": "__snippet__", **names}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{doc.name}, python block {i + 1}", "exec"), namespace)
        except Exception as exc:  # the block's own text, so a failure says which one
            raise AssertionError(f"{doc.name}, python block {i + 1} failed:\n{block}") from exc


def test_readme_snippets_run(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_blocks(ROOT / "README.md", sandbox, monkeypatch)
    assert (sandbox / "runs" / "x" / "metrics.json").is_file()


def test_api_snippets_run(
    sandbox: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import emomatch
    from emomatch.serve import ServeSettings, create_app, load_predictors

    folder = tmp_path_factory.mktemp("api")
    for name in ("bundles", "clip.mp4", "meeting.mp4", "call.wav", "talk.wav", "clips.csv"):
        (folder / name).symlink_to(sandbox / name)
    shutil.copytree(sandbox / "configs", folder / "configs")
    (folder / "work").mkdir()
    (folder / "work" / "store").symlink_to((sandbox / "work" / "store").resolve())
    bundle = sandbox / "bundles" / "demo"
    p = emomatch.load(bundle)
    rng = np.random.default_rng(0)
    features = {m: rng.standard_normal((3, *p.shapes[m])).astype(np.float32) for m in p.shapes}
    lengths = {m: np.full(3, p.shapes[m][0]) for m in p.shapes if len(p.shapes[m]) == 2}
    api = ROOT / "docs" / "api.md"
    settings = ServeSettings(max_upload_mb=5.0, max_seconds=30.0, queue=4)
    with running(create_app(load_predictors(bundle, 1, transcribe=False), settings)) as url:
        text = api.read_text(encoding="utf-8").replace(DOCUMENTED_URL, url)
        local = folder / "api.md"
        local.write_text(text)
        run_blocks(
            local,
            folder,
            monkeypatch,
            x_a=features.get("acoustic"),
            x_l=features.get("lexical"),
            lengths_l=lengths.get("lexical"),
        )
    assert (folder / "bundles" / "x" / "bundle.json").is_file()
