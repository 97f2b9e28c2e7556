"""The lexical branch on real MELD text: L-only emomatch vs logistic regressions, epoch time.

    .venv/bin/python bench/meld_lexical.py [--root ../shared/data/meld] [--work runs/meld_lexical]
                                           [--config configs/meld.yaml] [--epochs N] [--seeds 3]
                                           [--set KEY=VALUE ...]

MELD's official test split is held back on these machines, so: train on the official train split
minus 10 % of its dialogues (validation: model selection, and the C of each logistic
regression), test on the official dev split. Features: the MELD recipe's text model (``--model``,
default ``mpnet``: all-mpnet-base-v2, 768-d, installed by ``make text-mpnet``; ``--model minilm``
for the package default, MiniLM-L6, 384-d) with the recipe's position count (``--max-words``,
24). Prints weighted F1 (MELD's metric) on dev for

- emomatch's L-only model, trained with the MELD recipe's model, loss and train settings
  (``--config``, default ``configs/meld.yaml``; ``--config none`` for the package defaults;
  ``--set`` overrides either);
- a logistic regression on emomatch's own store (word vectors mean-pooled over valid positions);
- a logistic regression on the text model's mean over all tokens of its last 4 layers, the
  plain sentence-embedding baseline (printed with C chosen on validation and on dev);
- an MLP on that token mean (3 seeds and their ensemble; ``--no-mlp`` skips it);

and the training epoch time (train loop, and with validation). Last line
``meld_dev_weighted_f1: <emomatch, in points>``. Extraction, the token means and a finished
training run are kept in ``--work``, so a rerun only redoes what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from emomatch.config import ExperimentConfig, config_from_dict, load_config, parse_overrides
from emomatch.corpora import prepare_corpus, read_manifest, write_manifest
from emomatch.errors import DataError
from emomatch.extract.lexical import TransformerWordExtractor
from emomatch.extract.run import build_extractors, run_extraction
from emomatch.runs import train_and_report
from emomatch.store import FeatureStore

CS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


class EpochTimer(pl.Callback):
    """Wall time of each training epoch: the train loop alone, and with its validation."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.whole: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # Lightning validates before this hook, so the whole epoch ends here.
        self.whole.append(time.perf_counter() - self._start)

    def on_validation_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if hasattr(self, "_start") and len(self.train) == len(self.whole):
            self.train.append(time.perf_counter() - self._start)


