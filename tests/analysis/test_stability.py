"""Path-stability measurements: gate overlap, cross-gating, the random-gate control, kernel classifiers."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import randomize_batchnorm
from utils.analysis.cross_gating import (cross_gated_logits, cross_gated_predictions, cross_gating_matrices,
                                         cross_gating_metrics, cross_gating_rows, gates_of, predictions,
                                         random_gates_like)
from utils.analysis.gating import excitation_kernel, gate_patterns, input_kernel
from utils.analysis.kernel_knn import excitation_kernels, kernel_knn_accuracy, kernel_knn_predict, penultimate_features
from utils.analysis.overlap import GateMismatchError, gate_jaccard, jaccard_matrix
from utils.experiments.training.checkpoints import list_checkpoints, load_checkpoint
from utils.models.nets import PoolResNet
from utils.paths import CHECKPOINTS as CHECKPOINTS_ROOT

CHECKPOINTS = CHECKPOINTS_ROOT / "seed0"


class TinyConv(nn.Module):
    """Five ReLU calls: a reused in-place module (twice), ``Tensor.relu_`` whose result is ignored,
    ``F.relu`` on a residual sum, ``torch.relu``; BatchNorm and max-pools in between.
    ``linear=True`` replaces every ReLU by the identity (the reference for all-ones gates)."""

    def __init__(self, linear: bool = False):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv3, self.bn3 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.relu, self.pool = nn.ReLU(inplace=True), nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Linear(32, 16), nn.Linear(16, 5)
        self.linear = linear

    def act(self, fn, h):
        return h if self.linear else fn(h)

    def forward(self, x):
        h = self.pool(self.act(self.relu, self.bn1(self.conv1(x))))
        h = self.act(self.relu, self.bn2(self.conv2(h)))
        h2 = self.bn3(self.conv3(h))
        if not self.linear:
            h2.relu_()  # in place, return value unused
        h = self.pool(self.act(F.relu, h2 + h))
        return self.fc2(self.act(torch.relu, self.fc1(h.flatten(1))))


def tiny(seed=0, dtype=torch.float32, linear=False):
    torch.manual_seed(seed)
    return randomize_batchnorm(TinyConv(linear), seed).to(dtype).eval()


def images(n=4, size=8, dtype=torch.float32, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(dtype)


# --- cross-gating -----------------------------------------------------------------------------------

def test_own_hard_gates_reproduce_tiny_net_exactly():
    model, x = tiny(), images()
    gates = gates_of(model, x)
    assert len(gates) == 5 and gates[0].shape == (4, 8, 8, 8) and gates[4].shape == (4, 16)
    assert all(((g == 0) | (g == 1)).all() and 0 < g.mean() < 1 for g in gates)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(cross_gated_logits(model, gates, x), expected)
        # The gates act: all ones turn every ReLU into the identity, i.e. the linear network.
        ones = [torch.ones_like(g) for g in gates]
        linear = tiny(linear=True)(x)
        assert torch.equal(cross_gated_logits(model, ones, x), linear)
        assert not torch.allclose(linear, expected, atol=1e-3)
        # Another model's gates give other logits.
        assert not torch.allclose(cross_gated_logits(model, gates_of(tiny(seed=5), x), x), expected, atol=1e-3)


def test_own_hard_gates_reproduce_poolresnet_exactly():
    torch.manual_seed(0)
    model = randomize_batchnorm(PoolResNet()).eval()
    x = images(2, 64)
    gates = gates_of(model, x)
    assert len(gates) == 2 + 2 * 5  # stem convs + two calls per residual block
    with torch.no_grad():
        assert torch.equal(cross_gated_logits(model, gates, x), model(x))


def test_soft_gates_are_sigmoid_of_preactivations_and_tend_to_hard():
    model, x = tiny(dtype=torch.float64), images(dtype=torch.float64)
    hard, soft = gates_of(model, x), gates_of(model, x, temperature=0.3)
    flat = gate_patterns(model, x, temperature=0.3)
    assert all(torch.equal(s.flatten(1), f) for s, f in zip(soft, flat))
    assert all(((s > 0) & (s < 1)).all() for s in soft)
    with torch.no_grad():
        cold = cross_gated_logits(model, gates_of(model, x, temperature=1e-9), x)
        torch.testing.assert_close(cold, model(x), rtol=1e-12, atol=1e-12)
        assert not torch.allclose(cross_gated_logits(model, soft, x), model(x), atol=1e-3)
    assert all(torch.equal(h, (s > 0.5).double()) for h, s in zip(hard, soft))


def test_mismatched_gates_raise_clear_errors():
    model, x = tiny(), images()
    gates = gates_of(model, x)
    with pytest.raises(GateMismatchError, match="more ReLU calls than the 4 gate tensors"):
        cross_gated_logits(model, gates[:4], x)
    with pytest.raises(GateMismatchError, match="made 5 ReLU calls but 6 gate tensors"):
        cross_gated_logits(model, gates + [gates[-1]], x)
    with pytest.raises(GateMismatchError, match="ReLU call 0: gate shape"):
        cross_gated_logits(model, gates, x[:3])  # gates of other inputs
    with pytest.raises(GateMismatchError, match="5 and 3 ReLU call sites"):
        gate_jaccard(gates, gates[:3])
    with pytest.raises(ValueError, match="hard gates"):
        gate_jaccard(gates, gates_of(model, x, temperature=0.3))
    with pytest.raises(ValueError, match="training mode"):
        cross_gated_logits(tiny().train(), gates, x)


# --- Jaccard ----------------------------------------------------------------------------------------

def test_gate_jaccard_known_values():
    a = [torch.tensor([[1, 0, 1, 1]]), torch.zeros(1, 3)]
    b = [torch.tensor([[1, 1, 0, 1]]), torch.zeros(1, 3)]
    assert gate_jaccard(a, b) == pytest.approx(0.75)  # site 0: 2 / 4; site 1: both empty -> 1
    assert torch.equal(gate_jaccard(a, b, per_site=True), torch.tensor([0.5, 1.0], dtype=torch.float64))
    # Pooled over samples, not averaged per sample: |A ∩ B| = 4 + 0, |A ∪ B| = 4 + 2 -> 2/3 (per sample: 1/2).
    a, b = [torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])], [torch.tensor([[1, 1, 1, 1], [0, 1, 0, 0]])]
    assert gate_jaccard(a, b) == pytest.approx(2 / 3)


def test_jaccard_self_is_one_and_other_init_is_less():
    x = images(5)
    a, b = tiny(0), tiny(3)
    ga = gates_of(a, x)
    assert gate_jaccard(ga, gates_of(a, x)) == 1.0
    ab = gate_jaccard(ga, gates_of(b, x))
    assert 0 < ab < 0.9
    m = jaccard_matrix([a, b, a], x, chunk_size=2)  # pooled over uneven chunks
    assert m.shape == (3, 3) and m.dtype == torch.float64
    assert torch.equal(m.diagonal(), torch.ones(3, dtype=torch.float64)) and m[0, 2] == 1.0
    assert torch.equal(m, m.T)
    assert m[0, 1].item() == pytest.approx(ab, abs=1e-12)
    sites = jaccard_matrix([a, b], x, chunk_size=3, per_site=True)
    assert sites.shape == (2, 2, 5)
    torch.testing.assert_close(sites[0, 1], gate_jaccard(ga, gates_of(b, x), per_site=True))


# --- random-gate control ----------------------------------------------------------------------------

def test_random_gates_keep_sparsity_per_site_and_sample():
    model, x = tiny(), images()
    gates = gates_of(model, x)
    rnd = random_gates_like(gates, torch.Generator().manual_seed(0))
    for g, r in zip(gates, rnd):
        assert r.shape == g.shape and r.dtype == g.dtype and ((r == 0) | (r == 1)).all()
        assert torch.equal(r.flatten(1).sum(1), g.flatten(1).sum(1))  # hard gates: exact counts
        assert not torch.equal(r, g)
    soft = gates_of(model, x, temperature=0.3)
    for s, r in zip(soft, random_gates_like(soft, torch.Generator().manual_seed(1))):
        units = s[0].numel()
        assert ((r.flatten(1).mean(1) - s.flatten(1).mean(1)).abs() <= 0.5 / units + 1e-6).all()


def test_random_gates_pick_units_uniformly():
    gates = [torch.tensor([[1.0, 1, 1, 0, 0, 0, 0, 0, 0, 0]]).repeat(2000, 1)]  # 3 of 10 active per sample
    rnd = random_gates_like(gates, torch.Generator().manual_seed(0))[0]
    assert torch.equal(rnd.sum(1), torch.full((2000,), 3.0))
    # Each unit is active in 30% of samples (binomial sd ~1%), not only the originally active ones.
    assert ((rnd.mean(0) - 0.3).abs() < 0.04).all()
    again = random_gates_like(gates, torch.Generator().manual_seed(0))[0]
    assert torch.equal(rnd, again)


def xor_task(seed=0):
    """Two classes by quadrant (XOR): only a genuinely nonlinear gating solves it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(456, 2, generator=g) * 4 - 2
    return x[:256], x[256:], ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long().split([256, 200])


