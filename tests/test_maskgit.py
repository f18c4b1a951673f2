import pytest
import torch
from helpers import TEXT_DIM, tiny_critic, tiny_maskgit

from phenaki_pytorch import CriticTrainer, MaskGit, MaskGitScheduler, SelfCritic, TokenCritic
from phenaki_pytorch.sampling import cosine_schedule, random_training_mask


def test_seed_readme_critic_snippet_reduced():
    maskgit = MaskGit(num_tokens=500, max_seq_len=128, dim=32, dim_context=48, depth=2)
    critic = TokenCritic(num_tokens=500, max_seq_len=128, dim=32, dim_context=48, depth=2)
    critic_trainer = CriticTrainer(maskgit=maskgit, critic=critic)
    video_codes = torch.randint(0, 500, (4, 128))
    loss = critic_trainer(video_codes)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in maskgit.parameters())  # the MaskGit is frozen here
    assert all(p.grad is not None for p in critic.parameters() if p.requires_grad)


def test_maskgit_logits_shape_and_mask_token():
    maskgit = tiny_maskgit()
    ids = torch.randint(0, 64, (2, 32))
    ids[:, ::3] = maskgit.mask_id
    text = torch.randn(2, 5, TEXT_DIM)
    logits = maskgit(ids, text_embeds=text, video_patch_shape=(2, 4))
    assert logits.shape == (2, 32, 64)


