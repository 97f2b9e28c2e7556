"""The model card (README.md) written into every bundle: what the model was trained on, how it
was selected and scored, what it is for and where it must not be trusted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_SCORES = (("wap", "WAP"), ("ua", "UA"), ("wa", "WA"), ("weighted_f1", "wF1"), ("macro_f1", "mF1"))


def _score_row(name: str, m: Mapping[str, Any]) -> str:
    cells = [f"{100 * float(m[k]):.1f}" if k in m else "-" for k, _ in _SCORES]
    return f"| {name} | " + " | ".join(cells) + " |"


def _feature_line(modality: str, recorded: Mapping[str, Any]) -> str:
    settings = dict(recorded.get("extractor", {}))
    name = settings.pop("name", "?")
    shown = ", ".join(f"{k}={v}" for k, v in settings.items())
    shape = (
        [recorded.get("dim")]
        if recorded.get("kind") == "vector"
        else [
            recorded.get("max_len"),
            recorded.get("dim"),
        ]
    )
    return f"- **{modality}** {shape}: `{name}` ({shown})"


def _missing_note(data: Mapping[str, Any], train: Mapping[str, Any]) -> str:
    dropout = float(train.get("modality_dropout") or 0.0)
    if dropout > 0:
        return (
            f", as in training, which left out each modality of a labelled utterance with "
            f"chance {dropout:g} (`train.modality_dropout`)."
        )
    if data.get("missing") == "mask":
        return " as in training (`missing: mask`)."
    return (
        "; the model was trained on complete utterances only (`missing: drop`), so such "
        "predictions are less reliable."
    )


def trained_on(meta: Mapping[str, Any]) -> str:
    """One line saying what the model was trained on (bundle.json's ``training_data``)."""
    record = meta.get("training_data")
    if not isinstance(record, Mapping):
        return "unknown data (exported before emomatch recorded it)"
    kind = "synthetic, generated" if record.get("synthetic") else "real recordings"
    language = record.get("language") or "language unknown"
    classes = ", ".join(str(c) for c in record.get("classes") or meta.get("labels", []))
    return f"{record.get('name', 'unknown')} ({kind}; {language}; classes {classes})"


def synthetic_warning(meta: Mapping[str, Any]) -> str | None:
    """The warning a model trained on generated data gives wherever it is applied (None for
    others): its predictions on real recordings carry no information."""
    record = meta.get("training_data")
    if not isinstance(record, Mapping) or not record.get("synthetic"):
        return None
    return (
        f"this model was trained on synthetic data only ({record.get('name')}): its predictions "
        "on real recordings are not meaningful; train on a real corpus (README: A real model)"
    )


def model_card(
    meta: Mapping[str, Any], config: Mapping[str, Any], metrics: Mapping[str, Any]
) -> str:
    """Markdown text of the card, from the bundle's own metadata, config and metrics."""
    data = config.get("data", {})
    loss = config.get("loss", {})
    train = config.get("train", {})
    members = meta.get("members", [])
    semi = bool(loss.get("unlabeled", False))
    lines = [
        f"# emomatch model: {meta.get('run', 'run')}",
        "",
        "Multimodal emotion recognition (auto-encoders per modality, cross-modal distribution "
        "matching; Liang, Li & Jin, ACM MM 2020) exported by "
        f"emomatch {meta.get('emomatch_version')}.",
        "",
        "## Model",
        "",
        f"- labels: {', '.join(meta.get('labels', []))}",
        f"- modalities: {', '.join(meta.get('modalities', []))}",
        f"- training: {'semi-supervised (unlabeled pool used)' if semi else 'fully supervised'}"
        f", loss alpha={loss.get('alpha')}, beta={loss.get('beta')}, omega={loss.get('omega')}",
        f"- members: {len(members)} "
        + (
            "(an ensemble of seeds "
            + ", ".join(str(m.get("seed")) for m in members)
            + ": their probabilities are averaged)"
            if len(members) > 1
            else f"(seed {members[0].get('seed') if members else '?'})"
        ),
        "",
        "## Data",
        "",
        f"- trained on: {trained_on(meta)}",
        *(
            [f"- **warning**: {synthetic_warning(meta)}"]
            if synthetic_warning(meta) is not None
            else []
        ),
        f"- feature store: `{data.get('store')}`"
        + (
            f", unlabeled pool `{data.get('unlabeled_store')}`"
            if data.get("unlabeled_store")
            else ""
        ),
        f"- splits (field `{data.get('split_field')}`): train `{data.get('train_split')}`, "
        f"validation `{data.get('validation_split')}`, test `{data.get('test_split')}`"
        + (f", unlabeled `{data.get('unlabeled_split')}`" if semi else ""),
        f"- utterances missing a modality: `{data.get('missing')}` at training",
        "",
        "Features (exactly these settings must make the features it is applied to; "
        "`emomatch predict` rebuilds these extractors and refuses any difference):",
        "",
        *[_feature_line(m, r) for m, r in meta.get("features", {}).items()],
        "",
        "## Metrics",
        "",
        f"Checkpoint selected on validation {train.get('select_metric')}; "
        "scores in % (WAP weighted precision, UA unweighted accuracy, WA accuracy, F1).",
        "",
        "| split | " + " | ".join(n for _, n in _SCORES) + " |",
        "|---|" + "---|" * len(_SCORES),
    ]
    if isinstance(metrics.get("validation"), Mapping):
        lines.append(
            _score_row(f"validation ({metrics['validation'].get('split')})", metrics["validation"])
        )
    if "ua" in metrics:
        lines.append(_score_row(f"test ({metrics.get('split', 'test')})", metrics))
    if not metrics:
        lines.append("| (the run recorded no metrics) |" + " |" * len(_SCORES))
    lines += [
        "",
        "## Intended use",
        "",
        "Estimating the emotion category of short utterances (a few seconds of one speaker) "
        "from audio, a face video and/or a transcript, for research and for exploring "
        "recordings: emotion over time in a long recording (`emomatch predict --segments`), "
        "comparisons between models.",
        "",
        "## Limits",
        "",
        "- It knows only the labels above and only what its training corpus showed of them; "
        "acted or synthetic training data transfers poorly to spontaneous speech.",
        "- Scores above were measured on the corpus's own test split; expect lower on other "
        "speakers, languages, microphones and cameras.",
        "- A clip missing a modality (no face found, no speech, no transcript) is predicted "
        "from the others" + _missing_note(data, train),
        "- Not for decisions about people (hiring, policing, health, surveillance): emotion "
        "categories are coarse, culturally variable and often wrong for a single utterance.",
        "",
    ]
    return "\n".join(lines)
