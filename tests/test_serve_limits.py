"""The service bounds what a client controls: slow and half-sent requests, connections, the
``Host`` header, frame sizes and durations that a file's header lies about."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from emomatch.extract.mediawrite import write_video
from emomatch.serve import ServeSettings, create_app
from emomatch.serve.probe import UnusableClip, probe_clip
from emomatch.serve.server import server_config
from tests.support.serve_fixtures import free_port, make_clip

LABELS = ["angry", "happy"]


@dataclass
class _Answer:
    label: str | None = "happy"
    probabilities: dict[str, float] = field(default_factory=lambda: {"angry": 0.4, "happy": 0.6})
    modalities: list[str] = field(default_factory=lambda: ["acoustic"])
    missing: dict[str, str] = field(default_factory=dict)
    start: float | None = None
    end: float | None = None


class _Predictor:
    """Stands in for a loaded bundle: the limits under test are the service's, not the
    model's. ``pause`` makes each prediction take that long."""

    labels = LABELS
    modalities = ["acoustic", "lexical"]

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause

    def predict(self, **kwargs: object) -> _Answer:
        time.sleep(self.pause)
        return _Answer()

    def predict_segments(self, **kwargs: object) -> list[_Answer]:
        return []


@contextmanager
def serving(settings: ServeSettings, pause: float = 0.0, host: str = "127.0.0.1") -> Iterator[int]:
    """The service as `emomatch serve` runs it (its uvicorn settings), in a thread."""
    import uvicorn

    port = free_port()
    app = create_app([_Predictor(pause)], settings, host=host, port=port)
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, settings, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _half_sent_upload(port: int) -> socket.socket:
    """A client that sends an upload's headers and the start of its body, then waits."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /predict HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{port}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=xx\r\n"
        b"Content-Length: 100000\r\n\r\n"
        b'--xx\r\nContent-Disposition: form-data; name="clip"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF"
    )
    return sock


def _answer(sock: socket.socket, timeout: float = 15.0) -> tuple[int, dict[str, str], dict]:
    """Status, headers and JSON body of the answer on a raw socket, read until it closes."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_health_answers_while_60_clients_hold_half_sent_uploads() -> None:
    settings = ServeSettings(read_timeout_s=3.0, max_uploads=8, retry_after_s=9)
    with serving(settings) as port:
        held = [_half_sent_upload(port) for _ in range(60)]
        t0 = time.monotonic()
        for _ in range(5):
            r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "ok"
        assert time.monotonic() - t0 < 2.5  # all within the time the uploads are held
        answers = [_answer(sock) for sock in held]
        codes = sorted(code for code, _, _ in answers)
        # eight were being received and timed out; the rest were refused at once
        assert codes == [408] * 8 + [503] * 52, codes
        for code, headers, body in answers:
            assert headers["content-type"] == "application/json"
            assert code == 408 or headers["retry-after"] == "9"
            assert "detail" in body
        r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert r.json()["pool"]["busy"] == 0


def test_headers_that_never_finish_get_408_and_are_closed() -> None:
    with serving(ServeSettings(read_timeout_s=0.5)) as port:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /hea")
        t0 = time.monotonic()
        code, headers, body = _answer(sock)
        assert code == 408 and "headers" in body["detail"]
        assert time.monotonic() - t0 < 5


def test_connections_past_the_cap_get_a_json_503_with_retry_after() -> None:
    with serving(ServeSettings(max_connections=4, retry_after_s=3)) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        time.sleep(0.2)
        code, headers, body = _answer(socket.create_connection(("127.0.0.1", port)))
        assert code == 503 and headers["retry-after"] == "3" and "connections" in body["detail"]
        for sock in idle:
            sock.close()
        deadline = time.monotonic() + 5
        while True:  # the server notices the closed connections on its next loop turn
            r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.status_code == 200