@pytest.mark.parametrize("tie_embeddings", [False, True])
def test_logits_at_gives_the_full_logits_at_those_positions_and_the_same_loss(tie_embeddings):
    """Training takes logits at the masked positions only; they, the loss and its gradient must equal the
    full computation's."""
    maskgit = tiny_maskgit(tie_embeddings=tie_embeddings).eval()
    ids = torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(0))
    masked = torch.rand(2, 32, generator=torch.Generator().manual_seed(1)) < 0.5
    inputs, text = ids.masked_fill(masked, maskgit.mask_id), torch.randn(2, 5, TEXT_DIM)
    full = maskgit(inputs, text_embeds=text, video_patch_shape=(2, 4))
    picked = maskgit(inputs, text_embeds=text, video_patch_shape=(2, 4), logits_at=masked)
    assert picked.shape == (int(masked.sum()), 64)
    torch.testing.assert_close(picked, full[masked])
    grads = []
    for logits in (full, picked):
        maskgit.zero_grad()
        maskgit.masked_loss(logits, ids, masked).backward(retain_graph=True)
        grads.append(maskgit.trunk.token_emb.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    with pytest.raises(ValueError, match="logits_at"):
        maskgit(inputs, text_embeds=text, video_patch_shape=(2, 4), logits_at=masked[:, :8])


def test_text_conditioning_matters_and_null_text_is_the_dropped_branch():
    torch.manual_seed(0)
    maskgit = tiny_maskgit().eval()
    ids = torch.randint(0, 64, (2, 16))
    text = torch.randn(2, 5, TEXT_DIM)
    with_text = maskgit(ids, text_embeds=text)
    other_text = maskgit(ids, text_embeds=torch.randn(2, 5, TEXT_DIM))
    assert not torch.allclose(with_text, other_text)
    no_text = maskgit(ids, text_embeds=text, text_mask=torch.zeros(2, 5, dtype=torch.bool))
    always_dropped = maskgit(ids, text_embeds=text, cond_drop_prob=0.999999)
    torch.testing.assert_close(no_text, always_dropped)
    torch.testing.assert_close(no_text, maskgit(ids))  # no text at all = null text


def test_cond_drop_prob_is_used_in_training_only():
    maskgit = tiny_maskgit(cond_drop_prob=0.5)
    ids = torch.randint(0, 64, (64, 8))
    text = torch.randn(64, 3, TEXT_DIM)
    maskgit.train()
    torch.manual_seed(0)
    train_logits = maskgit(ids, text_embeds=text)
    null = maskgit(ids, text_embeds=text, text_mask=torch.zeros(64, 3, dtype=torch.bool), cond_drop_prob=0.0)
    cond = maskgit(ids, text_embeds=text, cond_drop_prob=0.0)
    dropped = torch.isclose(train_logits, null, atol=1e-5).flatten(1).all(-1)
    kept = torch.isclose(train_logits, cond, atol=1e-5).flatten(1).all(-1)
    assert torch.all(dropped ^ kept)
    assert 16 < dropped.sum() < 48  # about half of the rows lost their text
    maskgit.eval()
    torch.testing.assert_close(maskgit(ids, text_embeds=text), cond)


@pytest.mark.parametrize("depth", [2, 4])  # depth 4: the middle two layers merged (the hourglass default)
def test_padding_mask_isolates_real_tokens(depth):
    torch.manual_seed(0)
    maskgit = tiny_maskgit(depth=depth).eval()
    if maskgit.trunk.hourglass:
        torch.nn.init.normal_(maskgit.trunk.lengthen.weight, std=0.1)  # else the merged layers add nothing yet
    ids = torch.randint(0, 64, (1, 16))
    valid = torch.zeros(1, 16, dtype=torch.bool)
    valid[:, :8] = True
    text = torch.randn(1, 3, TEXT_DIM)
    a = maskgit(ids, text_embeds=text, video_mask=valid, video_patch_shape=(2, 4))
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 64
    b = maskgit(changed, text_embeds=text, video_mask=valid, video_patch_shape=(2, 4))
    torch.testing.assert_close(a[:, :8], b[:, :8])


def test_position_scheme_distinguishes_frames():
    torch.manual_seed(0)
    maskgit = tiny_maskgit(unconditional=True).eval()
    ids = torch.full((1, 16), 3)
    logits = maskgit(ids, video_patch_shape=(2, 4))
    assert not torch.allclose(logits[:, 0], logits[:, 8])  # same (h, w), different time
    with pytest.raises(ValueError, match="whole number"):
        maskgit(torch.zeros(1, 10, dtype=torch.long), video_patch_shape=(2, 4))


def test_maskgit_input_validation():
    maskgit = tiny_maskgit()
    with pytest.raises(ValueError, match="max_seq_len"):
        maskgit(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="\\[0, 65\\)"):
        maskgit(torch.full((1, 4), 65))
    with pytest.raises(TypeError, match="integer"):
        maskgit(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="text_embeds must be"):
        maskgit(torch.zeros(1, 4, dtype=torch.long), text_embeds=torch.randn(1, 3, TEXT_DIM + 1))
    with pytest.raises(ValueError, match="dim_context"):
        MaskGit(num_tokens=8, max_seq_len=8, dim=16, depth=1)


def test_unconditional_maskgit_needs_no_text():
    maskgit = tiny_maskgit(unconditional=True, dim_context=None)
    logits = maskgit(torch.randint(0, 64, (2, 8)))
    assert logits.shape == (2, 8, 64)
    with pytest.raises(ValueError, match="unconditional"):
        maskgit.context_kv(torch.randn(1, 2, 3))


def test_random_training_mask_follows_validity_and_schedule():
    g = torch.Generator().manual_seed(0)
    valid = torch.ones(2000, 100, dtype=torch.bool)
    valid[:, 80:] = False
    mask = random_training_mask(valid, g)
    assert not mask[:, 80:].any()
    fraction = mask.sum(-1).float() / 80
    assert (mask.sum(-1) >= 1).all()
    # mean of cos(u * pi / 2) for u ~ U(0, 1) is 2 / pi
    assert abs(fraction.mean().item() - 2 / torch.pi) < 0.03


def test_scheduler_masks_fewer_tokens_each_step_and_never_primed_ones():
    scheduler = MaskGitScheduler(steps=6)
    maskable = torch.ones(1, 20, dtype=torch.bool)
    maskable[:, :4] = False
    counts = []
    for step in range(6):
        mask = scheduler.remask(step, torch.randn(1, 20), maskable)
        assert not mask[:, :4].any()
        counts.append(int(mask.sum()))
    assert counts == sorted(counts, reverse=True) and counts[-1] == 0
    assert counts[0] == int(16 * cosine_schedule(1 / 6))
    assert MaskGitScheduler(steps=6, temperature_rule="linear").sampling_temperature(5) == 0.0


def test_critic_learns_to_separate_real_from_sampled():
    """Real codes use tokens 0-7 only; an untrained MaskGit samples from all 64."""
    torch.manual_seed(0)
    maskgit = tiny_maskgit(unconditional=True, dim_context=None)
    critic = tiny_critic(dim_context=None)
    trainer = CriticTrainer(maskgit=maskgit, critic=critic)
    optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        codes = torch.randint(0, 8, (16, 32), generator=g)
        loss = trainer(codes, generator=g)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    start, end = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert end < 0.5 * start, (start, end)
    assert end < 0.25


def test_critic_loss_counts_masked_positions_only():
    torch.manual_seed(0)
    maskgit = tiny_maskgit(unconditional=True, dim_context=None)

    class Recorder(torch.nn.Module):
        num_tokens = 64

        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, **kwargs):
            # huge "fake" logits on every position: if unmasked (real) positions counted,
            # the loss would explode with their label 0
            return torch.full(x.shape, 20.0) + self.bias

    trainer = CriticTrainer(maskgit=maskgit, critic=Recorder(), objective="errors")
    codes = torch.randint(0, 64, (4, 32))
    loss = trainer(codes)
    # masked positions are nearly all sampled-and-wrong (label 1) -> near-zero loss
    assert loss.item() < 1.0


