"""Our network computes what the official MixFormerV2 computes (parity fixture, S and B)."""
import numpy as np
import pytest
import torch

from parity import fixture_state_dict, load_npz
from mixformer_ros.model import MixFormerV2Config, build_mixformerv2, config_from_state_dict, sincos_2d, variant_config

SIDES = ("prob_l", "prob_t", "prob_r", "prob_b")


@pytest.fixture(scope="module", params=["S", "B"])
def case(request):
    variant = request.param
    net = build_mixformerv2(variant)
    net.load_state_dict(fixture_state_dict(variant), strict=True)
    ref = load_npz(f"network_{variant}_seed0.npz")
    inputs = [torch.from_numpy(ref[k]) for k in ("input_template", "input_online_template", "input_search")]
    return variant, net, ref, inputs


def run_with_block_outputs(net, inputs):
    blocks = []
    hooks = [b.register_forward_hook(lambda m, i, o: blocks.append(o.detach().clone())) for b in net.backbone.blocks]
    try:
        with torch.no_grad():
            out = net(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return out, blocks


def test_outputs_match_official(case):
    variant, net, ref, inputs = case
    out, _ = run_with_block_outputs(net, inputs)
    np.testing.assert_allclose(out["pred_boxes"].numpy(), ref["pred_boxes"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["pred_scores"].numpy(), ref["pred_scores_logit"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(torch.sigmoid(out["pred_scores"]).numpy(), ref["pred_scores_sigmoid"], rtol=0, atol=1e-5)
    for side in SIDES:
        np.testing.assert_allclose(out[side].numpy(), ref[side], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["pred_tokens"].numpy(), ref["pred_tokens_final"], rtol=0, atol=1e-4)
    assert out["pred_boxes"].shape == (1, 1, 4) and out["pred_scores"].shape == (1,)


def test_per_block_values_match_official(case):
    variant, net, ref, inputs = case
    _, blocks = run_with_block_outputs(net, inputs)
    assert len(blocks) == variant_config(variant).depth
    first8 = np.stack([b[0, -4:, :8].numpy() for b in blocks])  # (depth, 4, 8)
    np.testing.assert_allclose(first8, ref["pred_tokens_first8_per_block"], rtol=0, atol=1e-4)
    np.testing.assert_allclose([b.double().mean().item() for b in blocks], ref["block_output_mean"], rtol=0, atol=1e-4)
    np.testing.assert_allclose([b.double().std().item() for b in blocks], ref["block_output_std"], rtol=0, atol=1e-4)
    cfg = variant_config(variant)
    parts = torch.split(blocks[-1][0].double(), [cfg.template_tokens, cfg.template_tokens, cfg.search_tokens, 4])
    np.testing.assert_allclose([p.mean().item() for p in parts], ref["final_part_mean"], rtol=0, atol=1e-4)
    np.testing.assert_allclose([p.std().item() for p in parts], ref["final_part_std"], rtol=0, atol=1e-4)


def test_search_patch_embedding_matches_official(case):
    _, net, ref, inputs = case
    with torch.no_grad():
        emb = net.backbone.patch_embed(inputs[2])  # (1, Ns, C), before position tables
    np.testing.assert_allclose(emb[0, :4, :8].numpy(), ref["search_patch_embed_first8"], rtol=0, atol=1e-5)


def test_template_cache_equals_full_forward(case):
    _, net, _, inputs = case
    t, ot, s = inputs
    with torch.no_grad():
        full = net(t, ot, s)
        kv = net.encode_templates(t, ot)
        cached = net.forward_search(s, kv)
        # The same cache serves every new search image.
        other = torch.randn_like(s)
        full_other, cached_other = net(t, ot, other), net.forward_search(other, kv)
    cfg = net.config
    assert kv.shape == (cfg.depth, 2, 1, cfg.num_heads, 2 * cfg.template_tokens, cfg.embed_dim // cfg.num_heads)
    for a, b in ((full, cached), (full_other, cached_other)):
        for key in ("pred_boxes", "pred_scores", *SIDES):
            np.testing.assert_allclose(b[key].numpy(), a[key].numpy(), rtol=0, atol=1e-6)
        # The cached path's last block multiplies 4 rows instead of all of them, so float32 sums are
        # blocked differently: tokens of magnitude ~2 differ in the last bits (2.3e-6 seen for B).
        np.testing.assert_allclose(b["pred_tokens"].numpy(), a["pred_tokens"].numpy(), rtol=0, atol=1e-5)


def test_batched_forward_equals_single(case):
    _, net, _, inputs = case
    t, ot, s = inputs
    with torch.no_grad():
        single = net(t, ot, s)["pred_boxes"]
        batched = net(t.repeat(3, 1, 1, 1), ot.repeat(3, 1, 1, 1), torch.cat([s, s.flip(-1), s]))["pred_boxes"]
    np.testing.assert_allclose(batched[0].numpy(), single[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(batched[2].numpy(), single[0].numpy(), atol=1e-6)


@pytest.mark.parametrize("variant", ["S", "B"])
def test_sincos_tables_equal_official_constructor(variant):
    ref = load_npz(f"sincos_{variant}.npz")
    cfg = variant_config(variant)
    np.testing.assert_array_equal(sincos_2d(768, cfg.template_size // 16), ref["pos_embed_t"][0])
    np.testing.assert_array_equal(sincos_2d(768, cfg.search_size // 16), ref["pos_embed_s"][0])
    # A freshly built network carries the same tables.
    net = build_mixformerv2(variant)
    np.testing.assert_array_equal(net.backbone.pos_embed_t.detach().numpy(), ref["pos_embed_t"])


@pytest.mark.parametrize("variant,keys_file", [("S", "keys-small.txt"), ("B", "keys-base.txt")])
def test_state_dict_layout_is_official(variant, keys_file):
    from paths import FIXTURE_DIR

    official = {}
    for line in (FIXTURE_DIR / keys_file).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        _, key, shape, *_ = line.split("\t")
        official[key] = tuple(int(n) for n in shape.split("x"))
    ours = {k: tuple(v.shape) for k, v in build_mixformerv2(variant).state_dict().items()}
    assert ours == official
    assert sum(p.numel() for p in build_mixformerv2(variant).parameters()) == {"S": 16228897, "B": 58855201}[variant]


@pytest.mark.parametrize("variant", ["S", "B"])
def test_config_is_inferred_from_checkpoint_shapes(variant):
    assert config_from_state_dict(fixture_state_dict(variant)) == variant_config(variant)


def test_student_shapes_build_and_run():
    cfg = MixFormerV2Config(depth=2, embed_dim=128, num_heads=4, mlp_ratio=2.0, template_size=64, search_size=128, num_bins=32)
    net = build_mixformerv2(cfg)
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64), torch.randn(2, 3, 128, 128))
    assert out["pred_boxes"].shape == (2, 1, 4) and out["side_logits"].shape == (2, 4, 32)
    assert config_from_state_dict(net.state_dict(), num_heads=4) == cfg


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="divisible"):
        MixFormerV2Config(embed_dim=100, num_heads=12)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        MixFormerV2Config(search_size=250)
