"""The HTTP service through real HTTP on 127.0.0.1, over a bundle of a tiny model trained here:
good clips, text alone, every bad upload answered with the right 4xx before any work, a full
queue answered 503, 20 concurrent requests all answered."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from emomatch.errors import EmomatchError
from emomatch.serve import ServeSettings, create_app, load_predictors
from emomatch.serve.probe import media_type
from tests.support.serve_fixtures import CLASSES, make_clip, running, tiny_bundle

LIMITS = ServeSettings(max_upload_mb=1.0, max_seconds=8.0, queue=20, segment_seconds=2.0)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def url(bundle: Path) -> object:
    predictors = load_predictors(bundle, workers=2, transcribe=False)
    with running(create_app(predictors, LIMITS)) as base:
        yield base


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "wav": make_clip(folder / "short.wav", "angry", 1.5),
        "mp4": make_clip(folder / "face.mp4", "happy", 1.5, video=True),
        "long": make_clip(folder / "long.wav", "sad", 5.0),
        "too_long": make_clip(folder / "too_long.wav", "sad", 9.0),
    }


def post(
    url: str, clip: Path | None = None, text: str | None = None, **kw: object
) -> httpx.Response:
    files = None
    if clip is not None:
        kind = kw.pop("kind", None) or ("video/mp4" if clip.suffix == ".mp4" else "audio/wav")
        files = {"clip": (kw.pop("name", clip.name), clip.read_bytes(), kind)}
    data = {"text": text} if text is not None else None
    return httpx.post(f"{url}/predict", files=files, data=data, timeout=120)


def check_prediction(body: dict, modalities: list[str]) -> None:
    assert body["label"] in CLASSES
    assert sorted(body["probabilities"]) == sorted(CLASSES)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["modalities"] == modalities


def uploads_left() -> list[str]:
    return [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("emomatch-upload-")]


def test_health(url: str) -> None:
    body = httpx.get(f"{url}/health").json()
    assert body["status"] == "ok"
    assert body["labels"] == CLASSES
    assert body["modalities"] == ["acoustic", "visual", "lexical"]
    assert body["pool"] == {"workers": 2, "busy": 0, "waiting": 0, "capacity": 22}
    assert body["limits"]["max_upload_mb"] == 1.0


def test_audio_clip(url: str, clips: dict[str, Path]) -> None:
    response = post(url, clips["wav"])
    assert response.status_code == 200, response.text
    body = response.json()
    check_prediction(body, ["acoustic"])
    assert body["seconds"] == pytest.approx(1.5, abs=0.05)
    assert body["segments"] == []
    # The reasons name the upload, never the service's temporary copy.
    assert set(body["missing"]) == {"visual", "lexical"}
    assert "emomatch-upload" not in response.text


def test_video_with_soundtrack_and_text(url: str, clips: dict[str, Path]) -> None:
    response = post(url, clips["mp4"], text="What a wonderful day, I love it!")
    assert response.status_code == 200, response.text
    check_prediction(response.json(), ["acoustic", "visual", "lexical"])


def test_text_only(url: str) -> None:
    response = post(url, text="This is unfair, I am furious!")
    assert response.status_code == 200, response.text
    body = response.json()
    check_prediction(body, ["lexical"])
    assert body["seconds"] is None


def test_long_clip_gets_segments(url: str, clips: dict[str, Path]) -> None:
    response = post(url, clips["long"])
    assert response.status_code == 200, response.text
    body = response.json()
    check_prediction(body, ["acoustic"])
    windows = [(s["start"], s["end"]) for s in body["segments"]]
    assert windows == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]
    for segment in body["segments"]:
        assert segment["label"] == max(segment["probabilities"], key=segment["probabilities"].get)


def test_wrong_media_type_415(url: str, tmp_path: Path) -> None:
    page = tmp_path / "notes.txt"
    page.write_text("not a recording")
    response = post(url, page, kind="text/plain")
    assert response.status_code == 415
    assert "notes.txt" in response.json()["detail"]
    assert "not audio or video" in response.json()["detail"]
    # No declared type: the name's extension decides.
    image = tmp_path / "face.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    assert post(url, image, kind="application/octet-stream").status_code == 415


def test_empty_clip_422(url: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    response = post(url, empty)
    assert response.status_code == 422
    assert "empty.wav: empty file" in response.json()["detail"]


def test_corrupt_clip_422(url: str, tmp_path: Path, clips: dict[str, Path]) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(os.urandom(20_000))
    response = post(url, junk)
    assert response.status_code == 422
    assert "junk.wav: corrupt or not a media file" in response.json()["detail"]
    # A real MP4 cut short: its index is gone.
    data = clips["mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    response = post(url, cut)
    assert response.status_code == 422
    assert "cut.mp4" in response.json()["detail"]


def test_too_long_clip_422(url: str, clips: dict[str, Path]) -> None:
    response = post(url, clips["too_long"])
    assert response.status_code == 422
    assert "9.0 s is longer than this service's limit of 8 s" in response.json()["detail"]


def test_too_large_413(url: str, tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(os.urandom(1_200_000))
    response = post(url, big)
    assert response.status_code == 413
    assert "limit of 1 MB" in response.json()["detail"]


def test_too_large_without_length_413(url: str, clips: dict[str, Path]) -> None:
    """A body sent in chunks declares no size: it is counted as it arrives and cut off."""
    request = httpx.Request(
        "POST", f"{url}/predict", files={"clip": ("x.wav", os.urandom(1_500_000), "audio/wav")}
    )
    body = request.read()

    def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    headers = {"content-type": request.headers["content-type"]}
    response = httpx.post(f"{url}/predict", content=chunks(), headers=headers, timeout=60)
    assert response.status_code == 413
    # The connection is still good for the next request.
    assert post(url, clips["wav"]).status_code == 200


def test_nothing_sent_422(url: str) -> None:
    response = httpx.post(f"{url}/predict", data={"text": "  "})
    assert response.status_code == 422
    assert "send a clip" in response.json()["detail"]


def test_text_too_long_422(url: str) -> None:
    response = post(url, text="word " * 2000)
    assert response.status_code == 422
    assert "limit of 5000" in response.json()["detail"]


def test_twenty_concurrent_requests_all_answered(url: str, clips: dict[str, Path]) -> None:
    def one(i: int) -> httpx.Response:
        if i % 3 == 0:
            return post(url, text="so happy and glad today")
        return post(url, clips["wav" if i % 3 == 1 else "mp4"])

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(one, range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    for r in responses:
        assert r.json()["label"] in CLASSES
    assert uploads_left() == []
    assert httpx.get(f"{url}/health").json()["pool"]["busy"] == 0


def test_full_queue_answers_503_with_retry_after(bundle: Path, clips: dict[str, Path]) -> None:
    predictors = load_predictors(bundle, workers=1, transcribe=False)
    settings = ServeSettings(queue=0, retry_after_s=7)
    with running(create_app(predictors, settings)) as base, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: post(base, clips["long"]), range(8)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 503}, codes
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "7"
            assert "busy" in r.json()["detail"]
    assert uploads_left() == []


def test_upload_removed_when_the_client_goes_away(url: str, clips: dict[str, Path]) -> None:
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            f"{url}/predict",
            files={"clip": ("long.wav", clips["long"].read_bytes(), "audio/wav")},
            timeout=httpx.Timeout(10, read=0.05),
        )
    deadline = time.monotonic() + 30
    while uploads_left() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert uploads_left() == []
    assert post(url, clips["wav"]).status_code == 200


def test_openapi_page(url: str) -> None:
    assert httpx.get(f"{url}/docs").status_code == 200
    schema = httpx.get(f"{url}/openapi.json").json()
    form = schema["paths"]["/predict"]["post"]
    assert {"413", "415", "422", "503"} <= set(form["responses"])


def test_media_type_from_declaration_or_name() -> None:
    assert media_type("audio/webm;codecs=opus", "recording.webm") == "audio/webm"
    assert media_type("application/octet-stream", "clip.WEBM") == "video/webm"
    assert media_type(None, "take.wav").startswith("audio/")
    assert media_type("", "notes") == ""


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(EmomatchError, match="queue must be 0 or more"):
        ServeSettings(queue=-1)
    with pytest.raises(EmomatchError, match="max_upload_mb must be positive"):
        ServeSettings(max_upload_mb=0)


def test_serve_command_refuses_a_missing_bundle(tmp_path: Path) -> None:
    command = Path(sys.executable).with_name("emomatch")
    result = subprocess.run(
        [str(command), "serve", str(tmp_path / "nowhere"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2
    assert "error:" in result.stderr and "nowhere" in result.stderr