def test_self_critic_shares_the_trunk():
    maskgit = tiny_maskgit()
    critic = SelfCritic(maskgit)
    logits = critic(torch.randint(0, 64, (2, 8)), text_embeds=torch.randn(2, 3, TEXT_DIM))
    assert logits.shape == (2, 8)
    assert set(dict(critic.named_parameters())) == {"to_logits.weight", "to_logits.bias"}


def test_token_critic_with_cross_attention():
    critic = tiny_critic(has_cross_attn=True)
    text = torch.randn(2, 3, TEXT_DIM)
    ids = torch.randint(0, 64, (2, 8))
    a = critic(ids, text_embeds=text)
    b = critic(ids, text_embeds=torch.randn(2, 3, TEXT_DIM))
    assert a.shape == (2, 8) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="has_cross_attn"):
        TokenCritic(num_tokens=8, max_seq_len=8, dim=16, depth=1, has_cross_attn=True)
    with pytest.raises(ValueError, match="num_tokens"):
        CriticTrainer(maskgit=tiny_maskgit(), critic=tiny_critic(num_tokens=32))


def test_gumbel_sampling_follows_the_distribution():
    from phenaki_pytorch.sampling import gumbel_sample

    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.1, 0.2, 0.7])
    logits = probs.log().expand(20000, 3)
    counts = torch.bincount(gumbel_sample(logits, 1.0, g), minlength=3).float() / 20000
    torch.testing.assert_close(counts, probs, atol=0.02, rtol=0)
    assert torch.equal(gumbel_sample(logits[:5], 0.0, g), torch.full((5,), 2))


def test_tied_output_head_reads_the_embedding_table_and_round_trips(tmp_path):
    maskgit = MaskGit(num_tokens=64, max_seq_len=32, dim=32, depth=1, dim_context=TEXT_DIM, tie_embeddings=True)
    assert not hasattr(maskgit.to_logits, "weight") or not isinstance(maskgit.to_logits.weight, torch.nn.Parameter)
    # no separate output matrix: only the embedding table (with its [MASK] row) holds token vectors
    assert not any(p.shape == (64, 32) for p in maskgit.parameters())
    ids = torch.randint(0, 65, (2, 32))
    text = torch.randn(2, 5, TEXT_DIM)
    maskgit.eval()
    logits = maskgit(ids, text_embeds=text, video_patch_shape=(4, 8))
    assert logits.shape == (2, 32, 64)
    # moving one code's embedding row changes exactly that code's logits at every position (and its inputs)
    with torch.no_grad():
        maskgit.trunk.token_emb.weight[5] += 1.0
    ids_without_5 = ids.masked_fill(ids == 5, 6)
    before = maskgit(ids_without_5, text_embeds=text, video_patch_shape=(4, 8))
    with torch.no_grad():
        maskgit.trunk.token_emb.weight[5] -= 1.0
    after = maskgit(ids_without_5, text_embeds=text, video_patch_shape=(4, 8))
    changed = (before - after).abs().amax(dim=(0, 1)) > 1e-6
    assert changed[5] and changed.sum() == 1
    maskgit.save_pretrained(tmp_path)
    loaded = MaskGit.from_pretrained(tmp_path).eval()
    assert loaded.tie_embeddings
    torch.testing.assert_close(loaded(ids_without_5, text_embeds=text, video_patch_shape=(4, 8)), after)
    # the untied default keeps its own output layer
    assert isinstance(tiny_maskgit().to_logits, torch.nn.Linear)


