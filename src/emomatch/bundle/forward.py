"""A bundle's members (one model per seed) as one classifier of feature arrays."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from emomatch.bundle.format import Bundle, BundleError


def _state(tensors: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


class BundleEnsemble:
    """The encoders and classifier (never the decoders) of every member of a bundle, with
    their normalisation statistics; class probabilities are the members' mean
    (:func:`emomatch.model.ensemble.mean_probabilities`, as evaluation scores a run)."""

    def __init__(self, bundle: Bundle, model_cfg: Any, device: Any) -> None:
        from emomatch.model import EmotionModel, Normalizer

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
