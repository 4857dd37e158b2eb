"""SWAD: the loss-valley window on hand-made loss sequences, the averaged weights, resume."""
import io

import pytest
import torch
from torch import nn

from ddg_sweep.swad import SWAD, LossValley, loss_valley_window, recompute_batchnorm

STEPS = 34
HPARAMS = {"swad_start": 2, "swad_n_converge": 3, "swad_n_tolerance": 6, "swad_tolerance_ratio": 0.3}

# Worked by hand with n_converge 3, n_tolerance 6, tolerance_ratio 0.3:
# windows of 3: [5,4,3] [4,3,2] [3,2,2.2] have their minimum later; [2.0,2.2,2.1] (segment 3)
# starts at its minimum -> converged at 3, threshold 1.3 * 2.1 = 2.73.
# look-ahead minima: seg 4 [2.2..3.5] 2.1, seg 5 2.1, seg 6 [2.5..3.1] 2.4, seg 7 2.4 -> join;
# seg 8 [3.0,3.5,3.2,3.1,3.3,3.4] min 3.0 > 2.73 -> the valley ends; the late 2.0 never joins.
VALLEY_LOSSES = [5.0, 4.0, 3.0, 2.0, 2.2, 2.1, 2.5, 2.4, 3.0, 3.5, 3.2, 3.1, 3.3, 3.4, 3.6, 2.0]
VALLEY_WINDOW = (3, 7)


def test_window_on_hand_made_losses():
    assert loss_valley_window(VALLEY_LOSSES) == VALLEY_WINDOW


def test_window_still_open_at_the_end_is_judged_on_the_segments_left():
    # [2, 2.5, 2.4] converges at 1 (threshold 1.3 * 2.3 = 2.99); 2.5, 2.4, 2.6 all stay under it
    assert loss_valley_window([3.0, 2.0, 2.5, 2.4, 2.6]) == (1, 4)


def test_single_spike_inside_the_valley_is_tolerated():
    # converged at 0 (threshold 1.3); the spike at 3 has a later 1.0 within its 6-segment look-ahead
    assert loss_valley_window([1.0, 1.0, 1.0, 5.0, 1.0, 1.0]) == (0, 5)


def test_never_converging_loss_has_no_window():
    assert loss_valley_window([5.0, 4.0, 3.0, 2.0, 1.0]) is None


def test_online_rule_accepts_a_segment_only_once_its_look_ahead_exists():
    valley = LossValley(3, 6, 0.3)
    accepted = [valley.observe(loss) for loss in VALLEY_LOSSES[:6]]
    assert accepted == [[], [], [], [], [], [3]]
    assert valley.threshold == pytest.approx(2.73)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)


def set_weights(net: Net, step: int) -> torch.Tensor:
    """Distinct weights per step; BN's running mean records the step."""
    generator = torch.Generator().manual_seed(step)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) + step)
        net.norm.running_mean.fill_(step)
    return torch.cat([p.detach().flatten().clone() for p in net.parameters()])