def test_relative_position_bias_depends_only_on_the_offset_and_round_trips(tmp_path):
    maskgit = MaskGit(num_tokens=64, max_seq_len=48, dim=32, depth=1, dim_context=TEXT_DIM, heads=2, dim_head=16,
                      rel_pos_bias=True)
    bias = maskgit.trunk.rel_pos_bias(3, 4, 4)  # (heads, 48, 48) over a 3x4x4 token grid
    assert bias.shape == (2, 48, 48)

    def index(t, h, w):
        return (t * 4 + h) * 4 + w

    # the same (frame, row, column) offset gives the same bias anywhere in the grid; another offset does not
    torch.testing.assert_close(bias[:, index(0, 0, 0), index(1, 2, 1)], bias[:, index(1, 1, 2), index(2, 3, 3)])
    torch.testing.assert_close(bias[:, index(2, 3, 3), index(1, 1, 2)], bias[:, index(1, 2, 1), index(0, 0, 0)])
    assert not torch.allclose(bias[:, index(0, 0, 0), index(1, 2, 1)], bias[:, index(0, 0, 0), index(1, 1, 2)])

    ids = torch.randint(0, 65, (2, 48))
    text = torch.randn(2, 5, TEXT_DIM)
    logits = maskgit(ids, text_embeds=text, video_patch_shape=(4, 4))
    logits.square().mean().backward()
    assert maskgit.trunk.rel_pos_bias.mlp[0].weight.grad.abs().sum() > 0  # the bias is trained
    # the bias enters the attention: zeroing its last layer changes the logits
    maskgit.eval()
    with torch.no_grad():
        before = maskgit(ids, text_embeds=text, video_patch_shape=(4, 4))
        maskgit.save_pretrained(tmp_path)
        loaded = MaskGit.from_pretrained(tmp_path).eval()
        assert loaded.trunk.rel_pos_bias is not None
        torch.testing.assert_close(loaded(ids, text_embeds=text, video_patch_shape=(4, 4)), before)
        maskgit.trunk.rel_pos_bias.mlp[-1].weight.zero_()
        maskgit.trunk.rel_pos_bias.mlp[-1].bias.zero_()
        assert not torch.allclose(maskgit(ids, text_embeds=text, video_patch_shape=(4, 4)), before)
    assert tiny_maskgit().trunk.rel_pos_bias is None  # off by default


def test_relative_position_bias_is_computed_once_per_decoding_but_follows_weight_updates():
    critic = TokenCritic(num_tokens=64, max_seq_len=48, dim=32, depth=1, heads=2, dim_head=16, rel_pos_bias=True)
    trunk = critic.trunk
    with torch.no_grad():
        first = trunk._attn_bias(48, (4, 4), torch.device("cpu"))
        assert trunk._attn_bias(48, (4, 4), torch.device("cpu")) is first  # every decoding step reuses it
        assert trunk._attn_bias(32, (4, 4), torch.device("cpu")).shape == (2, 32, 32)  # another grid: recomputed
    optimizer = torch.optim.SGD(critic.parameters(), lr=1.0)
    critic(torch.randint(0, 64, (2, 48)), video_patch_shape=(4, 4)).sum().backward()
    optimizer.step()  # an in-place update of the bias MLP
    with torch.no_grad():
        after = trunk._attn_bias(48, (4, 4), torch.device("cpu"))
    assert after is not first and not torch.allclose(after, first)
    torch.testing.assert_close(after, trunk.rel_pos_bias(3, 4, 4))  # the cache holds what a fresh call gives


