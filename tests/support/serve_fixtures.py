"""A real model bundle for the service's tests, and a uvicorn server running it on 127.0.0.1.

The bundle comes from the whole pipeline at miniature size: generated clips, the real
extractors (visual without face detection: the drawn faces fill the frame), a tiny model
trained for two epochs, ``emomatch.export``. It is built once per test session and shared by
tests/test_serve.py and tests/test_web.py through the session's temporary folder.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from emomatch.cli import app as cli
from emomatch.extract.mediawrite import write_video, write_wav
from emomatch.synthetic.media import (
    SAMPLE_RATE,
    make_speaker,
    profile_for,
    render_face_clip,
    synthesize_speech,
    write_media_corpus,
)
from tests.support.builders import TINY_MODEL

CLASSES = ["angry", "happy", "neutral", "sad"]


def _invoke(*args: object) -> None:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's bundle folder, built on first use."""
    import emomatch

    root = tmp_path_factory.getbasetemp() / "serve-bundle"
    bundle = root / "bundle"
    if (root / "done").exists():
        return bundle
    root.mkdir(exist_ok=True)
    manifest = write_media_corpus(
        root / "corpus",
        per_class_labeled=6,
        unlabeled=0,
        seed=5,
        seconds=1.0,
        fps=6,
        size=48,
        uninformative={"audio": 0.0, "video": 0.0, "text": 0.0},
    )
    _invoke(
        "extract", manifest, "--out", root / "store", "--no-progress",
        "--option", "visual.detector=none", "--option", "visual.every=2",
    )  # fmt: skip
    config = {
        "data": {"store": str(root / "store")},
        "model": TINY_MODEL,
        "loss": {"unlabeled": False},
        "train": {"batch_size": 8, "max_epochs": 2, "progress_bar": False},
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    _invoke("train", root / "tiny.yaml", "--out", root / "run")
    emomatch.export(root / "run", bundle)
    (root / "done").touch()
    return bundle


def make_clip(
    path: Path, label: str = "angry", seconds: float = 1.5, video: bool = False, seed: int = 0
) -> Path:
    """A generated utterance showing ``label``: a WAV, or with ``video`` an MP4 of the drawn
    face with the speech as its soundtrack."""
    rng = np.random.default_rng(seed)
    speaker = make_speaker(rng, "visitor", "test")
    profile = profile_for(label)
    audio, talking = synthesize_speech(rng, profile, speaker, seconds)
    if not video:
        return write_wav(path, audio, SAMPLE_RATE)
    frames = render_face_clip(rng, profile, speaker, talking, seconds, fps=6, size=48)
    return write_video(path, frames, fps=6, audio=audio, sample_rate=SAMPLE_RATE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(app: object, limit_concurrency: int | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        log_level="warning",
        limit_concurrency=limit_concurrency,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