def feed(swad: SWAD, net: Net, steps, losses: list[float]) -> dict[int, torch.Tensor]:
    """Checkpoint every second step (1, 3, 5, ...): with swad_start 2, segment i = steps 2i+2, 2i+3."""
    fed = {}
    for step in steps:
        fed[step] = set_weights(net, step)
        swad.update(net, step)
        if step % 2 == 1 and step >= HPARAMS["swad_start"]:
            swad.end_segment(step, losses[(step - 3) // 2])
    return fed


def flat(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_averaged_weights_are_the_mean_of_the_weights_fed_in_the_window():
    net, swad = Net(), SWAD(HPARAMS, STEPS)
    fed = feed(swad, net, range(34), VALLEY_LOSSES)
    model, info = swad.averaged()
    window_steps = range(2 * 3 + 2, 2 * 7 + 4)  # segments 3..7 = steps 8..17
    expected = torch.stack([fed[s] for s in window_steps]).mean(0)
    torch.testing.assert_close(flat(model), expected)
    assert info["swad_start_step"] == 8 and info["swad_end_step"] == 17
    assert info["n_averaged"] == 10 and info["n_segments"] == 5 and info["rule"] == "loss valley"
    assert torch.all(model.norm.running_mean == 17)  # buffers of the last averaged segment, until recomputed
    assert not torch.equal(flat(model), flat(net))  # a copy; the online network is untouched


def test_unconverged_loss_falls_back_to_the_last_segments():
    net, swad = Net(), SWAD(HPARAMS, STEPS)
    fed = feed(swad, net, range(12), [5.0, 4.0, 3.0, 2.0, 1.0])
    model, info = swad.averaged()
    expected = torch.stack([fed[s] for s in range(6, 12)]).mean(0)  # segments 2, 3, 4
    torch.testing.assert_close(flat(model), expected)
    assert info["rule"].startswith("fallback") and info["n_segments"] == 3


def test_swad_start_beyond_the_last_checkpoint():
    net, swad = Net(), SWAD({**HPARAMS, "swad_start": 100}, STEPS)
    feed(swad, net, range(20), [1.0] * 10)
    model, info = swad.averaged()
    assert model is None and info["n_averaged"] == 0

    swad = SWAD({**HPARAMS, "swad_start": 17}, STEPS)
    fed = {step: set_weights(net, step) for step in range(20)}
    for step in range(20):
        set_weights(net, step)
        swad.update(net, step)
    model, info = swad.averaged()
    torch.testing.assert_close(flat(model), torch.stack([fed[s] for s in (17, 18, 19)]).mean(0))
    assert "no checkpoint after swad_start" in info["rule"]


def test_state_dict_round_trip_resumes_exactly():
    net, swad = Net(), SWAD(HPARAMS, STEPS)
    feed(swad, net, range(16), VALLEY_LOSSES)  # converged, mid-valley, with an open segment
    buffer = io.BytesIO()
    torch.save(swad.state_dict(), buffer)
    buffer.seek(0)
    resumed = SWAD(HPARAMS, STEPS)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    for key in ("valley", "segment_log"):
        assert resumed.state_dict()[key] == swad.state_dict()[key]

    net_resumed = Net()
    feed(swad, net, range(16, 34), VALLEY_LOSSES)
    feed(resumed, net_resumed, range(16, 34), VALLEY_LOSSES)
    (model, info), (model_resumed, info_resumed) = swad.averaged(), resumed.averaged()
    assert info == info_resumed
    assert torch.equal(flat(model), flat(model_resumed))


def test_swad_start_as_a_fraction_of_the_steps():
    assert SWAD({**HPARAMS, "swad_start": 0.625}, 8000).swad_start == 5000
    assert SWAD({**HPARAMS, "swad_start": 0.625}, 100).swad_start == 62  # round(62.5) to even
    assert SWAD({**HPARAMS, "swad_start": 40}, 100).swad_start == 40


def test_recomputed_batchnorm_statistics_are_those_of_the_averaged_weights_on_the_data():
    """The averaged model's statistics differ from the last segment's and equal a direct recomputation."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    swad = SWAD({**HPARAMS, "swad_start": 0}, 12)
    data = [torch.randn(16, 3) * 2 + 1 for _ in range(3)]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    for step in range(12):
        loss = net(data[step % 3]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        swad.update(net, step)
        if step % 2 == 1:
            swad.end_segment(step, 1.0)  # a flat loss converges at once
    model, info = swad.averaged(template=net)
    last_segment_mean = model[1].running_mean.clone()
    model.eval()
    seen = recompute_batchnorm(model, data)
    assert seen == 48
    assert not torch.allclose(model[1].running_mean, last_segment_mean)
    with torch.no_grad():  # by hand: the averaged first layer's outputs over all the data
        hidden = torch.cat([model[0](x) for x in data])
    torch.testing.assert_close(model[1].running_mean, hidden.mean(0))
    # PyTorch's running_var is the unbiased batch variance, averaged over batches (momentum None)
    per_batch = torch.stack([model[0](x).var(0, unbiased=True) for x in data]).detach().mean(0)
    torch.testing.assert_close(model[1].running_var, per_batch)
    assert model[1].momentum == 0.1 and not model.training  # settings and mode restored


def test_recompute_batchnorm_leaves_a_model_without_batchnorm_alone():
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    before = [t.clone() for t in net.state_dict().values()]
    assert recompute_batchnorm(net, [torch.randn(5, 3)]) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, net.state_dict().values()))