def test_axial_rotary_scores_depend_only_on_the_grid_offset():
    from phenaki_pytorch.attention import AxialRotary, apply_rotary

    rotary = AxialRotary(dim_head=16, num_dims=3)  # 8 pairs: 2 per axis, the last 2 channels left unrotated
    assert rotary.rotated_dim == 12
    t, h, w = torch.meshgrid(torch.arange(3), torch.arange(4), torch.arange(4), indexing="ij")
    rotations = rotary(t.flatten(), h.flatten(), w.flatten())
    assert rotations.shape == (48, 8) and rotations.is_complex()
    q, k = torch.randn(2, 1, 1, 16).expand(-1, 48, 2, -1).unbind(0)  # the same query and key at every position
    q_rot, k_rot = apply_rotary(q[None], rotations)[0], apply_rotary(k[None], rotations)[0]
    torch.testing.assert_close(q_rot.norm(dim=-1), q.norm(dim=-1))  # a rotation keeps the length
    torch.testing.assert_close(q_rot[..., 12:], q[..., 12:])  # the leftover channels are not rotated
    torch.testing.assert_close(q_rot[0], q[0])  # the origin is not rotated
    assert apply_rotary(q[None].bfloat16(), rotations).dtype == torch.bfloat16
    scores = torch.einsum("ihd,jhd->hij", q_rot, k_rot)

    def index(t, h, w):
        return (t * 4 + h) * 4 + w

    # the same (frame, row, column) offset scores the same anywhere on the grid; another offset does not
    torch.testing.assert_close(scores[:, index(0, 0, 0), index(1, 2, 1)], scores[:, index(1, 1, 2), index(2, 3, 3)])
    torch.testing.assert_close(scores[:, index(2, 0, 3), index(2, 0, 0)], scores[:, index(0, 3, 3), index(0, 3, 0)])
    for other in (index(1, 1, 2), index(0, 2, 1), index(1, 2, 0)):
        assert not torch.allclose(scores[:, index(0, 0, 0), index(1, 2, 1)], scores[:, index(0, 0, 0), other])
    with pytest.raises(ValueError, match="dim_head"):
        AxialRotary(dim_head=4, num_dims=3)
    with pytest.raises(ValueError, match=r"dim_head >= 6, got dim_head=4 \(pass rotary=False"):
        MaskGit(num_tokens=64, max_seq_len=48, dim=32, depth=1, dim_context=TEXT_DIM, heads=2, dim_head=4)
    assert MaskGit(num_tokens=64, max_seq_len=48, dim=32, depth=1, dim_context=TEXT_DIM, heads=2, dim_head=4,
                   rotary=False).trunk.rotary is None


def test_rotary_maskgit_and_critic_use_the_rotation_and_round_trip(tmp_path):
    torch.manual_seed(0)
    maskgit = MaskGit(num_tokens=64, max_seq_len=48, dim=32, depth=1, dim_context=TEXT_DIM, heads=2, dim_head=16,
                      rotary=True).eval()
    plain = MaskGit(num_tokens=64, max_seq_len=48, dim=32, depth=1, dim_context=TEXT_DIM, heads=2, dim_head=16,
                    rotary=False).eval()
    plain.load_state_dict(maskgit.state_dict())  # the rotation has no weights: same parameters, other attention
    ids = torch.randint(0, 65, (2, 48))
    text = torch.randn(2, 5, TEXT_DIM)
    with torch.no_grad():
        out = maskgit(ids, text_embeds=text, video_patch_shape=(4, 4))
        assert not torch.allclose(out, plain(ids, text_embeds=text, video_patch_shape=(4, 4)))
        # the cached rotation of one grid is not reused for another grid of the same length: a (2, 8) forward after
        # the (4, 4) one gives what it gives on a model that has seen no other grid
        other = maskgit(ids, text_embeds=text, video_patch_shape=(2, 8))
        assert not torch.allclose(out, other)
        maskgit.trunk._rotary_cache.clear()
        torch.testing.assert_close(maskgit(ids, text_embeds=text, video_patch_shape=(2, 8)), other)
        torch.testing.assert_close(maskgit(ids, text_embeds=text, video_patch_shape=(4, 4)), out)
        maskgit.save_pretrained(tmp_path)
        loaded = MaskGit.from_pretrained(tmp_path).eval()
        assert loaded.trunk.rotary is not None
        torch.testing.assert_close(loaded(ids, text_embeds=text, video_patch_shape=(4, 4)), out)
    critic = TokenCritic(num_tokens=64, max_seq_len=48, dim=32, depth=1, heads=2, dim_head=16, rotary=True)
    critic(torch.randint(0, 64, (2, 48)), video_patch_shape=(4, 4)).sum().backward()
    assert all(p.grad is not None for p in critic.parameters())
    assert tiny_maskgit().trunk.rotary is not None and tiny_critic().trunk.rotary is None  # the defaults


