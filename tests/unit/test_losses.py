from __future__ import annotations

import torch

from kcm.distill.losses import combined_loss, cross_entropy, kl_to_teacher, soften


def test_kl_is_zero_when_student_equals_teacher() -> None:
    logits = torch.randn(8, 5)
    probs = torch.softmax(logits, dim=1)
    for t in (1.0, 2.0, 4.0):
        assert torch.allclose(kl_to_teacher(logits, probs, t), torch.zeros(8), atol=1e-5)


def test_kl_is_positive_otherwise() -> None:
    logits = torch.randn(8, 5)
    other = torch.softmax(torch.randn(8, 5), dim=1)
    assert (kl_to_teacher(logits, other, 2.0) > 0).all()


def test_cross_entropy_zero_when_student_matches_label_and_ignores_unlabeled() -> None:
    labels = torch.tensor([0, 2, -1])
    logits = torch.full((3, 3), -50.0)
    logits[0, 0] = 50.0
    logits[1, 2] = 50.0
    ce = cross_entropy(logits, labels)
    assert torch.allclose(ce, torch.zeros(3), atol=1e-6)
    wrong = cross_entropy(torch.zeros(3, 3), labels)
    assert wrong[2] == 0 and (wrong[:2] > 1.0).all()


def test_soften_flattens_with_temperature() -> None:
    p = torch.tensor([[0.9, 0.1]])
    assert soften(p, 1.0)[0, 0] > soften(p, 4.0)[0, 0] > 0.5


def test_combined_loss_respects_masks_and_weights() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    teacher = torch.softmax(torch.randn(4, 3), dim=1)
    none = torch.zeros(4, dtype=torch.bool)
    labels = torch.tensor([-1, -1, -1, -1])
    zero = combined_loss(
        logits, labels, teacher, none, teacher, none, w_ce=1, w_ls=1, w_js=1, temperature=2.0
    )
    assert torch.allclose(zero, torch.zeros(4))
    mask = torch.tensor([True, False, True, False])
    only_ls = combined_loss(
        logits, labels, teacher, mask, teacher, none, w_ce=1, w_ls=2, w_js=1, temperature=2.0
    )
    expected = 2 * kl_to_teacher(logits, teacher, 2.0) * mask
    assert torch.allclose(only_ls, expected)
    # student equal to both teachers and no labels: zero loss
    same = torch.softmax(logits, dim=1)
    all_mask = torch.ones(4, dtype=torch.bool)
    z = combined_loss(
        logits, labels, same, all_mask, same, all_mask, w_ce=1, w_ls=1, w_js=1, temperature=3.0
    )
    assert torch.allclose(z, torch.zeros(4), atol=1e-5)


def test_logit_adjusted_cross_entropy_is_minimised_by_prior_free_logits() -> None:
    # labels drawn with prior π: plain CE's best constant logits are log π (the prior);
    # logit-adjusted CE (τ = 1) is minimised at equal logits: the answer carries no prior
    prior = torch.tensor([0.7, 0.2, 0.1])
    labels = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)
    log_prior = torch.log(prior)
    logits = torch.zeros(3, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=1.0)
    for _ in range(300):
        loss = cross_entropy(logits.expand(100, 3), labels, log_prior).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    centred = logits.detach() - logits.detach().mean()
    assert torch.allclose(centred, torch.zeros(3), atol=1e-3)
    plain = cross_entropy(log_prior.expand(100, 3), labels).mean()
    assert cross_entropy(torch.zeros(100, 3), labels, log_prior).mean() == plain