def split_manifest(root: Path, work: Path) -> Path:
    prepared = prepare_corpus("meld", root, work / "prepared")
    df = read_manifest(prepared.manifest).drop(columns="_line")
    # Official dev becomes the test split; 10 % of the training dialogues select the model.
    dialogues = sorted({i.split("_utt")[0] for i in df.loc[df["split"] == "train", "id"]})
    rng = np.random.default_rng(0)
    held = set(rng.choice(dialogues, size=len(dialogues) // 10, replace=False).tolist())
    is_train = df["split"] == "train"
    df.loc[df["split"] == "validation", "split"] = "test"
    df.loc[is_train & df["id"].map(lambda i: i.split("_utt")[0] in held), "split"] = "validation"
    print("utterances per split:", {k: int(v) for k, v in df["split"].value_counts().items()})
    return write_manifest(df, work / "manifest.csv")


def logistic_regression(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict[str, Any]:
    """z-normalised features; C chosen on validation (and, for reference, on test)."""
    scaler = StandardScaler().fit(x["train"])
    xs = {k: scaler.transform(v) for k, v in x.items()}
    scores = []
    for c in CS:
        clf = LogisticRegression(max_iter=3000, C=c).fit(xs["train"], y["train"])
        val = f1_score(y["validation"], clf.predict(xs["validation"]), average="weighted")
        test = f1_score(y["test"], clf.predict(xs["test"]), average="weighted")
        scores.append((val, test, c))
    val, test, c = max(scores)
    best_test, _, best_c = max((t, v, c) for v, t, c in scores)
    return {
        "C": c,
        "validation": val,
        "test": test,
        "C_on_test": best_c,
        "test_C_on_test": best_test,
    }


def mlp_ensemble(
    x: dict[str, np.ndarray], y: dict[str, np.ndarray], seeds: int = 3, epochs: int = 30
) -> dict[str, Any]:
    """A one-hidden-layer MLP (256 ReLU units, dropout 0.5 on its input and hidden layer,
    AdamW 1e-3 with weight decay 0.01, batch 64), the epoch chosen on validation, per seed, and
    the seeds' mean probabilities: how far a non-linear model gets on a fixed sentence vector."""
    import torch
    from torch import nn

    scaler = StandardScaler().fit(x["train"])
    xs = {k: torch.tensor(scaler.transform(v), dtype=torch.float32) for k, v in x.items()}
    labels = sorted(set(y["train"].tolist()))
    ys = {k: torch.tensor([labels.index(v) for v in y[k]]) for k in y}
    per_seed, probs = [], []
    for seed in range(seeds):
        torch.manual_seed(seed)
        width = xs["train"].shape[1]
        net = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(width, 256), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(256, len(labels)),
        )  # fmt: skip
        opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.01)
        best: tuple[float, float, torch.Tensor | None] = (-1.0, 0.0, None)
        for _ in range(epochs):
            net.train()
            order = torch.randperm(len(ys["train"]))
            for i in range(0, len(order), 64):
                b = order[i : i + 64]
                loss = nn.functional.cross_entropy(net(xs["train"][b]), ys["train"][b])
                opt.zero_grad()
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                val = f1_score(
                    ys["validation"], net(xs["validation"]).argmax(1), average="weighted"
                )
                p = net(xs["test"]).softmax(1)
            if val > best[0]:
                best = (val, f1_score(ys["test"], p.argmax(1), average="weighted"), p)
        per_seed.append(best[1])
        probs.append(best[2])
    ensemble = f1_score(ys["test"], torch.stack(probs).mean(0).argmax(1), average="weighted")
    return {"per_seed": per_seed, "ensemble": ensemble}


def token_means(
    manifest: Path, cache: Path, model: str | None = None
) -> tuple[list[str], np.ndarray]:
    """The text model's mean over all tokens (CLS and SEP included) of its last 4 layers, per
    utterance, from the raw text: the usual sentence embedding, with no word pooling at all."""
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        return saved["ids"].tolist(), saved["x"]
    import torch

    ex = TransformerWordExtractor(model)
    ex._load()
    tok, model = ex._tokenizer, ex._model
    df = read_manifest(manifest)
    df = df[df["text"].fillna("").str.strip() != ""]
    ids, texts = df["id"].tolist(), df["text"].tolist()
    order = np.argsort([len(t) for t in texts])
    out = np.zeros((len(texts), ex.hidden_size), np.float32)
    for start in range(0, len(order), 64):
        batch = order[start : start + 64]
        enc = tok([texts[i] for i in batch], padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            states = model(**enc, output_hidden_states=True).hidden_states
        h = torch.stack(states[-4:]).mean(0)
        mask = enc["attention_mask"][:, :, None].float()
        out[batch] = ((h * mask).sum(1) / mask.sum(1)).numpy()
    np.savez(cache, ids=np.array(ids), x=out)
    return ids, out


def bench_config(
    recipe: str, store: Path, epochs: int | None, extra: list[str]
) -> ExperimentConfig:
    """The recipe (``none``: the package defaults) on this store, L-only, selected on weighted F1;
    the user's ``--set`` last."""
    fixed = [
        f"data.store={store.resolve()}",
        "data.modalities=[lexical]",
        "loss.unlabeled=false",
        "train.select_metric=weighted_f1",
        "train.progress_bar=false",
        *([f"train.max_epochs={epochs}"] if epochs is not None else []),
    ]
    if recipe == "none":
        return config_from_dict(parse_overrides([*fixed, *extra]), "meld_lexical")
    return load_config(recipe, [*fixed, *extra])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/data/meld"))
    parser.add_argument("--work", type=Path, default=Path("runs/meld_lexical"))
    parser.add_argument(
        "--config",
        default="configs/meld.yaml",
        help="recipe whose model/loss/train sections are used ('none': package defaults)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument(
        "--seeds", type=int, default=3, help="seeds, scored as their ensemble (the figures: 3)"
    )
    parser.add_argument("--max-words", type=int, default=24, help="as configs/meld.yaml")
    parser.add_argument(
        "--pooling",
        default="mean",
        choices=["mean", "first", "pieces"],
        help="lexical.pooling (store-<N>-<pooling>); pieces: one position per sub-word token",
    )
    parser.add_argument(
        "--sentence",
        action="store_true",
        help="lexical.sentence: the utterance's token mean as position 0 (store-<N>-sentence)",
    )
    parser.add_argument(
        "--model",
        default="mpnet",
        help="lexical.model: a named text model (mpnet, the MELD recipe's; minilm, the package "
        "default) or a Hugging Face folder; the token-mean baselines use the same model",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--mlp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also an MLP on the token mean, 3 seeds (about 3 CPU minutes)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--run", default=None, help="run folder name in --work (default run-<max words>)"
    )
    args = parser.parse_args()
    if not (args.root / "train_sent_emo.csv").is_file():
        print(f"MELD CSVs not found under {args.root}: skipped")
        return
    try:
        TransformerWordExtractor(args.model)
    except DataError as exc:
        print(f"text model {args.model!r} not available ({exc}): skipped")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    manifest = split_manifest(args.root, args.work)
    suffix = ("-sentence" if args.sentence else "") + (
        f"-{args.pooling}" if args.pooling != "mean" else ""
    )
    if args.model != "minilm":
        suffix += "-" + Path(args.model).name
    store = args.work / f"store-{args.max_words}{suffix}"
    lexical: dict[str, Any] = {"max_words": args.max_words}
    lexical["model"] = args.model
    if args.sentence:
        lexical["sentence"] = True
    if args.pooling != "mean":
        lexical["pooling"] = args.pooling
    extractors = build_extractors(["lexical"], {"lexical": lexical})
    t0 = time.perf_counter()
    summary = run_extraction(manifest, store, extractors, workers=args.workers, progress=False)
    took = time.perf_counter() - t0
    print(f"lexical extraction: {summary}; {summary.done / max(took, 1e-9):.0f} utterances/s")
    fs = FeatureStore(store)
    print("extractor settings:", json.dumps(fs.modalities["lexical"].extractor))

    pooled_x, pooled_y, rows_of = {}, {}, {}
    for split in ("train", "validation", "test"):
        rows = fs.select("split", split)
        rows = rows[fs.present("lexical", rows)]
        n = fs.lengths("lexical", rows)
        pooled_x[split] = fs.fetch("lexical", rows).sum(1) / np.maximum(n, 1)[:, None]
        pooled_y[split] = fs.labels(rows)
        rows_of[split] = rows
    lr_store = logistic_regression(pooled_x, pooled_y)

    tag = "" if args.model == "minilm" else "_" + Path(args.model).name
    ids, means = token_means(manifest, args.work / f"token_means_last4{tag}.npz", args.model)
    where = {i: k for k, i in enumerate(ids)}
    tm_x = {s: means[[where[i] for i in fs.ids(r)]] for s, r in rows_of.items()}
    lr_tokens = logistic_regression(tm_x, pooled_y)
    mlp_tokens = mlp_ensemble(tm_x, pooled_y) if args.mlp else None

    cfg = bench_config(args.config, store, args.epochs, args.set)
    print(
        f"settings ({args.config} + --set): model {cfg.model.model_dump(mode='json')}, "
        f"loss {cfg.loss.model_dump(mode='json')}, train {cfg.train.model_dump(mode='json')}"
    )
    run_dir = args.work / (args.run or f"run-{args.max_words}{suffix}")
    timer = EpochTimer()
    t0 = time.perf_counter()
    # an interrupted run continues; with --seeds, finished seeds are kept (more seeds than a
    # finished run had train only the new ones)
    resume = (run_dir / "checkpoints" / "last.ckpt").exists() or any(run_dir.glob("seed_*"))
    metrics = train_and_report(cfg, run_dir, resume=resume, callbacks=[timer], seeds=args.seeds)
    train_s = time.perf_counter() - t0
    classes = fs.classes

    print(f"classes {classes}")
    print(
        f"logistic regression on emomatch's store (word vectors mean-pooled), dev weighted F1: "
        f"{100 * lr_store['test']:.1f} (C={lr_store['C']} chosen on validation, "
        f"{100 * lr_store['validation']:.1f} there; C chosen on dev: "
        f"{100 * lr_store['test_C_on_test']:.1f})"
    )
    print(
        f"logistic regression on the text model's last-4-layer token mean, dev weighted F1: "
        f"{100 * lr_tokens['test']:.1f} (C={lr_tokens['C']} chosen on validation, "
        f"{100 * lr_tokens['validation']:.1f} there; C chosen on dev: "
        f"{100 * lr_tokens['test_C_on_test']:.1f})"
    )
    if mlp_tokens is not None:
        seeds_text = ", ".join(f"{100 * v:.1f}" for v in mlp_tokens["per_seed"])
        print(
            "MLP on the text model's last-4-layer token mean, dev weighted F1: per seed "
            f"{seeds_text}, "
            f"ensemble {100 * mlp_tokens['ensemble']:.1f} (epoch chosen on validation)"
        )
    if timer.whole:
        print(
            f"epoch time: train loop median {statistics.median(timer.train):.1f} s, with "
            f"validation {statistics.median(timer.whole):.1f} s over {len(timer.whole)} epochs "
            f"({len(rows_of['train'])} training utterances); load average now "
            f"{os.getloadavg()[0]:.1f}"
        )
    print(f"emomatch L-only training: {train_s:.0f} s, selected epoch {metrics.get('best_epoch')}")
    print(
        f"emomatch L-only, dev: weighted F1 {100 * metrics['weighted_f1']:.1f}, "
        f"WA {100 * metrics['wa']:.1f}, UA {100 * metrics['ua']:.1f} "
        f"(paper, BERT-large, official test: 53.0 weighted F1)"
    )
    print(f"meld_dev_weighted_f1: {100 * metrics['weighted_f1']:.1f}")


if __name__ == "__main__":
    main()
