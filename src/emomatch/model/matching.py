"""Cross-modal distribution matching: Gaussian kernels, the MMD estimator and pairing measures.

The paper's Eq. 3 is a two-sample statistic over a batch. Shuffling one side of the batch
does not change it, so its "paired" and "unpaired" terms cancel exactly and the matching term
does nothing. Both measures are offered:

- ``batch``: the literal unbiased MMD^2 of Eq. 3 between the two latent batches
  (pairing-blind: kept for faithfulness and ablations);
- ``pairwise`` (default): the mean RKHS distance between each item and its partner,
  mean_i ||phi(p_i) - phi(q_i)||^2 = mean_i [k(p_i,p_i) + k(q_i,q_i) - 2 k(p_i,q_i)],
  which is small when an utterance's modalities agree and reacts to shuffling.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from emomatch.registry import Registry

#: A measure takes aligned latents p, q (n x d) and a kernel, returns a scalar.
Measure = Callable[[torch.Tensor, torch.Tensor, "GaussianKernel"], torch.Tensor]
MEASURES: Registry[Measure] = Registry("matching measure")


@dataclass(frozen=True)
class GaussianKernel:
    """k(x, y) = mean_s exp(-||x - y||^2 / (2 sigma_s^2)) over one or several bandwidths.

    The mean, not the sum: k(x, x) = 1 and 0 < k <= 1 whatever the number of bandwidths, so the
    matching weight beta means the same for ``multi`` as for one kernel (a sum over five scales
    made the matching term up to 5x larger at the same beta).
    """

    sigmas: tuple[float, ...] | torch.Tensor

    def gram(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d2 = squared_distances(x, y)
        sig = torch.as_tensor(self.sigmas, dtype=d2.dtype, device=d2.device).reshape(-1, 1, 1)
        return torch.exp(-d2[None] / (2 * sig**2)).mean(0)

    def pointwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d2 = (x - y).pow(2).sum(-1)
        sig = torch.as_tensor(self.sigmas, dtype=d2.dtype, device=d2.device).reshape(-1, 1)
        return torch.exp(-d2[None] / (2 * sig**2)).mean(0)

    #: k(x, x): every scale gives exp(0) = 1 and the scales are averaged
    self_similarity = 1.0


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d2 = x.pow(2).sum(1)[:, None] + y.pow(2).sum(1)[None, :] - 2 * x @ y.T
    return d2.clamp_min(0.0)


def median_sigma(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Median heuristic on the pooled batch: sigma = median pairwise distance (no gradient)."""
    with torch.no_grad():
        pooled = torch.cat([p, q]).float()
        d2 = squared_distances(pooled, pooled)
        n = pooled.shape[0]
        iu = torch.triu_indices(n, n, offset=1, device=pooled.device)
        med = torch.quantile(d2[iu[0], iu[1]], 0.5)
        return med.clamp_min(1e-8).sqrt()


def make_kernel(
    p: torch.Tensor, q: torch.Tensor, bandwidth: str, sigma: float, scales: Sequence[float]
) -> GaussianKernel:
    if bandwidth == "fixed":
        return GaussianKernel((sigma,))
    med = median_sigma(p, q)
    if bandwidth == "median":
        return GaussianKernel(med.reshape(1))
    if bandwidth == "multi":
        return GaussianKernel(med * torch.as_tensor(scales, device=med.device, dtype=med.dtype))
    raise ValueError(f"unknown bandwidth mode {bandwidth!r}")


@MEASURES.register("batch")
def mmd_unbiased(p: torch.Tensor, q: torch.Tensor, kernel: GaussianKernel) -> torch.Tensor:
    """Unbiased MMD^2 (paper Eq. 3): off-diagonal within-set means minus twice the cross mean."""
    m, n = p.shape[0], q.shape[0]
    kpp, kqq, kpq = kernel.gram(p, p), kernel.gram(q, q), kernel.gram(p, q)
    within_p = (kpp.sum() - kpp.diagonal().sum()) / (m * (m - 1))
    within_q = (kqq.sum() - kqq.diagonal().sum()) / (n * (n - 1))
    return within_p + within_q - 2 * kpq.mean()


@MEASURES.register("pairwise")
def pairwise_rkhs(p: torch.Tensor, q: torch.Tensor, kernel: GaussianKernel) -> torch.Tensor:
    """Mean squared RKHS distance between each item and its own partner."""
    return (2 * kernel.self_similarity - 2 * kernel.pointwise(p, q)).mean()


def matching_pairs(modalities: Sequence[str], mode: str) -> list[tuple[str, str]]:
    """Pairs of modalities whose latents are matched.

    ``paper``: (A,V) and (A,L) with all three; the one pair with two; none with one.
    ``all``: every pair.
    """
    mods = list(modalities)
    if len(mods) < 2:
        return []
    if mode == "all" or len(mods) == 2:
        return list(itertools.combinations(mods, 2))
    anchor = "acoustic" if "acoustic" in mods else mods[0]
    return [(anchor, m) for m in mods if m != anchor]


def derangement(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random permutation with no fixed point (n >= 2): each item gets another's partner."""
    order = torch.randperm(n, generator=generator)
    out = torch.empty(n, dtype=torch.long)
    out[order] = order.roll(-1)
    return out


def matching_terms(
    latents: Mapping[str, torch.Tensor],
    pairs: Sequence[tuple[str, str]],
    measure: str,
    bandwidth: str = "median",
    sigma: float = 1.0,
    scales: Sequence[float] = (1.0,),
    generator: torch.Generator | None = None,
    present: Mapping[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_pair, L_unpaired) summed over pairs; L_unpaired = -(measure on shuffled partners).
    With ``present`` (modality -> rows that have it), a pair uses only rows that have both."""
    fn = MEASURES.get(measure)
    anchor = next(iter(latents.values()))
    pair = anchor.new_zeros((), dtype=torch.float32)
    unpaired = anchor.new_zeros((), dtype=torch.float32)
    # Kernels of squared distances overflow in half precision: keep matching in fp32 under AMP.
    with torch.autocast(anchor.device.type, enabled=False):
        for a, b in pairs:
            p, q = latents[a].float(), latents[b].float()
            if present is not None:
                both = present[a] & present[b]
                if not bool(both.all()):
                    p, q = p[both], q[both]
            if p.shape[0] < 2:
                continue
            kernel = make_kernel(p, q, bandwidth, sigma, scales)
            shuffle = derangement(p.shape[0], generator).to(q.device)
            pair = pair + fn(p, q, kernel)
            unpaired = unpaired - fn(p, q[shuffle], kernel)
    return pair, unpaired
