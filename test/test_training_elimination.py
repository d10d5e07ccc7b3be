"""Layer elimination: a pruned, renumbered checkpoint equals the decayed model at rate 0."""
from __future__ import annotations

import torch

from mixformer_ros.model import MixFormerV2Config, build_mixformerv2, load_model, save_checkpoint
from mixformer_ros.training.elimination import make_decayable, prune_layers, reduce_mlp, set_residual_scale

CFG = MixFormerV2Config(depth=4, embed_dim=32, num_heads=2, mlp_ratio=2.0, template_size=32, search_size=64,
                        num_bins=16)


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g),
            torch.randn(2, 3, 64, 64, generator=g))


def test_pruned_checkpoint_matches_decayed_model_at_rate_zero(tmp_path):
    torch.manual_seed(0)
    net = build_mixformerv2(CFG)
    reference = net(*_inputs())["pred_boxes"]
    eliminated = [1, 2]
    blocks = make_decayable(net, eliminated)
    # At rate 1 the swap changes nothing.
    assert torch.allclose(net(*_inputs())["pred_boxes"], reference, atol=1e-6)
    set_residual_scale(blocks, 0.0)
    with torch.no_grad():
        decayed = net(*_inputs())
    sd, cfg = prune_layers(net.state_dict(), net.config, keep=[0, 3])
    assert cfg.depth == 2 and "backbone.blocks.1.norm1.weight" in sd and "backbone.blocks.2.norm1.weight" not in sd
    assert torch.equal(sd["backbone.blocks.1.attn.qkv.weight"], net.state_dict()["backbone.blocks.3.attn.qkv.weight"])
    shallow = build_mixformerv2(cfg)
    shallow.load_state_dict(sd, strict=True)
    path = tmp_path / "pruned.pth.tar"
    save_checkpoint(path, shallow)
    loaded = load_model(checkpoint=path)
    assert loaded.config.depth == 2
    with torch.no_grad():
        out = loaded(*_inputs())
    for key in ("pred_boxes", "pred_scores", "prob_l", "prob_t", "prob_r", "prob_b", "pred_tokens"):
        assert torch.allclose(out[key], decayed[key], atol=1e-5), key


def test_intermediate_rate_differs_from_both_ends():
    torch.manual_seed(1)
    net = build_mixformerv2(CFG)
    blocks = make_decayable(net, [2])
    outs = []
    for rate in (1.0, 0.5, 0.0):
        set_residual_scale(blocks, rate)
        with torch.no_grad():
            outs.append(net(*_inputs())["pred_tokens"])
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])


def test_mlp_reduction_keeps_the_strongest_hidden_units():
    torch.manual_seed(2)
    net = build_mixformerv2(CFG)
    sd, cfg = reduce_mlp(net.state_dict(), net.config, 1.0)
    assert cfg.mlp_hidden == 32
    small = build_mixformerv2(cfg)
    small.load_state_dict(sd, strict=True)
    fc1 = net.state_dict()["backbone.blocks.0.mlp.fc1.weight"]
    fc2 = net.state_dict()["backbone.blocks.0.mlp.fc2.weight"]
    importance = fc1.norm(dim=1) * fc2.norm(dim=0)
    kept = importance.topk(32).indices.sort().values
    assert torch.equal(sd["backbone.blocks.0.mlp.fc1.weight"], fc1[kept])
    assert torch.equal(sd["backbone.blocks.0.mlp.fc2.weight"], fc2[:, kept])