def test_cross_gating_matrices_own_gates_beat_random_control():
    xtr, xte, (ytr, yte) = xor_task()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
    init = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(150):
        loss = F.cross_entropy(net(xtr), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    start = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
    with torch.no_grad():
        for p, q in zip(start.parameters(), init):
            p.copy_(q)
    models = [start.eval(), net.eval()]

    own = cross_gating_matrices(models, xte, yte, chunk_size=64)
    assert own["accuracy"].shape == own["correlation"].shape == own["agreement"].shape == (2, 2)
    torch.testing.assert_close(own["accuracy"].diagonal(), own["own_accuracy"])
    torch.testing.assert_close(own["correlation"].diagonal(), torch.ones(2, dtype=torch.float64))
    assert torch.equal(own["agreement"].diagonal(), torch.ones(2, dtype=torch.float64))
    assert own["own_accuracy"][1] >= 0.95
    rnd = cross_gating_matrices(models, xte, yte, chunk_size=64, control=torch.Generator().manual_seed(0))
    assert rnd["accuracy"][1, 1] < 0.7 < own["accuracy"][1, 1]
    assert rnd["correlation"][1, 1] < 0.5


def test_cross_gated_predictions_are_rows_of_the_matrices():
    models, x, labels = [tiny(0), tiny(3), tiny(4)], images(7), torch.tensor([0, 1, 2, 3, 4, 0, 1])
    full = cross_gating_matrices(models, x, labels, temperature=0.3, chunk_size=3)
    # Bit equality only between identical computations: a different chunking may take other conv kernels
    # (AMD and Intel CPUs differ here), so every exact comparison below uses the same chunk size on both sides.
    own = [predictions(m, x, labels, chunk_size=2) for m in models]
    with torch.no_grad():
        logits = torch.cat([models[1](x[i:i + 2]) for i in range(0, len(x), 2)])
    assert torch.equal(own[1]["pred"], logits.argmax(1))
    assert torch.equal(own[1]["true"], logits.gather(1, labels[:, None])[:, 0].double())
    own_pred, own_true = torch.stack([o["pred"] for o in own]), torch.stack([o["true"] for o in own])
    row = cross_gated_predictions(models[2], models, x, labels, temperature=0.3, chunk_size=4)
    assert row["pred"].shape == row["true"].shape == (3, 7) and row["active"].shape == (5,)
    soft = gates_of(models[2], x, temperature=0.3)
    torch.testing.assert_close(row["active"], torch.tensor([g.double().mean().item() for g in soft],
                                                           dtype=torch.float64))
    metrics = cross_gating_metrics(row["pred"], row["true"], own_pred, own_true, labels)
    for key in ("accuracy", "correlation", "agreement"):
        torch.testing.assert_close(metrics[key], full[key][2])
    hard = cross_gated_predictions(models[0], models[:1], x, labels, chunk_size=2)
    assert torch.equal(hard["pred"][0], own[0]["pred"]) and torch.equal(hard["true"][0], own[0]["true"])
    # Several kinds of gates from one recording pass: the same rows, and f^(s) itself from that pass.
    both = cross_gating_rows(models[2], models, x, labels, (None, 0.3), chunk_size=4)
    assert both["pred"].shape == (2, 3, 7) and both["active"].shape == (2, 5)
    assert torch.equal(both["pred"][1], row["pred"]) and torch.equal(both["true"][1], row["true"])
    assert torch.equal(both["active"][1], row["active"])
    assert torch.equal(both["pred"][0], cross_gated_predictions(models[2], models, x, labels, chunk_size=4)["pred"])
    same_chunks = predictions(models[2], x, labels, chunk_size=4)
    assert torch.equal(both["own_pred"], same_chunks["pred"]) and torch.equal(both["own_true"], same_chunks["true"])


# --- kernels and kNN --------------------------------------------------------------------------------

def test_knn_on_block_diagonal_kernel_is_perfect():
    train_labels = torch.arange(3).repeat_interleave(6)  # 3 classes x 6 points
    val_labels = torch.tensor([2, 0, 1, 1])
    kernel = (val_labels[:, None] == train_labels[None, :]).double() + 0.01 * torch.rand(4, 18)
    for k in (1, 5):
        assert kernel_knn_accuracy(kernel, train_labels, val_labels, k) == 1.0
    assert kernel_knn_accuracy(kernel, train_labels, (val_labels + 1) % 3, 1) == 0.0


def test_knn_k_changes_the_answer_and_ties_go_to_larger_similarity():
    train_labels = torch.tensor([1, 0, 0, 0, 0, 1])
    kernel = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.1]])
    assert kernel_knn_predict(kernel, train_labels, 1).tolist() == [1]
    assert kernel_knn_predict(kernel, train_labels, 5).tolist() == [0]
    assert kernel_knn_predict(kernel, train_labels, 2).tolist() == [1]  # 1 vote each, 0.9 > 0.8
    assert kernel_knn_predict(kernel, torch.tensor([0, 1, 0, 0, 0, 1]), 2).tolist() == [0]


