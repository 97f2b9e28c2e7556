"""The LightningModule: normalization, the model, the objective, validation metrics."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from emomatch.config import ExperimentConfig
from emomatch.data import to_inputs
from emomatch.metrics import classification_metrics
from emomatch.model import EmotionModel, Normalizer
from emomatch.model.losses import objective, prediction_terms, stream_terms
from emomatch.model.views import drop_modalities


class EmoMatchModule(pl.LightningModule):
    def __init__(
        self,
        config: dict[str, Any],
        shapes: dict[str, list[int]],
        classes: list[str],
        class_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = ExperimentConfig.model_validate(config)
        self.classes = list(classes)
        self.shapes = {m: tuple(s) for m, s in shapes.items()}
        self.model = EmotionModel(
            self.shapes, len(classes), self.cfg.model, recompute=self.cfg.train.recompute
        )
        self.normalizer = Normalizer({m: s[-1] for m, s in self.shapes.items()})
        self.class_weights: torch.Tensor | None
        if class_weights is not None:
            self.register_buffer("class_weights", torch.tensor(class_weights))
        else:
            self.class_weights = None
        self._teacher: list[EmotionModel] = []
        self._val_true: list[torch.Tensor] = []
        self._val_pred: list[torch.Tensor] = []

    def normalized(self, part: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {m: (self.normalizer(m, x, n), n) for m, (x, n) in to_inputs(part).items()}

    def forward(self, part: dict[str, Any]) -> torch.Tensor:
        return self.model(self.normalized(part), reconstruct=False).logits

    def on_train_epoch_start(self) -> None:
        # Dropout draws from the global generator: seeding it per epoch makes an epoch a pure
        # function of the weights it starts from, so a resumed run repeats an uninterrupted one.
        seed = self.cfg.seed * 1_000_003 + self.current_epoch * 101 + self.global_rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def _modality_draws(self) -> torch.Generator:
        # A stream of its own per (seed, step, rank): a resumed run draws what an uninterrupted
        # one drew at that step, and the global generator (dropout) is left as it was.
        key = [self.cfg.seed, 3, self.global_step, self.global_rank]
        state = np.random.SeedSequence(key).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss_cfg = self.cfg.loss
        shuffles = torch.Generator().manual_seed(self.cfg.seed * 7919 + self.global_step)
        lab = batch["labeled"]
        inputs = self.normalized(lab)
        if self.cfg.train.modality_dropout > 0:
            inputs = drop_modalities(
                inputs, self.cfg.train.modality_dropout, self._modality_draws()
            )
        labeled = stream_terms(
            self.model,
            inputs,
            loss_cfg,
            labels=lab["labels"],
            class_weights=self.class_weights if loss_cfg.class_weights else None,
            generator=shuffles,
        )
        unlabeled = None
        wants_unlabeled = loss_cfg.unlabeled and (loss_cfg.reconstruction or loss_cfg.matching)
        pool = self.normalized(batch["unlabeled"]) if "unlabeled" in batch else None
        if wants_unlabeled and pool is not None:
            unlabeled = stream_terms(self.model, pool, loss_cfg, generator=shuffles)
        total, parts = objective(labeled, unlabeled, loss_cfg)
        if loss_cfg.unlabeled and loss_cfg.self_training:
            streams = [pool] if pool is not None else []
            if loss_cfg.consistency_on_labeled:
                streams.append(inputs)
            for stream in streams:
                extra = prediction_terms(
                    self.model, stream, loss_cfg, self._modality_draws(), self.teacher()
                )
                for key, value in extra.items():
                    parts[key] = parts[key] + value if key in parts else value
                    total = total + value
        size = len(lab["labels"])
        self.log("train/loss", total, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in parts.items()},
            on_step=False,
            on_epoch=True,
            batch_size=size,
            sync_dist=True,
        )
        return total

    def teacher(self) -> EmotionModel | None:
        """The EMA teacher (``loss.ema_decay > 0``), made from the model at the first call."""
        if self.cfg.loss.ema_decay <= 0:
            return None
        if not self._teacher:
            # Held in a list, not as a sub-module: its weights stay out of checkpoints and
            # exported bundles, which hold the model that is scored.
            self._teacher.append(copy.deepcopy(self.model).requires_grad_(False))
        return self._teacher[0]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._teacher:
            decay = self.cfg.loss.ema_decay
            with torch.no_grad():
                for t, p in zip(
                    self._teacher[0].parameters(), self.model.parameters(), strict=True
                ):
                    t.lerp_(p.detach(), 1.0 - decay)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        lab = batch["labeled"]
        # The labelled terms on validation too, for the train-vs-validation loss curves (the
        # paper's Fig. 7b); the logits come from the same forward pass. A fixed shuffle keeps
        # the unpaired term the same function of the weights at every epoch.
        terms = stream_terms(
            self.model,
            self.normalized(lab),
            self.cfg.loss,
            labels=lab["labels"],
            class_weights=self.class_weights if self.cfg.loss.class_weights else None,
            generator=torch.Generator().manual_seed(self.cfg.seed * 7919 + batch_idx),
        )
        total, parts = objective(terms, None, self.cfg.loss)
        size = len(lab["labels"])
        self.log("val/loss", total, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log_dict(
            {f"val/{k}": v for k, v in parts.items() if not k.startswith("unlabeled_")},
            on_step=False,
            on_epoch=True,
            batch_size=size,
            sync_dist=True,
        )
        assert terms.logits is not None
        logits = terms.logits
        self._val_true.append(lab["labels"].cpu())
        self._val_pred.append(logits.argmax(1).cpu())

    def on_validation_epoch_end(self) -> None:
        # Under DDP each process validated its own share of the split (EvalBatches(shard=True)):
        # the metrics are computed on everyone's predictions, the same on every process.
        y, p = _gathered(self._val_true), _gathered(self._val_pred)
        self._val_true.clear()
        self._val_pred.clear()
        if len(y) == 0:
            return
        scores = classification_metrics(y, p, len(self.classes))
        for key in ("wap", "ua", "wa", "weighted_f1", "macro_f1"):
            self.log(
                f"val/{key}",
                float(scores[key]),
                prog_bar=key == self.cfg.train.select_metric,
                sync_dist=True,
            )

    def configure_optimizers(self) -> Any:
        t = self.cfg.train
        # One fused kernel over all parameters: the per-tensor update took about a fifth of a
        # CPU training step on MELD text; fused is 3x cheaper (same update rule).
        fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters())
        kind = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
        opt = kind(self.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=fused)
        if t.warmup_epochs == 0 and t.schedule == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, total // t.max_epochs)
        scale = lr_scale(per_epoch, total, t.warmup_epochs, t.schedule)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, scale)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _gathered(chunks: list[torch.Tensor]) -> np.ndarray:
    """The concatenated chunks of this process, and of every process where several train."""
    local = torch.cat(chunks).numpy() if chunks else np.zeros(0, np.int64)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return local
    shares: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(shares, local)
    return np.concatenate(shares)


def lr_scale(
    per_epoch: int, total: int, warmup_epochs: float, schedule: str
) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step ``s``: linear warm-up, then
    constant or a cosine decay that reaches 0 at the last step of ``max_epochs``."""
    warm = int(round(warmup_epochs * per_epoch))

    def scale(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return scale