def test_host_header_is_checked_on_the_loopback_address() -> None:
    with serving(ServeSettings()) as port:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").status_code == 200
        assert httpx.get(f"{base}/health", headers={"Host": f"localhost:{port}"}).status_code == 200
        rebound = httpx.get(f"{base}/health", headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 421 and "localhost" in rebound.json()["detail"]
    # listening on every address, the service has names of its own: no check
    with serving(ServeSettings(), host="0.0.0.0") as port:
        r = httpx.get(f"http://127.0.0.1:{port}/health", headers={"Host": "emotions.lab:80"})
        assert r.status_code == 200


def test_host_names_allowed_on_loopback() -> None:
    from emomatch.serve.guard import host_allowed, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert host_allowed(b"localhost:8000", 8000) and host_allowed(b"[::1]:8000", 8000)
    assert not host_allowed(b"localhost:8001", 8000)
    # a port the OS chose (0): any port of a local name
    assert host_allowed(b"127.0.0.1:41234", 0) and not host_allowed(b"evil.example:41234", 0)
    assert not host_allowed(b"127.0.0.1.evil.example", 8000)


def test_large_frames_are_refused_before_they_are_decoded(tmp_path: Path) -> None:
    frames = np.zeros((2, 64, 96, 3), dtype=np.uint8)
    clip = write_video(tmp_path / "wide.mp4", frames, fps=4)
    with pytest.raises(UnusableClip, match="96x64 pixels"):
        probe_clip(clip, 60, max_pixels=64 * 64)
    assert probe_clip(clip, 60, max_pixels=96 * 64).has_video


def _mp3(path: Path, seconds: float, bit_rate: int) -> bytes:
    with av.open(str(path), "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=44100)
        stream.bit_rate = bit_rate
        n = int(44100 * seconds)
        tone = (0.3 * np.sin(np.arange(n) * 2 * np.pi * 440 / 44100)).astype(np.float32)
        for i in range(0, n, 1152):
            frame = av.AudioFrame.from_ndarray(
                tone[None, i : i + 1152], format="fltp", layout="mono"
            )
            frame.sample_rate = 44100
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = path.read_bytes()
    if data[:3] == b"ID3":  # drop the tag (its size: 4 bytes of 7 bits each after 6 bytes)
        size = sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10]))
        data = data[10 + size :]
    return data


def test_a_duration_the_header_understates_is_measured(tmp_path: Path) -> None:
    """Two MP3s end to end, a short one at 320 kbit/s first: FFmpeg estimates the whole
    file's length from the first frames' rate (about 4 s) although it plays for 21 s."""
    first = _mp3(tmp_path / "a.mp3", 1.0, 320_000)
    second = _mp3(tmp_path / "b.mp3", 20.0, 32_000)
    lying = tmp_path / "lying.mp3"
    lying.write_bytes(first + second)
    with av.open(str(lying)) as container:
        assert container.duration is not None and container.duration / 1e6 < 10
    with pytest.raises(UnusableClip, match=r"limit of 10 s \(its header says [0-9.]+ s\)"):
        probe_clip(lying, 10)
    assert 20 < probe_clip(lying, 60).seconds < 22


def test_probes_run_inside_the_bounded_pool(tmp_path: Path, monkeypatch) -> None:
    """However many uploads arrive, no more clips are opened and decoded at once than the
    pool admits (one worker, no queue: one)."""
    import emomatch.serve.app as service

    running = 0
    most = 0
    guard = threading.Lock()
    real = service.probe_clip

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.2)
            return real(*args, **kwargs)
        finally:
            with guard:
                running -= 1

    monkeypatch.setattr(service, "probe_clip", counted)
    clip = make_clip(tmp_path / "a.wav", seconds=1.0).read_bytes()
    with serving(ServeSettings(queue=0), pause=0.2) as port:

        def post(_: int) -> int:
            files = {"clip": ("a.wav", clip, "audio/wav")}
            return httpx.post(
                f"http://127.0.0.1:{port}/predict", files=files, timeout=30
            ).status_code

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(6) as pool:
            codes = sorted(pool.map(post, range(6)))
    assert 200 in codes and set(codes) <= {200, 503}, codes
    assert most == 1