def test_blockwise_kernels_match_excitation_kernel():
    model, x, y = tiny(dtype=torch.float64), images(5, dtype=torch.float64), images(7, dtype=torch.float64, seed=7)
    hard, soft = excitation_kernels(model, x, y, (None, 0.3), chunk_size=2, block_size=3)
    torch.testing.assert_close(hard, excitation_kernel(model, x, y, None, normalise=True), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(soft, excitation_kernel(model, x, y, 0.3, normalise=True), rtol=1e-12, atol=1e-14)
    assert not torch.allclose(hard, soft)
    (single,) = excitation_kernels(tiny(), x.float(), y.float(), (0.3,), chunk_size=4, block_size=2)
    torch.testing.assert_close(single, soft, rtol=1e-4, atol=1e-7)  # float32 Gram products


def test_penultimate_features_feed_fc():
    torch.manual_seed(0)
    model = randomize_batchnorm(PoolResNet()).eval()
    x = images(3, 32)
    feats = penultimate_features(model, x, chunk_size=2)
    assert feats.shape == (3, 512)
    with torch.no_grad():
        torch.testing.assert_close(model.fc(feats), model(x))
    assert input_kernel(feats).diagonal().allclose(torch.ones(3, dtype=torch.float64))


# --- real checkpoints (two loads) ---------------------------------------------------------------------

@pytest.mark.skipif(not (CHECKPOINTS / "epoch_00.00.pt").exists(), reason="no training checkpoints")
def test_checkpoints_list_load_and_gate():
    found = list_checkpoints(CHECKPOINTS)
    epochs = [e for e, _ in found]
    assert epochs == sorted(epochs) and epochs[0] == 0.0 and 0.25 in epochs
    first, later = load_checkpoint(found[0][1]), load_checkpoint(dict(found)[0.25])
    assert not first.training and next(first.parameters()).dtype == torch.float32
    x = images(2, 32).clamp(-1, 1)
    with torch.no_grad():
        assert torch.equal(cross_gated_logits(later, gates_of(later, x), x), later(x))
    j = jaccard_matrix([first, later], x)
    assert j[0, 0] == j[1, 1] == 1.0 and 0 < j[0, 1] < 1
