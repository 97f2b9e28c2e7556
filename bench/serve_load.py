"""Load on `emomatch serve`: latency of one request, throughput under concurrent clients, and
what an overload does to memory (the bounded queue answers 503 instead of holding more).

    .venv/bin/python bench/serve_load.py BUNDLE [--workers 1] [--queue 8] [--clients 20]
        [--requests 60] [--burst 100]

The service runs in this process (uvicorn in a thread, real HTTP on 127.0.0.1) over BUNDLE, with
generated 1.5 s clips (WAV speech, MP4 of a drawn face without sound) from
emomatch.synthetic.media. Resident memory is sampled every 20 ms from /proc/self/status.
Last line: ``serve_p50_ms: <ms>`` (one WAV clip with a transcript, upload to label, one
request at a time).
"""

from __future__ import annotations

import argparse
import statistics
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
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    manifest = pd.read_csv(
        write_media_corpus(work, per_class_labeled=3, unlabeled=0, seconds=1.5, seed=11)
    )
    clips = [(work / row.audio, str(row.text), work / row.video) for row in manifest.itertuples()]

    predictors = load_predictors(args.bundle, args.workers, transcribe=False)

    @contextmanager
    def serving(queue: int) -> Iterator[str]:
        app = create_app(predictors, ServeSettings(queue=queue))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
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
    print(f"serve_p50_ms: {1000 * statistics.median(single):.0f}")


if __name__ == "__main__":
    main()
