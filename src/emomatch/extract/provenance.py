"""Rebuilding the extractors a model's features came from, from their recorded provenance.

Comparing two records (whether two sets of features were made the same way) lives with the
store that holds them, in :mod:`emomatch.store.provenance`.

A model only means something on features made exactly as its training features were: a store
extracted with ``lexical.pooling=first`` scores a model trained on ``mean`` as if it were
another model. Every place that feeds a model features it did not train on (``evaluate
--store``, ``predict``, a second store in training) compares the recorded settings first and
refuses with one message naming the setting that differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from emomatch.errors import DataError
from emomatch.extract.base import EXTRACTORS, Extractor
from emomatch.store import ModalitySpec
from emomatch.store.provenance import check_provenance

#: the openSMILE sink level recorded in a store -> the extractor's ``feature_level`` option
_OPENSMILE_LEVELS = {"func": "functionals", "lld": "lld", "lld_de": "lld_deltas"}
#: settings of a face detector that are constructor options of it
_DETECTOR_OPTIONS = {
    "haar": ("scale_factor", "min_neighbors", "min_size", "max_side"),
    "mediapipe": ("model_selection", "min_confidence"),
    "none": (),
}


def extractor_options(
    modality: str, recorded: Mapping[str, Any]
) -> tuple[str, dict[str, Any], list[str]]:
    """The registered extractor name and the constructor options that reproduce recorded
    features, and the options a user must supply because the record names a file that does not
    travel with it (a custom openSMILE config, face encoder or lexical model)."""
    settings = dict(recorded.get("extractor", {}))
    name = str(settings.get("name", ""))
    max_len = int(recorded.get("max_len", 1))
    options: dict[str, Any] = {}
    needs: list[str] = []
    if name == "opensmile":
        level = str(settings.get("level", "func"))
        options["feature_level"] = _OPENSMILE_LEVELS.get(level, level)
        if recorded.get("kind") == "sequence":
            options["max_frames"] = max_len
        if "config_sha256" in settings:
            needs.append("config")
        else:
            options["feature_set"] = settings.get("feature_set")
    elif name == "faces":
        detector = str(settings.get("detector", "haar"))
        keys = _DETECTOR_OPTIONS.get(detector, ())
        options.update(
            detector=detector,
            detector_options={k: settings[k] for k in keys if k in settings},
            every=settings.get("every"),
            margin=settings.get("margin"),
            max_frames=max_len,
        )
        encoder = settings.get("encoder")
        if encoder in ("xception", "pixels"):
            options["encoder"] = encoder
        elif encoder == "hf":
            options["encoder"] = encoder
            needs.append("model")
        else:
            needs.append("encoder")
    elif name == "transformer":
        from emomatch.extract.lexical import DEFAULT_MODEL_PACKAGE
        from emomatch.extract.textmodels import archive_model_for_record

        options.update(
            layer=settings.get("layer"),
            layers=settings.get("layers"),
            max_words=settings.get("max_words", max_len),
            pooling=settings.get("pooling"),
            punctuation=settings.get("punctuation"),
            sentence=settings.get("sentence"),
        )
        recorded_model = str(settings.get("model", ""))
        named = archive_model_for_record(recorded_model)
        if named is not None:
            options["model"] = named
        elif not recorded_model.startswith(DEFAULT_MODEL_PACKAGE + "=="):
            needs.append("model")
    elif name in ("whisper", "hf"):
        from emomatch.extract.encoders import WHISPER_PACKAGE

        options.update(layer=settings.get("layer"), pooling=settings.get("pooling"))
        if recorded.get("kind") == "sequence":
            options.update(stride=settings.get("stride"), max_frames=max_len)
        # the weights' hash in the record tells whether a given folder is the same model
        if not str(settings.get("model", "")).startswith(WHISPER_PACKAGE + "=="):
            needs.append("model")
    elif name == "imported":
        # `emomatch import`: made outside emomatch, so only the same features can be scored
        raise DataError(
            f"{modality} features were imported from {settings.get('file')!r} (array "
            f"{settings.get('key')!r}, sha256 {str(settings.get('sha256'))[:12]}..."
            + (f", {settings['description']}" if settings.get("description") else "")
            + "): emomatch cannot make them from media; import features made the same way "
            "into a store and score it (`emomatch evaluate RUN --store STORE`)"
        )
    else:
        raise DataError(
            f"{modality} features were made by {name or 'an unnamed extractor'!r}, which cannot "
            "be run on media (only opensmile, whisper, hf, faces and transformer can; a model "
            "trained on "
            "synthetic features predicts from features only)"
        )
    return name, {k: v for k, v in options.items() if v is not None}, needs


def rebuild_extractors(
    provenance: Mapping[str, Mapping[str, Any]],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str = "cpu",
) -> dict[str, Extractor]:
    """One extractor per modality that makes features exactly as recorded in ``provenance``.

    ``options`` (modality -> {option: value}) supplies what the record cannot hold (the path of
    a custom lexical model, face encoder or openSMILE config) and run-time settings such as
    ``batch_size``; an option that changes the features is refused by the final check, which
    compares the rebuilt extractors' own record with ``provenance`` (versions included)."""
    from emomatch.extract.run import load_builtin_extractors

    load_builtin_extractors()
    built: dict[str, Extractor] = {}
    for m, recorded in provenance.items():
        name, opts, needs = extractor_options(m, recorded)
        given = dict((options or {}).get(m, {}))
        absent = [k for k in needs if k not in given]
        if absent:
            what = recorded.get("extractor", {})
            named = ", ".join(f"{k}={what.get(k, what.get('weights'))!r}" for k in absent)
            asked = ", ".join(f"{m}.{k}=PATH" for k in absent)
            raise DataError(
                f"{m} features were made with a file that does not travel with the model "
                f"({named}); give it as {asked}"
            )
        if device != "cpu" and name in ("faces", "transformer", "whisper", "hf"):
            opts["device"] = device
        opts.update(given)
        try:
            extractor = EXTRACTORS.get(name)(**opts)
        except (TypeError, KeyError) as exc:
            raise DataError(f"{m} extractor {name!r}: cannot be built ({exc})") from None
        spec: ModalitySpec = extractor.spec()
        check_provenance(
            {m: recorded},
            {m: asdict(spec)},
            found_name="this installation",
            expected_name="the model was trained on",
            advice="install the extractor versions the model was made with (listed in its "
            "README.md) or train and export it again here",
        )
        built[m] = extractor
    return built
