"""Load on `emomatch serve`: latency of one request, throughput under concurrent clients, and
what an overload does to memory (the bounded queue answers 503 instead of holding more).

    .venv/bin/python bench/serve_load.py BUNDLE [--workers 1] [--queue 8] [--clients 20]
        [--requests 60] [--burst 100] [--held 60] [--large 6] [--hostile-only]

The service runs in this process (uvicorn in a thread, real HTTP on 127.0.0.1) over BUNDLE, with
generated 1.5 s clips (WAV speech, MP4 of a drawn face without sound) from
emomatch.synthetic.media. Resident memory is sampled every 20 ms from /proc/self/status.
Hostile clients last: ``--held`` connections that send an upload's headers and then wait
(``/health`` is asked meanwhile), ``--large`` uploads at once of a 12000 x 12000 JPEG declared
``video/mp4``, and an MP3 whose header understates its length (1 s at 320 kbit/s, then 600 s at
32 kbit/s) against ``--max-seconds 300``.
Last line: ``serve_p50_ms: <ms>`` (one WAV clip with a transcript, upload to label, one
request at a time).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx
import pandas as pd
import uvicorn

from emomatch.serve import ServeSettings, create_app, load_predictors
from emomatch.serve.server import server_config
from emomatch.synthetic.media import write_media_corpus


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakMemory:
    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--queue", type=int, default=8)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--held", type=int, default=60)
    parser.add_argument("--large", type=int, default=6)
    parser.add_argument("--hostile-only", action="store_true", help="only the hostile clients")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    manifest = pd.read_csv(
        write_media_corpus(work, per_class_labeled=3, unlabeled=0, seconds=1.5, seed=11)
    )
    clips = [(work / row.audio, str(row.text), work / row.video) for row in manifest.itertuples()]

    predictors = load_predictors(args.bundle, args.workers, transcribe=False)

    @contextmanager
    def serving(queue: int, **limits: float) -> Iterator[str]:
        settings = ServeSettings(queue=queue, **limits)  # type: ignore[arg-type]
        app = create_app(predictors, settings, host="127.0.0.1")
        server = uvicorn.Server(server_config(app, "127.0.0.1", 0, settings, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}/predict"
        finally:
            server.should_exit = True
            thread.join()

    def post(url: str, i: int, video: bool = False) -> tuple[int, float]:
        audio, text, mp4 = clips[i % len(clips)]
        path = mp4 if video else audio
        kind = "video/mp4" if video else "audio/wav"
        began = time.perf_counter()
        r = httpx.post(
            url, files={"clip": (path.name, path.read_bytes(), kind)}, data={"text": text},
            timeout=600,
        )  # fmt: skip
        return r.status_code, time.perf_counter() - began

    if args.hostile_only:
        hostile(serving, work, args.held, args.large)
        return

    # Every request of the load phase is admitted: it measures throughput, not refusals.
    with serving(args.clients) as url:
        post(url, 0)  # warm-up: first use of each extractor
        single = [post(url, i)[1] for i in range(10)]
        single_video = [post(url, i, video=True)[1] for i in range(5)]
        print(f"one WAV clip (speech) + text: p50 {1000 * statistics.median(single):.0f} ms")
        print(f"one MP4 clip (face, no sound) + text: p50 "
              f"{1000 * statistics.median(single_video):.0f} ms")  # fmt: skip
        began = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(partial(post, url), range(args.requests)))
        wall = time.perf_counter() - began
    codes = Counter(code for code, _ in results)
    times = sorted(t for _, t in results)
    p50, p95 = times[len(times) // 2], times[int(0.95 * (len(times) - 1))]
    print(
        f"{args.requests} WAV + text requests from {args.clients} clients (workers "
        f"{args.workers}): {dict(codes)}, {args.requests / wall:.1f} req/s, latency p50 "
        f"{1000 * p50:.0f} ms, p95 {1000 * p95:.0f} ms"
    )

    with serving(args.queue) as url:
        before = rss_mb()
        with PeakMemory() as memory, ThreadPoolExecutor(args.burst) as pool:
            burst = list(pool.map(partial(post, url), range(args.burst)))
    codes = Counter(code for code, _ in burst)
    print(
        f"burst of {args.burst} at once (workers {args.workers}, queue {args.queue}): "
        f"{dict(codes)}; resident memory {before:.0f} MB before, peak {memory.peak:.0f} MB "
        f"(+{memory.peak - before:.0f})"
    )
    hostile(serving, work, args.held, args.large)
    print(f"serve_p50_ms: {1000 * statistics.median(single):.0f}")


def _half_sent(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=xx\r\nContent-Length: 1000000\r\n\r\n"
        + b'--xx\r\nContent-Disposition: form-data; name="clip"; filename="a.wav"\r\n\r\nRIFF'
    )
    return sock


def _lying_mp3(path: Path) -> Path:
    """1 s of MP3 at 320 kbit/s, then 600 s at 32 kbit/s, ID3 tags dropped: FFmpeg estimates
    the length from the first frames' rate."""
    import av
    import numpy as np

    parts = []
    for seconds, rate in ((1.0, 320_000), (600.0, 32_000)):
        part = path.with_suffix(f".{rate}.mp3")
        with av.open(str(part), "w", format="mp3") as out:
            stream = out.add_stream("libmp3lame", rate=44100)
            stream.bit_rate = rate
            n = int(44100 * seconds)
            for i in range(0, n, 44100):
                t = np.arange(i, min(n, i + 44100))
                tone = (0.3 * np.sin(t * 2 * np.pi * 440 / 44100)).astype(np.float32)[None]
                frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                frame.sample_rate = 44100
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        data = part.read_bytes()
        if data[:3] == b"ID3":
            data = data[10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10])) :]
        parts.append(data)
    path.write_bytes(b"".join(parts))
    return path