def test_a_config_saved_before_rotary_existed_loads_without_it(tmp_path):
    import json

    from phenaki_pytorch.serialization import _payload_digest

    maskgit = MaskGit(num_tokens=64, max_seq_len=48, dim=32, depth=1, dim_context=TEXT_DIM, heads=2, dim_head=16,
                      rotary=False).eval()
    maskgit.save_pretrained(tmp_path)
    payload = json.loads((tmp_path / "config.json").read_text())
    for name in ("rotary", "rotary_theta"):  # what an older release wrote
        del payload["config"][name]
    payload["config_sha256"] = _payload_digest(payload)
    (tmp_path / "config.json").write_text(json.dumps(payload))
    loaded = MaskGit.from_pretrained(tmp_path).eval()
    assert loaded.trunk.rotary is None and loaded.config["rotary"] is False
    ids, text = torch.randint(0, 65, (2, 48)), torch.randn(2, 5, TEXT_DIM)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(ids, text_embeds=text, video_patch_shape=(4, 4)), maskgit(ids, text_embeds=text, video_patch_shape=(4, 4))
        )
    assert TokenCritic.upgrade_config({"dim": 8})["rotary"] is False
    assert MaskGit.upgrade_config({"rotary": True})["rotary"] is True


def test_rotary_refuses_a_kv_cache():
    from phenaki_pytorch.attention import AxialRotary, KVCache, Transformer

    transformer = Transformer(16, 1, dim_head=8, heads=2).eval()
    rotations = AxialRotary(8, num_dims=1)(torch.arange(4))
    x = torch.randn(1, 4, 16)
    with torch.no_grad():
        assert transformer(x, rotary=rotations).shape == (1, 4, 16)
        with pytest.raises(ValueError, match="kv_cache"):
            transformer(x, rotary=rotations, kv_cache=KVCache())


def _hourglass_pair():
    """A depth-4 MaskGit with its middle two layers merged, and a depth-2 MaskGit holding its outer two layers."""
    torch.manual_seed(0)
    hourglass = MaskGit(num_tokens=64, max_seq_len=48, dim=32, depth=4, dim_context=TEXT_DIM, heads=2, dim_head=12,
                        hourglass=2).eval()
    outer = MaskGit(num_tokens=64, max_seq_len=48, dim=32, depth=2, dim_context=TEXT_DIM, heads=2, dim_head=12).eval()
    state = {k: v for k, v in hourglass.state_dict().items() if "layers.1." not in k and "layers.2." not in k
             and "shorten" not in k and "lengthen" not in k}
    state = {k.replace("layers.3.", "layers.1."): v for k, v in state.items()}
    outer.load_state_dict(state)
    return hourglass, outer


def test_hourglass_runs_its_middle_layers_on_a_quarter_of_the_tokens_and_starts_as_its_outer_layers():
    hourglass, outer = _hourglass_pair()
    ids, text = torch.randint(0, 65, (2, 48)), torch.randn(2, 5, TEXT_DIM)
    lengths = []
    hooks = [layer.self_attn.register_forward_hook(lambda module, args, out: lengths.append(out.shape[1]))
             for layer in hourglass.trunk.transformer.layers]
    with torch.no_grad():
        out = hourglass(ids, text_embeds=text, video_patch_shape=(4, 4))  # 3 token frames of 4 x 4
    for hook in hooks:
        hook.remove()
    assert lengths == [48, 12, 12, 48]
    # `lengthen` starts at zero: a new hourglass model computes what its full-resolution layers alone compute
    with torch.no_grad():
        torch.testing.assert_close(out, outer(ids, text_embeds=text, video_patch_shape=(4, 4)))
        torch.nn.init.normal_(hourglass.trunk.lengthen.weight, std=0.1)
        assert not torch.allclose(hourglass(ids, text_embeds=text, video_patch_shape=(4, 4)), out)
    hourglass.train()
    hourglass(ids, text_embeds=text, video_patch_shape=(4, 4)).square().mean().backward()
    middle = hourglass.trunk.transformer.layers[1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in middle.parameters())


