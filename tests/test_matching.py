import itertools
import math

import pytest
import torch

from emomatch.model.matching import (
    GaussianKernel,
    derangement,
    make_kernel,
    matching_pairs,
    matching_terms,
    median_sigma,
    mmd_unbiased,
    pairwise_rkhs,
)


def k(x: torch.Tensor, y: torch.Tensor, sigma: float) -> float:
    return math.exp(-float(((x - y) ** 2).sum()) / (2 * sigma**2))


def test_unbiased_mmd_matches_direct_formula() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(7, 4, generator=g, dtype=torch.float64)
    q = torch.randn(5, 4, generator=g, dtype=torch.float64) + 0.7
    sigma = 1.3
    m, n = len(p), len(q)
    within_p = sum(k(p[i], p[j], sigma) for i, j in itertools.permutations(range(m), 2))
    within_q = sum(k(q[i], q[j], sigma) for i, j in itertools.permutations(range(n), 2))
    cross = sum(k(p[i], q[j], sigma) for i in range(m) for j in range(n))
    direct = within_p / (m * (m - 1)) + within_q / (n * (n - 1)) - 2 * cross / (m * n)
    got = mmd_unbiased(p, q, GaussianKernel((sigma,)))
    assert float(got) == pytest.approx(direct, rel=1e-9, abs=1e-12)


def test_pairwise_measure_matches_rkhs_distance() -> None:
    p = torch.randn(6, 3, dtype=torch.float64)
    q = torch.randn(6, 3, dtype=torch.float64)
    direct = sum(2 - 2 * k(p[i], q[i], 0.8) for i in range(6)) / 6
    assert float(pairwise_rkhs(p, q, GaussianKernel((0.8,)))) == pytest.approx(direct)


def test_default_measure_reacts_to_shuffling_and_batch_does_not() -> None:
    torch.manual_seed(0)
    z = torch.randn(64, 8)
    # Partner modality: the same utterances seen with a little noise, so pairs agree.
    latents = {"acoustic": z, "visual": z + 0.1 * torch.randn(64, 8)}
    pairs = [("acoustic", "visual")]
    g = torch.Generator().manual_seed(1)
    pair, unpaired = matching_terms(latents, pairs, "pairwise", generator=g)
    assert float(pair + unpaired) < -0.5  # aligned pairs are much closer than shuffled ones
    pair_b, unpaired_b = matching_terms(latents, pairs, "batch", generator=g)
    assert abs(float(pair_b + unpaired_b)) < 1e-5  # Eq. 3 is blind to the pairing
    # and shuffling the partner before measuring changes the default, not `batch`
    perm = derangement(64, torch.Generator().manual_seed(3))
    shuffled = {"acoustic": z, "visual": latents["visual"][perm]}
    assert float(matching_terms(shuffled, pairs, "pairwise", generator=g)[0]) > float(pair) + 0.5
    assert float(matching_terms(shuffled, pairs, "batch", generator=g)[0]) == pytest.approx(
        float(pair_b), abs=1e-5
    )


def test_derangement_has_no_fixed_point() -> None:
    for n in (2, 3, 10, 129):
        perm = derangement(n, torch.Generator().manual_seed(n))
        assert sorted(perm.tolist()) == list(range(n))
        assert (perm != torch.arange(n)).all()


def test_pairs() -> None:
    assert matching_pairs(["acoustic", "visual", "lexical"], "paper") == [
        ("acoustic", "visual"),
        ("acoustic", "lexical"),
    ]
    assert matching_pairs(["visual", "lexical"], "paper") == [("visual", "lexical")]
    assert matching_pairs(["lexical"], "paper") == []
    assert len(matching_pairs(["acoustic", "visual", "lexical"], "all")) == 3


def test_median_heuristic_has_no_gradient_and_is_the_median_distance() -> None:
    p = torch.tensor([[0.0], [1.0]], requires_grad=True)
    q = torch.tensor([[3.0], [7.0]])
    sigma = median_sigma(p, q)
    assert not sigma.requires_grad
    # pooled distances: 1, 3, 7, 2, 6, 4 -> median of squares = (9 + 16) / 2 -> sqrt
    assert float(sigma) == pytest.approx(math.sqrt(12.5))


def test_multi_bandwidth_kernel_is_the_mean_over_scales() -> None:
    x, y = torch.zeros(1, 2), torch.ones(1, 2)
    kern = GaussianKernel((1.0, 2.0))
    expected = (math.exp(-2 / 2) + math.exp(-2 / 8)) / 2
    assert float(kern.gram(x, y)[0, 0]) == pytest.approx(expected)
    assert float(kern.pointwise(x, y)[0]) == pytest.approx(expected)


def test_multi_kernel_is_one_on_identical_points_and_bounded_like_one_kernel() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(32, 6, generator=g, dtype=torch.float64)
    multi = make_kernel(p, p, "multi", 1.0, [0.25, 0.5, 1.0, 2.0, 4.0])
    assert len(torch.as_tensor(multi.sigmas)) == 5
    gram = multi.gram(p, p)
    torch.testing.assert_close(gram.diagonal(), torch.ones(32, dtype=torch.float64))
    assert float(gram.max()) <= 1.0 + 1e-12 and float(gram.min()) > 0.0
    torch.testing.assert_close(multi.pointwise(p, p), torch.ones(32, dtype=torch.float64))
    # The pairwise measure lies in [0, 2] for one kernel and for several: identical partners
    # give 0; partners far apart approach 2 (5x that when the scales were summed).
    assert float(pairwise_rkhs(p, p, multi)) == pytest.approx(0.0, abs=1e-12)
    far = p + 1e3
    wide = make_kernel(p, far, "multi", 1.0, [0.25, 0.5, 1.0, 2.0, 4.0])
    single = make_kernel(p, far, "median", 1.0, [1.0])
    for kern in (wide, single):
        value = float(pairwise_rkhs(p, far, kern))
        assert 0.0 <= value <= 2.0 + 1e-12
    # Far beyond every bandwidth the kernel vanishes at the widest scale too.
    far_fixed = GaussianKernel((0.25, 0.5, 1.0, 2.0, 4.0))
    assert float(pairwise_rkhs(p, p + 1e3, far_fixed)) == pytest.approx(2.0)


def test_multi_matching_term_has_the_scale_of_one_kernel() -> None:
    # With all scales equal, the multi kernel is exactly the single median kernel: same terms.
    torch.manual_seed(0)
    z = torch.randn(16, 4)
    latents = {"acoustic": z, "visual": z + 0.3 * torch.randn(16, 4)}
    pairs = [("acoustic", "visual")]
    one = matching_terms(latents, pairs, "pairwise", "median", generator=gen(1))
    five = matching_terms(latents, pairs, "pairwise", "multi", scales=[1.0] * 5, generator=gen(1))
    for a, b in zip(one, five, strict=True):
        assert float(a) == pytest.approx(float(b), rel=1e-6)
        assert abs(float(a)) > 1e-3


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