def hostile(serving, work: Path, held: int, large: int) -> None:  # type: ignore[no-untyped-def]
    """Clients that hold, lie and overload: what the service answers and what it costs."""
    big = work / "big.jpg"
    # made in another process: the 432 MB frame would count in this one's memory
    subprocess.run(
        [sys.executable, "-c", "import sys, numpy as np, cv2; "
         "cv2.imwrite(sys.argv[1], np.tile(np.arange(12000, dtype=np.uint8)[:, None, None], "
         "(1, 12000, 3)))", str(big)],
        check=True,
    )  # fmt: skip
    with serving(8, read_timeout_s=5.0) as url:
        base = url.removesuffix("/predict")
        port = int(base.rsplit(":", 1)[1])
        before = rss_mb()
        with PeakMemory() as memory:
            socks = [_half_sent(port) for _ in range(held)]
            health = []
            for _ in range(10):
                began = time.perf_counter()
                code = httpx.get(f"{base}/health", timeout=30).status_code
                health.append((code, time.perf_counter() - began))
            answers = Counter()
            for sock in socks:
                sock.settimeout(30)
                head = sock.recv(64).split(b" ", 2)
                answers[int(head[1]) if len(head) > 1 else 0] += 1
                sock.close()
        codes = Counter(c for c, _ in health)
        print(
            f"{held} half-sent uploads held: /health {dict(codes)}, p50 "
            f"{1000 * statistics.median(t for _, t in health):.0f} ms; the uploads answered "
            f"{dict(answers)}; resident memory {before:.0f} -> peak {memory.peak:.0f} MB"
        )
        data = big.read_bytes()
        before = rss_mb()
        with PeakMemory() as memory, ThreadPoolExecutor(large) as pool:
            results = list(
                pool.map(
                    lambda _: httpx.post(
                        url, files={"clip": ("big.mp4", data, "video/mp4")}, timeout=600
                    ),
                    range(large),
                )
            )
        print(
            f"{large} uploads at once of a 12000x12000 JPEG ({len(data) / 1e6:.1f} MB) as "
            f"video/mp4: {dict(Counter(r.status_code for r in results))}, "
            f'"{results[0].json()["detail"][:60]}..."; resident memory {before:.0f} -> peak '
            f"{memory.peak:.0f} MB"
        )
    lying = _lying_mp3(work / "lying.mp3")
    with serving(8, max_seconds=300.0) as url:
        began = time.perf_counter()
        r = httpx.post(url, files={"clip": ("lying.mp3", lying.read_bytes(), "audio/mpeg")})
        print(
            f"MP3 of 601 s whose header says less, --max-seconds 300: {r.status_code} in "
            f'{1000 * (time.perf_counter() - began):.0f} ms ("{r.json()["detail"][:70]}")'
        )


if __name__ == "__main__":
    main()
