"""KL estimators at hand-computed values, their expectations, and the KL controllers (Ziegler et al. 2019)."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.rl.kl import AdaptiveKLController, FixedKLController, kl_estimate
from rlhf.rl.losses import kl_loss


def test_estimators_at_known_log_ratio() -> None:
    # pi = 0.5, pi_ref = 0.25 on the sampled token: log_ratio = ln 2.
    logp = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    ln2 = math.log(2.0)
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(ln2, rel=1e-6)
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(ln2**2 / 2, rel=1e-6)
    # k3 = exp(ref - logp) - (ref - logp) - 1 = 0.5 + ln 2 - 1
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(0.5 + ln2 - 1.0, rel=1e-6)
    # The other direction: pi = 0.25, pi_ref = 0.5 -> k1 = -ln 2 (negative), k3 = 2 - ln 2 - 1.
    assert kl_estimate(ref, logp, "k1").item() == pytest.approx(-ln2, rel=1e-6)
    assert kl_estimate(ref, logp, "k3").item() == pytest.approx(1.0 - ln2, rel=1e-6)


def test_identical_policies_give_zero() -> None:
    logp = torch.log(torch.tensor([[0.1, 0.7, 0.2]]))
    for kind in ("k1", "k2", "k3"):
        assert torch.equal(kl_estimate(logp, logp.clone(), kind), torch.zeros(1, 3))


def test_k2_k3_are_nonnegative() -> None:
    gen = torch.Generator().manual_seed(0)
    logp = -5 * torch.rand(64, 32, generator=gen)
    ref = -5 * torch.rand(64, 32, generator=gen)
    assert (kl_estimate(logp, ref, "k3") >= 0).all()
    assert (kl_estimate(logp, ref, "k2") >= 0).all()
    assert (kl_estimate(logp, ref, "k1") < 0).any()  # k1 alone is not a per-token bound


def test_k1_and_k3_are_unbiased_exactly() -> None:
    # Exact expectation over a categorical pi (no sampling): sum_x pi(x) * k(x) = KL(pi || ref) for k1, k3.
    pi = [0.5, 0.3, 0.2]
    ref = [0.2, 0.2, 0.6]
    true_kl = sum(p * math.log(p / q) for p, q in zip(pi, ref))
    logp = torch.log(torch.tensor([pi], dtype=torch.float64))
    ref_logp = torch.log(torch.tensor([ref], dtype=torch.float64))
    weights = torch.tensor([pi], dtype=torch.float64)
    for kind in ("k1", "k3"):
        expectation = (weights * kl_estimate(logp, ref_logp, kind)).sum().item()
        assert expectation == pytest.approx(true_kl, rel=1e-12)
    # k2 is biased: its expectation differs from the true KL here.
    assert (weights * kl_estimate(logp, ref_logp, "k2")).sum().item() != pytest.approx(true_kl, rel=1e-3)


def test_k3_log_ratio_clamp_keeps_values_finite() -> None:
    logp = torch.tensor([[-200.0, 0.0]])
    ref = torch.tensor([[0.0, -200.0]])
    k3 = kl_estimate(logp, ref, "k3")
    assert torch.isfinite(k3).all()
    # Clamped at +-20: exp(20) - 20 - 1 for the first token, exp(-20) + 20 - 1 for the second.
    assert k3[0, 0].item() == pytest.approx(math.exp(20) - 21, rel=1e-5)
    assert k3[0, 1].item() == pytest.approx(math.exp(-20) + 19, rel=1e-5)
    # Without the clamp (in fp64, where exp(200) is finite) the exact value comes back.
    unclamped = kl_estimate(logp.double(), ref.double(), "k3", log_ratio_clamp=None)
    assert unclamped[0, 0].item() == pytest.approx(math.exp(200) - 201, rel=1e-12)


def test_bf16_inputs_are_computed_in_fp32() -> None:
    logp = torch.tensor([[-1.0]], dtype=torch.bfloat16)
    assert kl_estimate(logp, logp - 0.5, "k3").dtype == torch.float32


def test_bad_kind_and_shapes_raise() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_estimate(x, x, "k4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same shape"):
        kl_estimate(x, torch.zeros(2, 4), "k1")


def test_kl_loss_is_masked_token_mean_of_k3() -> None:
    logp = torch.tensor([[math.log(0.5), math.log(0.25), 0.0]], requires_grad=True)
    ref = torch.tensor([[math.log(0.25), math.log(0.5), 5.0]])
    mask = torch.tensor([[1, 1, 0]])
    ln2 = math.log(2.0)
    expected = ((0.5 + ln2 - 1.0) + (2.0 - ln2 - 1.0)) / 2
    loss = kl_loss(logp, ref, mask, "k3")
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logp.grad is not None and logp.grad[0, 2].item() == 0.0  # masked token gets no gradient
    # d k3 / d logp = 1 - exp(ref - logp), divided by the 2 valid tokens.
    assert logp.grad[0, 0].item() == pytest.approx((1 - 0.5) / 2, rel=1e-6)
    assert logp.grad[0, 1].item() == pytest.approx((1 - 2.0) / 2, rel=1e-6)


def test_fixed_controller_never_moves() -> None:
    ctl = FixedKLController(0.05)
    ctl.update(current_kl=100.0, n_steps=512)
    ctl.update(current_kl=0.0, n_steps=512)
    assert ctl.value == 0.05
    with pytest.raises(ValueError, match=">= 0"):
        FixedKLController(-0.1)


def test_adaptive_controller_follows_ziegler() -> None:
    # Above target, error clipped to +0.2: beta *= 1 + 0.2 * 256 / 10000.
    ctl = AdaptiveKLController(value=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=12.0, n_steps=256)
    assert ctl.value == pytest.approx(0.1 * 1.00512, rel=1e-12)
    # Below target, error clipped to -0.2.
    ctl = AdaptiveKLController(value=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=3.0, n_steps=256)
    assert ctl.value == pytest.approx(0.1 * 0.99488, rel=1e-12)
    # Inside the clip range the error is proportional: 6.6 / 6 - 1 = 0.1.
    ctl = AdaptiveKLController(value=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=6.6, n_steps=256)
    assert ctl.value == pytest.approx(0.1 * (1 + 0.1 * 256 / 10000), rel=1e-12)
    # At target nothing changes.
    ctl = AdaptiveKLController(value=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=6.0, n_steps=256)
    assert ctl.value == pytest.approx(0.1, rel=1e-12)


def test_adaptive_controller_resumes_exactly() -> None:
    kls = [8.0, 2.0, 7.1, 5.5, 30.0, 0.1]
    reference = AdaptiveKLController(value=0.2, target=6.0, horizon=1000)
    for kl in kls:
        reference.update(kl, 64)

    first = AdaptiveKLController(value=0.2, target=6.0, horizon=1000)
    for kl in kls[:3]:
        first.update(kl, 64)
    state = first.state_dict()
    resumed = AdaptiveKLController(value=0.2, target=6.0, horizon=1000)
    resumed.load_state_dict(dict(state))
    for kl in kls[3:]:
        resumed.update(kl, 64)
    assert resumed.value == reference.value  # bit-exact, not approximately

    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(value=0.2, target=3.0, horizon=1000).load_state_dict(state)
    with pytest.raises(ValueError, match="'adaptive' controller, not 'fixed'"):
        FixedKLController(0.1).load_state_dict(state)
    fixed = FixedKLController(0.1)
    fixed.load_state_dict(FixedKLController(0.3).state_dict())
    assert fixed.value == 0.3


def test_adaptive_controller_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(value=0.1, target=0.0, horizon=100)
    with pytest.raises(ValueError, match="horizon"):
        AdaptiveKLController(value=0.1, target=1.0, horizon=0)
    with pytest.raises(ValueError, match="never grow"):
        AdaptiveKLController(value=0.0, target=1.0, horizon=100)
    ctl = AdaptiveKLController(value=0.1, target=1.0, horizon=100)
    with pytest.raises(ValueError, match="diverged"):
        ctl.update(float("nan"), 10)
    assert ctl.value == 0.1
