import pytest
import torch
from helpers import tiny_critic, tiny_maskgit
from torch import nn

from phenaki_pytorch.training import MuonAdamW, muon_param_groups, newton_schulz


@pytest.mark.parametrize("shape", [(3, 24, 80), (3, 80, 24), (3, 32, 32)])
def test_newton_schulz_flattens_the_singular_values(shape):
    generator = torch.Generator().manual_seed(0)
    u, _, v = torch.linalg.svd(torch.randn(*shape, generator=generator), full_matrices=False)
    spread = torch.logspace(0, -2, u.shape[-1])  # singular values over two decades, as a gradient's spread
    grads = u @ torch.diag_embed(spread.expand(shape[0], -1)) @ v
    grads[0] *= 1000.0  # the scale of a gradient does not matter
    ortho = newton_schulz(grads)
    assert ortho.shape == grads.shape and ortho.dtype == torch.float32
    values = torch.linalg.svdvals(ortho)  # (b, min(m, n))
    # the quintic iteration trades exactness for speed: every singular value lands in about [0.7, 1.2]
    assert values.min() > 0.5 and values.max() < 1.3
    # the singular vectors are kept: U V^T up to those values
    assert ((ortho - u @ v).norm(dim=(-2, -1)) / (u @ v).norm(dim=(-2, -1))).max() < 0.3
    # batched = one at a time, and a tall matrix is handled as its transpose
    assert torch.allclose(newton_schulz(grads[1:2]), ortho[1:2], atol=1e-5)
    assert torch.allclose(newton_schulz(grads.mT), ortho.mT, atol=1e-5)


def test_param_groups_put_hidden_matrices_on_muon_and_the_rest_on_adamw():
    maskgit = tiny_maskgit(depth=4)  # an hourglass: shorten / lengthen are matrices too
    groups = muon_param_groups(maskgit, lr=0.5)
    assert [g["muon"] for g in groups] == [True, False] and all(g["lr"] == 0.5 for g in groups)
    names = {id(p): n for n, p in maskgit.named_parameters()}
    muon = {names[id(p)] for p in groups[0]["params"]}
    rest = {names[id(p)] for p in groups[1]["params"]}
    assert muon | rest == set(names.values()) and not muon & rest
    assert any("to_qkv" in n for n in muon) and any("ff" in n for n in muon) and any("shorten" in n for n in muon)
    assert all(p.ndim == 2 for p in groups[0]["params"])
    # embeddings, norms, biases and the output head stay on AdamW
    for name in ("trunk.token_emb.weight", "to_logits.weight", "to_logits.bias"):
        assert name in rest
    assert not any("norm" in n for n in muon)
    # a matrix too small to orthogonalise usefully, or frozen, is not Muon's
    tiny = nn.Sequential(nn.Linear(3, 64), nn.Linear(64, 64))
    tiny[1].weight.requires_grad_(False)
    assert [g["muon"] for g in muon_param_groups(tiny)] == [False]


def test_adamw_groups_step_exactly_as_torch_adamw():
    torch.manual_seed(0)
    a, b = nn.Linear(8, 4), nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    ours = MuonAdamW([{"params": a.parameters(), "muon": False}], lr=0.01, weight_decay=0.1, betas=(0.8, 0.99))
    theirs = torch.optim.AdamW(b.parameters(), lr=0.01, weight_decay=0.1, betas=(0.8, 0.99))
    for step in range(5):
        x = torch.randn(16, 8, generator=torch.Generator().manual_seed(step))
        for model, opt in ((a, ours), (b, theirs)):
            model(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_muon_steps_are_rms_matched_to_adamw_and_decay_the_weights():
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(64, 256))
    start = weight.detach().clone()
    opt = MuonAdamW([{"params": [weight], "muon": True}], lr=1e-2, weight_decay=0.0)
    weight.grad = torch.randn(64, 256)
    opt.step()
    delta = weight.detach() - start
    rms = delta.square().mean().sqrt() / 1e-2
    assert 0.1 < rms < 0.3  # 0.2 x lr: AdamW's typical update RMS, whatever the gradient's scale
    assert torch.linalg.matrix_rank(delta) == 64  # every direction moves, not only the gradient's leading one
    assert "momentum_buffer" in opt.state[weight]
    # decoupled weight decay shrinks the weight by lr * wd before the step
    decayed = MuonAdamW([{"params": [weight], "muon": True}], lr=1e-2, weight_decay=0.5)
    before = weight.detach().clone()
    weight.grad = torch.zeros_like(weight)
    decayed.step()
    assert torch.allclose(weight.detach(), before * (1 - 1e-2 * 0.5), atol=1e-6)


def test_muon_trains_a_maskgit_and_checks_its_arguments():
    maskgit, critic = tiny_maskgit(), tiny_critic()
    opt = MuonAdamW(muon_param_groups(maskgit) + muon_param_groups(critic), lr=3e-3)
    ids = torch.randint(0, maskgit.num_tokens, (2, maskgit.max_seq_len), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(8):
        logits = maskgit(ids.masked_fill(torch.rand(ids.shape) < 0.5, maskgit.mask_id), cond_drop_prob=1.0)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]  # it fits the two sequences: the update direction is a descent direction
    with pytest.raises(ValueError, match="2-d weights"):
        MuonAdamW([{"params": [nn.Parameter(torch.zeros(4))], "muon": True}])
    with pytest.raises(ValueError, match="ns_steps"):
        MuonAdamW(maskgit.parameters(), ns_steps=0)
    with pytest.raises(ValueError, match="momentum"):
        MuonAdamW(maskgit.parameters(), momentum=1.0)
    with pytest.raises(TypeError, match="lr"):
        MuonAdamW(maskgit.parameters(), lr="1e-3")  # a string from a config file
    with pytest.raises(TypeError, match="module"):
        muon_param_groups(maskgit.parameters())  # it needs the module, to see which weights are nn.Linear
