"""The HTTP service: ``POST /predict``, ``GET /health``, the web page at ``/`` and the OpenAPI
page at ``/docs``.

A request is checked in order of cost (the first checks by the middleware of
:mod:`emomatch.serve.gate`): its declared size before its body is read (413), the
number of uploads in flight (503), the clip's media type before its content is looked at (415);
then it takes a place in the prediction pool (503 when none is left), where a probe opens,
measures and times the clip (422) before the predictor reads it: the probe's decoding is
bounded by the pool like the prediction's. A body that stalls or trickles past its deadline is
answered 408 and its connection closed; every refusal is JSON, a 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from emomatch.domain import __version__
from emomatch.errors import DataError, EmomatchError
from emomatch.serve.docs import add_offline_docs
from emomatch.serve.gate import OVERSIZE, HostCheck, UploadGate
from emomatch.serve.guard import is_loopback
from emomatch.serve.pool import PoolFull, PredictionPool
from emomatch.serve.probe import (
    ClipInfo,
    UnsupportedMediaType,
    UnusableClip,
    check_media_type,
    probe_clip,
)
from emomatch.serve.protocols import PredictionLike, PredictorLike

log = logging.getLogger(__name__)

_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")


@dataclass(frozen=True)
class ServeSettings:
    """The service's limits; every one is a command option of ``emomatch serve``."""

    #: largest request body accepted, MB (10**6 bytes)
    max_upload_mb: float = 50.0
    #: longest clip accepted, seconds
    max_seconds: float = 300.0
    #: requests that may wait for a busy worker; one more gets 503
    queue: int = 8
    #: clips longer than this also get emotion over time in windows of this width
    segment_seconds: float = 5.0
    #: longest transcript accepted, characters
    max_text_chars: int = 5000
    #: what a 503 answer tells clients to wait before trying again, seconds
    retry_after_s: int = 5
    #: a request's headers must arrive within this, and no pause in its body be longer, seconds
    read_timeout_s: float = 20.0
    #: a whole upload must arrive within this, seconds (50 MB in 300 s is 1.3 Mbit/s)
    upload_timeout_s: float = 300.0
    #: uploads being received at once; one more gets 503 (each holds up to 1 MB in memory)
    max_uploads: int = 32
    #: open connections; one more gets 503 at once
    max_connections: int = 256
    #: largest video frame a clip may have, pixels (4096 x 4096); a larger one gets 422
    max_frame_pixels: int = 4096 * 4096

    def __post_init__(self) -> None:
        problems = []
        if self.max_upload_mb <= 0:
            problems.append(f"max_upload_mb must be positive, got {self.max_upload_mb}")
        if self.max_seconds <= 0:
            problems.append(f"max_seconds must be positive, got {self.max_seconds}")
        if self.queue < 0:
            problems.append(f"queue must be 0 or more, got {self.queue}")
        if self.segment_seconds <= 0:
            problems.append(f"segment_seconds must be positive, got {self.segment_seconds}")
        if self.max_text_chars < 1:
            problems.append(f"max_text_chars must be at least 1, got {self.max_text_chars}")
        if self.retry_after_s < 1:
            problems.append(f"retry_after_s must be at least 1, got {self.retry_after_s}")
        for name in ("read_timeout_s", "upload_timeout_s"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_uploads", "max_connections", "max_frame_pixels"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if problems:
            raise EmomatchError("serve settings: " + "; ".join(problems))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


class SegmentOut(BaseModel):
    start: float | None = Field(description="window start, seconds from the clip's start")
    end: float | None = Field(description="window end, seconds")
    label: str | None = Field(description="null where nothing in the window could be used")
    probabilities: dict[str, float]
    modalities: list[str] = Field(description="modalities the window's prediction used")
    missing: dict[str, str] = Field(description="modalities not used, each with the reason")


class PredictionOut(BaseModel):
    label: str = Field(description="the most probable emotion")
    probabilities: dict[str, float] = Field(description="probability of each class")
    modalities: list[str] = Field(description="modalities the prediction used")
    missing: dict[str, str] = Field(
        description="modalities of the model not used, each with the reason"
    )
    seconds: float | None = Field(description="the clip's duration; null for text only")
    segments: list[SegmentOut] = Field(
        description="emotion over time in windows, for clips longer than the segment width"
    )


class HealthOut(BaseModel):
    status: str
    version: str
    labels: list[str]
    modalities: list[str]
    pool: dict[str, int]
    limits: dict[str, float]


def _segment(prediction: PredictionLike, named: Callable[[str], str]) -> SegmentOut:
    return SegmentOut(
        start=prediction.start,
        end=prediction.end,
        label=prediction.label,
        probabilities={k: float(v) for k, v in prediction.probabilities.items()},
        modalities=list(prediction.modalities),
        missing={m: named(r) for m, r in prediction.missing.items()},
    )


def _save_upload(upload: UploadFile, kind: str) -> Path:
    """Copy the upload to a file of its own in a new temporary folder (the predictor reads
    files by path; the suffix helps FFmpeg pick a demuxer)."""
    suffix = Path(upload.filename or "").suffix.lower()
    if not _SUFFIX.match(suffix):
        suffix = "." + kind.split("/", 1)[1].split("+", 1)[0] if "/" in kind else ""
        suffix = suffix if _SUFFIX.match(suffix) else ".bin"
    folder = Path(tempfile.mkdtemp(prefix="emomatch-upload-"))
    path = folder / f"clip{suffix}"
    try:
        with open(path, "wb") as fh:
            upload.file.seek(0)
            shutil.copyfileobj(upload.file, fh, 1 << 20)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return path


def _inputs(
    predictor_modalities: Sequence[str], info: ClipInfo | None, clip: Path | None, text: str | None
) -> dict[str, Any]:
    """The predictor's arguments: the clip as video and/or audio where the model uses that
    modality and the clip has the stream, the text where the model reads text."""
    have = set(predictor_modalities)
    kwargs: dict[str, Any] = {}
    if info is not None and clip is not None:
        if info.has_video and "visual" in have:
            kwargs["video"] = clip
        if info.has_audio and "acoustic" in have:
            kwargs["audio"] = clip
    if text and "lexical" in have:
        kwargs["text"] = text
    if kwargs:
        return kwargs
    offered = []
    if info is not None:
        offered += ["video"] if info.has_video else []
        offered += ["audio"] if info.has_audio else []
    offered += ["text"] if text else []
    raise UnusableClip(
        f"this model uses {', '.join(predictor_modalities)}; the request holds "
        f"{' and '.join(offered) or 'nothing'}, none of which it can use"
    )


def create_app(
    predictors: Sequence[PredictorLike],
    settings: ServeSettings | None = None,
    host: str | None = None,
    port: int | None = None,
) -> FastAPI:
    """The service over ``predictors`` (one per worker thread, all loaded from the same
    bundle; none is shared between threads). ``host`` and ``port``: where it listens; on the
    loopback address it answers requests for localhost only."""
    settings = settings or ServeSettings()
    if not predictors:
        raise EmomatchError("the service needs at least one loaded predictor")
    first = predictors[0]
    labels = list(first.labels)
    modalities = list(first.modalities)
    pool: PredictionPool[PredictorLike] = PredictionPool(predictors, settings.queue)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pool.start()
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(
        title="emomatch",
        version=__version__,
        description=(
            "Emotion recognition from a clip (audio or video) and/or its transcript with a "
            f"model bundle. Classes: {', '.join(labels)}. Modalities: {', '.join(modalities)}."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    add_offline_docs(app)
    static = resources.files("emomatch.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    busy_headers = {"Retry-After": str(settings.retry_after_s)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (static / "index.html").read_text(encoding="utf-8")

    @app.get("/health", response_model=HealthOut)
    def health() -> HealthOut:
        """The model's classes and modalities, the workers' load and the upload limits."""
        return HealthOut(
            status="ok",
            version=__version__,
            labels=labels,
            modalities=modalities,
            pool=pool.stats(),
            limits={
                "max_upload_mb": settings.max_upload_mb,
                "max_seconds": settings.max_seconds,
                "segment_seconds": settings.segment_seconds,
                "max_text_chars": settings.max_text_chars,
            },
        )

    @app.post(
        "/predict",
        response_model=PredictionOut,
        responses={
            413: {"description": "upload larger than the limit"},
            415: {"description": "the clip is not audio or video"},
            422: {"description": "empty, corrupt or too long clip, or nothing usable sent"},
            503: {"description": "all workers busy and the queue full; see Retry-After"},
        },
    )
    async def predict(
        request: Request,
        clip: Annotated[
            UploadFile | None, File(description="audio or video file (WAV, MP3, MP4, WebM, ...)")
        ] = None,
        text: Annotated[str | None, Form(description="transcript of the clip, or text alone")] = (
            None
        ),
    ) -> PredictionOut:
        """Predict the emotion of a clip, its transcript, or both."""
        if request.scope.get(OVERSIZE):
            raise HTTPException(413, f"upload larger than {settings.max_upload_mb:g} MB")
        text = (text or "").strip() or None
        if text is not None and len(text) > settings.max_text_chars:
            raise HTTPException(
                422,
                f"text: {len(text)} characters, more than this service's limit of "
                f"{settings.max_text_chars}",
            )
        # Browsers send an empty file part when no file was chosen.
        if clip is not None and not clip.filename and not clip.size:
            clip = None
        if clip is None and text is None:
            raise HTTPException(422, "send a clip (form field 'clip'), a 'text', or both")
        path: Path | None = None
        if clip is not None:
            try:
                kind = check_media_type(clip.content_type, clip.filename)
            except UnsupportedMediaType as exc:
                raise HTTPException(415, str(exc)) from None
            path = await run_in_threadpool(_save_upload, clip, kind)
        else:
            try:
                _inputs(modalities, None, None, text)
            except UnusableClip as exc:
                raise HTTPException(422, str(exc)) from None
        shown = (clip.filename if clip is not None else None) or "upload"

        def named(message: str) -> str:
            # The predictor's reasons name the file it read: the service's temporary copy.
            return message.replace(str(path), shown) if path is not None else message

        def work(predictor: PredictorLike) -> PredictionOut:
            # The probe decodes (a first frame, every packet's time): it runs here, in the
            # bounded pool, so that no number of uploads decodes more at once than it admits.
            info: ClipInfo | None = None
            if path is not None:
                info = probe_clip(
                    path, settings.max_seconds, shown, max_pixels=settings.max_frame_pixels
                )
            kwargs = _inputs(modalities, info, path, text)
            long_clip = info is not None and info.seconds > settings.segment_seconds
            whole = predictor.predict(**kwargs)
            if whole.label is None:
                reasons = "; ".join(f"{m}: {r}" for m, r in whole.missing.items())
                raise DataError(f"nothing in the request could be used ({reasons})")
            windows = (
                predictor.predict_segments(**kwargs, width=settings.segment_seconds)
                if long_clip
                else []
            )
            return PredictionOut(
                label=whole.label,
                probabilities={k: float(v) for k, v in whole.probabilities.items()},
                modalities=list(whole.modalities),
                missing={m: named(r) for m, r in whole.missing.items()},
                seconds=None if info is None else round(info.seconds, 3),
                segments=[_segment(w, named) for w in windows],
            )

        try:
            return await pool.run(work, cleanup=lambda: _remove(path))
        except PoolFull as exc:
            _remove(path)
            raise HTTPException(503, f"{exc}; try again shortly", headers=busy_headers) from None
        except UnusableClip as exc:
            raise HTTPException(422, str(exc)) from None
        except EmomatchError as exc:
            raise HTTPException(422, named(str(exc))) from None

    # Outermost but for Starlette's error handler: it sees the raw body stream.
    app.add_middleware(
        UploadGate,
        max_bytes=settings.max_upload_bytes,
        pool=pool,
        retry=settings.retry_after_s,
        max_uploads=settings.max_uploads,
        read_timeout=settings.read_timeout_s,
        upload_timeout=settings.upload_timeout_s,
    )
    if host is not None and is_loopback(host):
        app.add_middleware(HostCheck, port=port)
    app.state.settings = asdict(settings)
    return app


def _remove(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path.parent, ignore_errors=True)
