"""A bundle's members (one model per seed) as one classifier of feature arrays."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from emomatch.bundle.format import Bundle, BundleError
from emomatch.errors import DataError


def _state(tensors: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


#: values a model may hold beyond its saved weights (non-persistent buffers such as position
#: codes): a config that asks for more is not one a bundle's weights could have come from
_MAX_UNSAVED_VALUES = 1 << 26


def _check_weights_fit(bundle: Bundle, model_cfg: Any) -> None:
    """Every member's tensors have exactly the names and shapes of the model that config.yaml
    and bundle.json describe, checked on a model built on torch's ``meta`` device (no memory):
    a bundle declaring a 5e6-wide input or ``latent_dim: 2000000000`` is refused before the
    real model is allocated."""
    import torch

    from emomatch.model import EmotionModel, Normalizer

    try:
        with torch.device("meta"):
            model = EmotionModel(bundle.shapes, len(bundle.labels), model_cfg)
            normalizer = Normalizer({m: s[-1] for m, s in bundle.shapes.items()})
    except (DataError, ValueError, RuntimeError, TypeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(
            f"{bundle.source}: config.yaml and bundle.json describe no model ({detail})"
        ) from None
    expected = {f"model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
    expected.update({f"normalizer.{k}": tuple(v.shape) for k, v in normalizer.state_dict().items()})
    held = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    saved = sum(math.prod(shape) for shape in expected.values())
    if held - saved > _MAX_UNSAVED_VALUES:
        raise BundleError(
            f"{bundle.source}: config.yaml asks for a model of {held:,} values beyond its "
            f"{saved:,} saved weights; not a model a bundle holds"
        )
    for k, tensors in enumerate(bundle.members):
        name = bundle.meta["members"][k].get("weights")
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            which = f"lacks {missing[0]}" if missing else f"holds the unknown {extra[0]}"
            raise BundleError(
                f"{bundle.source}: {name} does not fit the model of config.yaml (it {which}; "
                f"{len(missing)} missing, {len(extra)} unexpected)"
            )
        for key, shape in expected.items():
            if tuple(tensors[key].shape) != shape:
                raise BundleError(
                    f"{bundle.source}: {name} does not fit the model of config.yaml ({key} "
                    f"is {list(tensors[key].shape)}, the model's is {list(shape)})"
                )


class BundleEnsemble:
    """The encoders and classifier (never the decoders) of every member of a bundle, with
    their normalisation statistics; class probabilities are the members' mean
    (:func:`emomatch.model.ensemble.mean_probabilities`, as evaluation scores a run)."""

    def __init__(self, bundle: Bundle, model_cfg: Any, device: Any) -> None:
        from emomatch.model import EmotionModel, Normalizer

        _check_weights_fit(bundle, model_cfg)
        self.device = device
        self.modalities = list(bundle.modalities)
        self.members: list[tuple[Any, Any]] = []
        for k, tensors in enumerate(bundle.members):
            model = EmotionModel(bundle.shapes, len(bundle.labels), model_cfg)
            normalizer = Normalizer({m: s[-1] for m, s in bundle.shapes.items()})
            try:
                model.load_state_dict(_state(tensors, "model."), strict=True)
                normalizer.load_state_dict(_state(tensors, "normalizer."), strict=True)
            except RuntimeError as exc:
                name = bundle.meta["members"][k].get("weights")
                detail = str(exc).splitlines()[0]
                raise BundleError(
                    f"{bundle.source}: {name} does not fit the model of config.yaml ({detail})"
                ) from None
            self.members.append((model.eval().to(device), normalizer.to(device)))

    def __len__(self) -> int:
        return len(self.members)

    def __call__(
        self, arrays: Mapping[str, np.ndarray], lengths: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """Class probabilities (n x labels) of the rows' features and valid lengths."""
        import torch

        from emomatch.model.ensemble import mean_probabilities

        inputs = {
            m: (
                torch.as_tensor(arrays[m], dtype=torch.float32).to(self.device),
                torch.as_tensor(lengths[m], dtype=torch.int64).to(self.device),
            )
            for m in self.modalities
        }
        with torch.inference_mode():
            return mean_probabilities(self.members, inputs).cpu().numpy()