@pytest.mark.parametrize("h,w", [(4, 6), (3, 5)])
def test_hourglass_merges_each_2x2_block_of_one_frame_and_spreads_it_back_to_the_same_four_tokens(monkeypatch, h, w):
    """Odd grids are padded with zeros for the merge; the padding never comes back."""
    hourglass, _ = _hourglass_pair()
    trunk = hourglass.trunk
    t, d = 3, 32
    seen = []
    monkeypatch.setattr(trunk.transformer, "run_layers", lambda x, indices, **kw: seen.append(x) or x)
    monkeypatch.setattr(trunk.transformer, "norm_out", torch.nn.Identity())
    x = torch.randn(1, t * h * w, d)
    fine = x.reshape(t, h, w, d)
    padded = torch.nn.functional.pad(fine, (0, 0, 0, w % 2, 0, h % 2))
    with torch.no_grad():
        for corner, (dh, dw) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            seen.clear()
            trunk.shorten.weight.zero_(), trunk.shorten.bias.zero_()
            trunk.shorten.weight[:, corner * d:(corner + 1) * d] = torch.eye(d)  # keep one corner of each block
            trunk.lengthen.weight.zero_(), trunk.lengthen.bias.zero_()
            trunk.lengthen.weight[corner * d:(corner + 1) * d] = torch.eye(d)  # and write it back to that corner only
            out = trunk._hourglass_forward(x, (h, w), None, None, None)
            assert out.shape == x.shape
            merged = seen[1].reshape(t, (h + 1) // 2, (w + 1) // 2, d)
            torch.testing.assert_close(merged, padded[:, dh::2, dw::2])
            spread = (out - x).reshape(t, h, w, d)
            torch.testing.assert_close(spread[:, dh::2, dw::2], fine[:, dh::2, dw::2])
            others = torch.ones(h, w, dtype=torch.bool)
            others[dh::2, dw::2] = False
            assert spread[:, others].abs().max() == 0


def test_hourglass_default_arguments_and_round_trip(tmp_path):
    import json

    from phenaki_pytorch.serialization import _payload_digest

    # the default merges all but the first and last layer from depth 4 up, and is saved as resolved
    for depth, expected in ((1, 0), (3, 0), (4, 2), (6, 4)):
        assert tiny_maskgit(depth=depth).trunk.hourglass == expected
        assert tiny_maskgit(depth=depth).config["hourglass"] == expected
    for depth, k in ((4, 3), (2, 1), (4, -1)):
        with pytest.raises(ValueError, match="hourglass must be"):
            tiny_maskgit(depth=depth, hourglass=k)
    with pytest.raises(ValueError, match="rel_pos_bias"):
        tiny_maskgit(depth=3, hourglass=1, rel_pos_bias=True)
    assert tiny_maskgit(depth=4, rel_pos_bias=True).trunk.hourglass == 0  # the default steps aside for the bias

    maskgit = tiny_maskgit(depth=4).eval()
    ids, text = torch.randint(0, 64, (2, 60)), torch.randn(2, 5, TEXT_DIM)
    torch.nn.init.normal_(maskgit.trunk.lengthen.weight, std=0.1)
    with torch.no_grad():
        for shape in ((3, 5), (5, 3), None):  # odd grids, and no grid (one row), are padded for the merge
            assert maskgit(ids, text_embeds=text, video_patch_shape=shape).shape == (2, 60, 64)
        out = maskgit(ids[:, :48], text_embeds=text, video_patch_shape=(4, 4))
        maskgit.save_pretrained(tmp_path / "new")
        loaded = MaskGit.from_pretrained(tmp_path / "new").eval()
        assert loaded.trunk.hourglass == 2
        torch.testing.assert_close(loaded(ids[:, :48], text_embeds=text, video_patch_shape=(4, 4)), out)

    # a config saved before the option existed rebuilds the full-resolution model it was trained as
    plain = tiny_maskgit(depth=4, hourglass=0).eval()
    plain.save_pretrained(tmp_path / "old")
    payload = json.loads((tmp_path / "old" / "config.json").read_text())
    del payload["config"]["hourglass"]
    payload["config_sha256"] = _payload_digest(payload)
    (tmp_path / "old" / "config.json").write_text(json.dumps(payload))
    old = MaskGit.from_pretrained(tmp_path / "old").eval()
    assert old.trunk.hourglass == 0
    with torch.no_grad():
        torch.testing.assert_close(old(ids[:, :48], text_embeds=text, video_patch_shape=(4, 4)),
                                   plain(ids[:, :48], text_embeds=text, video_patch_shape=(4, 4)))
