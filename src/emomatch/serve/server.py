"""``emomatch serve``: load a bundle once per worker and run the service with uvicorn."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from emomatch.errors import EmomatchError
from emomatch.serve.app import ServeSettings, create_app
from emomatch.serve.protocols import PredictorLike
from emomatch.threads import available_cpus

log = logging.getLogger(__name__)


def load_predictors(
    bundle: str | Path, workers: int, device: str = "cpu", transcribe: bool | None = None
) -> list[PredictorLike]:
    """One predictor per worker, each with its own model and extractors (none is shared
    between threads, so none needs to be thread-safe)."""
    from emomatch.bundle import load

    if workers < 1:
        raise EmomatchError(f"--workers must be at least 1, got {workers}")
    # Loaded before torch is touched here: a bad bundle is refused without importing it.
    predictors = [load(bundle, device=device, transcribe=transcribe) for _ in range(workers)]
    if not os.environ.get("OMP_NUM_THREADS"):
        import torch

        # Workers run side by side: each gets its share of the cores instead of all of them.
        torch.set_num_threads(max(1, available_cpus() // workers))
    return list(predictors)


def server_config(
    app: Any, host: str, port: int, settings: ServeSettings, log_level: str = "info"
) -> Any:
    """uvicorn's settings for the service: its h11 protocol with the connection cap and the
    header deadline (:mod:`emomatch.serve.guard`); uploads in flight are capped by the app
    (``max_uploads``: each holds at most 1 MB in memory, the rest is spooled to disk)."""
    import uvicorn

    from emomatch.serve.guard import guarded_protocol

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=guarded_protocol(
            settings.max_connections, settings.read_timeout_s, settings.retry_after_s
        ),
    )


def run_server(
    bundle: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    settings: ServeSettings | None = None,
    device: str = "cpu",
    transcribe: bool | None = None,
) -> None:
    """Serve ``bundle`` until interrupted; a bundle that does not load fails here, before the
    port is opened."""
    import uvicorn

    settings = settings or ServeSettings()
    if not 0 <= port <= 65535:
        raise EmomatchError(f"--port must be 0 to 65535, got {port}")
    predictors = load_predictors(bundle, workers, device, transcribe)
    app = create_app(predictors, settings, host=host, port=port)
    log.info(
        "serving %s: %d worker(s), queue %d, page at http://%s:%d/",
        bundle,
        workers,
        settings.queue,
        host,
        port,
    )
    server = uvicorn.Server(server_config(app, host, port, settings))
    try:
        server.run()
    except (OSError, OverflowError) as exc:
        raise EmomatchError(f"cannot listen on {host}:{port}: {exc}") from None
