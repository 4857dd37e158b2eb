import pytest
import torch

from ddg_sweep.algorithms.micro_batch import micro_batch_slices, micro_batched_loss


@pytest.mark.parametrize("n,micro,expected", [(10, 0, [(0, 10)]), (10, 10, [(0, 10)]), (10, 25, [(0, 10)]),
                                              (10, 4, [(0, 4), (4, 8), (8, 10)]), (6, 3, [(0, 3), (3, 6)])])
def test_slices_cover_the_batch_once_in_order(n, micro, expected):
    assert [(s.start, s.stop) for s in micro_batch_slices(n, micro)] == expected


def _mean_loss(weights, targets):
    def slice_loss(piece, cond_piece):
        share = len(cond_piece) / len(targets)
        return ((cond_piece @ weights).tanh() - targets[piece]).square().mean() * share
    return slice_loss


def test_micro_batched_loss_and_gradient_equal_the_whole_batch():
    generator = torch.Generator().manual_seed(0)
    weights, targets = torch.randn(5, 3, generator=generator), torch.randn(11, 3, generator=generator)
    leaf = torch.randn(11, 5, generator=generator, requires_grad=True)
    results = []
    for micro in (0, 4):
        leaf.grad = None
        upstream = leaf * 2.0  # c comes out of a graph, as the student's conditioning does
        loss = micro_batched_loss(_mean_loss(weights, targets), upstream, micro)
        (3.0 * loss).backward()  # the outer scale reaches the stored dL/dc
        results.append((loss.item(), leaf.grad.clone()))
    (whole_loss, whole_grad), (micro_loss, micro_grad) = results
    assert micro_loss == pytest.approx(whole_loss, rel=1e-6)
    assert whole_grad.abs().sum() > 0 and torch.allclose(micro_grad, whole_grad, rtol=1e-5, atol=1e-7)


def test_a_slice_whose_loss_needs_no_gradient_contributes_zero():
    cond = torch.randn(6, 2, requires_grad=True)
    loss = micro_batched_loss(lambda piece, c: c.detach().sum() if piece.start == 0 else c.sum(), cond, 3)
    loss.backward()
    assert loss.item() == pytest.approx(cond.sum().item(), rel=1e-6)
    assert torch.equal(cond.grad, torch.tensor([[0.0, 0.0]] * 3 + [[1.0, 1.0]] * 3))
