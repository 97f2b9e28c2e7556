"""Prediction benchmark: a model bundle applied to features in batches (encoders and classifier
only, no decoders) at the default extractors' dims and at the paper's dims, against the same
machine's dense matmul throughput measured in the same process; then the latency of one
5-second clip from file to label, model loaded, stage by stage.

    .venv/bin/python bench/predict.py [--batch 256] [--reps 5] [--threads N] [--no-clip]

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode over one batch; achieved FLOP/s
= counted FLOPs / median batch time, divided by a plain N x N matmul's FLOP/s measured between
the batches (shared machines are noisy: medians of interleaved runs). The weights are random:
throughput does not depend on them. Last line: ``predict_vs_matmul: <ratio>`` at the paper's
dims.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from emomatch.bundle import Bundle, Predictor
from emomatch.config import ModelConfig
from emomatch.model import EmotionModel, Normalizer
from emomatch.runtime import matmul_flops_per_s
from emomatch.synthetic.features import PAPER_SHAPES

LABELS = ["angry", "happy", "neutral", "sad"]


def random_bundle(features: dict[str, dict[str, Any]], seed: int = 0) -> Bundle:
    """A bundle in memory whose weights are a fresh model's (what `export` would write)."""
    torch.manual_seed(seed)
    shapes = {
        m: (f["dim"],) if f["kind"] == "vector" else (f["max_len"], f["dim"])
        for m, f in features.items()
    }
    cfg = ModelConfig()
    model = EmotionModel(shapes, len(LABELS), cfg)
    normalizer = Normalizer({m: s[-1] for m, s in shapes.items()})
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"normalizer.{k}": v for k, v in normalizer.state_dict().items()})
    meta = {
        "labels": LABELS,
        "modalities": list(model.modalities),
        "shapes": {m: list(s) for m, s in shapes.items()},
        "features": features,
        "members": [{"weights": "weights/seed_0.safetensors", "seed": seed}],
    }
    return Bundle("bench", meta, {"model": cfg.model_dump(mode="json")}, [tensors], {}, "")


def synthetic_features(shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[str, Any]]:
    return {
        m: {
            "kind": "vector" if len(s) == 1 else "sequence",
            "dim": s[-1],
            "max_len": 1 if len(s) == 1 else s[0],
            "extractor": {"name": "synthetic"},
        }
        for m, s in shapes.items()
    }


def throughput(
    name: str, shapes: dict[str, tuple[int, ...]], batch: int, reps: int, matmul_n: int
) -> float:
    """Prints utterances/s and FLOP/s of predict_features at these dims; returns the ratio to
    matmul."""
    predictor = Predictor(random_bundle(synthetic_features(shapes)))
    gen = np.random.default_rng(0)
    features = {m: gen.standard_normal((batch, *s)).astype(np.float32) for m, s in shapes.items()}
    # full sequences: the count is the most a batch can cost (padding is skipped when present)
    lengths = {m: np.full(batch, s[0] if len(s) == 2 else 1) for m, s in shapes.items()}
    predictor.predict_features(features, lengths)  # warm-up
    counter = FlopCounterMode(display=False)
    with counter:
        predictor.predict_features(features, lengths)
    flops = counter.get_total_flops()
    times, rates = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        predictor.predict_features(features, lengths)
        times.append(time.perf_counter() - t0)
        rates.append(matmul_flops_per_s(matmul_n, reps=3))
    batch_s = statistics.median(times)
    rate, matmul = flops / batch_s, statistics.median(rates)
    params = sum(p.numel() for p in predictor.ensemble.members[0][0].parameters())
    print(f"{name} dims {dict(shapes)}: {params / 1e6:.2f} M parameters (decoders unused)")
    print(
        f"  batch {batch}: {flops / batch / 1e9:.3f} GFLOP per utterance, median "
        f"{batch_s * 1e3:.1f} ms per batch, {batch / batch_s:.0f} utterances/s"
    )
    print(
        f"  {rate / 1e9:.1f} GFLOP/s achieved vs dense matmul {matmul_n}x{matmul_n} "
        f"{matmul / 1e9:.1f} GFLOP/s: ratio {rate / matmul:.3f}"
    )
    return rate / matmul


def clip_latency(reps: int) -> None:
    """One generated 5-second clip (video, its audio, its transcript), file to label, with the
    default extractors (openSMILE IS10, Haar + mini-Xception, MiniLM) and a model of their
    dims; stages timed one by one, then the whole `Predictor.predict`."""
    from dataclasses import asdict, replace

    import pandas as pd

    from emomatch.extract.base import Utterance
    from emomatch.extract.run import build_extractors
    from emomatch.synthetic.media import write_media_corpus

    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_media_corpus(
            Path(tmp), per_class_labeled=3, unlabeled=0, seconds=5.0, classes=("happy", "sad")
        )
        row = pd.read_csv(manifest, keep_default_na=False).iloc[0]
        video, audio = Path(tmp) / row["video"], Path(tmp) / row["audio"]
        extractors = build_extractors(["acoustic", "visual", "lexical"])
        features = {m: asdict(ex.spec()) for m, ex in extractors.items()}
        predictor = Predictor(random_bundle(features))
        item = Utterance(id="clip", audio=audio, video=video, text=str(row["text"]))
        predictor.predict(video=video, audio=audio, text=item.text)  # warm-up: models load
        stages: dict[str, list[float]] = {m: [] for m in predictor.modalities}
        stages["model (encoders + classifier)"] = []
        whole = []
        for _ in range(reps):
            got = {}
            for m, ex in predictor.extractors.items():
                t0 = time.perf_counter()
                got[m] = ex.extract([replace(item, start=None, end=None)])[0]
                stages[m].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            predictor.predict_features(
                {m: r.array[None] for m, r in got.items()},
                {m: np.array([r.length]) for m, r in got.items()},
            )
            stages["model (encoders + classifier)"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = predictor.predict(video=video, audio=audio, text=item.text)
            whole.append(time.perf_counter() - t0)
        names = {
            "acoustic": "acoustic: decode audio + openSMILE IS10",
            "visual": "visual: decode video + Haar faces + mini-Xception",
            "lexical": "lexical: MiniLM word vectors",
        }
        print(f"one 5 s clip, file to label (median of {reps}; modalities {result.modalities}):")
        for name, times in stages.items():
            print(f"  {names.get(name, name):<52} {1e3 * statistics.median(times):8.1f} ms")
        print(f"  {'whole Predictor.predict':<52} {1e3 * statistics.median(whole):8.1f} ms")
        from emomatch.extract.asr import Transcriber, asr_available

        if asr_available():
            speech_to_text = Transcriber()
            speech_to_text(audio)  # model load
            t0 = time.perf_counter()
            speech_to_text(audio)
            print(
                f"  {'(speech-to-text tiny.en, when no transcript)':<52} "
                f"{1e3 * (time.perf_counter() - t0):8.1f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="utterances per batch")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--matmul-n", type=int, default=1024)
    parser.add_argument("--clip", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU")
    from emomatch.extract.run import build_extractors

    default = {
        m: ex.spec().shape for m, ex in build_extractors(["acoustic", "visual", "lexical"]).items()
    }
    throughput("default extractors'", default, args.batch, args.reps, args.matmul_n)
    if args.clip:
        clip_latency(args.reps)
    ratio = throughput("paper's", dict(PAPER_SHAPES), args.batch, args.reps, args.matmul_n)
    print(f"predict_vs_matmul: {ratio:.3f}")


if __name__ == "__main__":
    main()
