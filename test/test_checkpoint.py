"""Checkpoint loading: official layout, bare state_dict, our own format, and clear failures."""
import logging

import numpy as np
import pytest
import torch

from parity import fixture_state_dict
from mixformer_ros.model import (
    CheckpointError,
    MixFormerV2Config,
    build_mixformerv2,
    load_model,
    read_checkpoint,
    save_checkpoint,
)


def same_weights(model, state_dict):
    return all(torch.equal(model.state_dict()[k], v) for k, v in state_dict.items())


def test_official_layout_loads_strictly(tmp_path):
    path = tmp_path / "mixformerv2_small.pth.tar"
    torch.save({"net": fixture_state_dict("S"), "epoch": 40, "net_type": "MixFormer"}, path)
    model = load_model(checkpoint=path)
    assert model.config.depth == 4 and model.config.mlp_ratio == 1.0
    assert same_weights(model, fixture_state_dict("S"))


def test_bare_and_ddp_prefixed_state_dicts_load(tmp_path):
    bare = tmp_path / "bare.pth"
    torch.save(fixture_state_dict("S"), bare)
    assert same_weights(load_model(checkpoint=bare), fixture_state_dict("S"))
    ddp = tmp_path / "ddp.pth"
    torch.save({"net": {"module." + k: v for k, v in fixture_state_dict("S").items()}}, ddp)
    assert same_weights(load_model(checkpoint=ddp), fixture_state_dict("S"))
    in_memory = {"module." + k: v for k, v in fixture_state_dict("S").items()}  # e.g. a DDP model's state_dict()
    assert same_weights(load_model(state_dict=in_memory), fixture_state_dict("S"))


def test_own_format_records_its_config(tmp_path):
    cfg = MixFormerV2Config(depth=2, embed_dim=96, num_heads=3, mlp_ratio=1.0, template_size=64, search_size=128, num_bins=24)
    model = build_mixformerv2(cfg)
    path = tmp_path / "student.pth.tar"
    save_checkpoint(path, model, epoch=3)
    state_dict, recorded, extra = read_checkpoint(path)
    assert recorded == cfg and extra["epoch"] == 3
    loaded = load_model(checkpoint=path)  # num_heads=3 is not inferable from shapes: the record supplies it
    assert loaded.config == cfg and same_weights(loaded, model.state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["student.pth.tar"]  # no temporary file left beside it


def test_a_head_count_guessed_from_shapes_is_said_aloud(caplog):
    """Widths other than the released 768 may not have 64-wide heads; the shapes cannot tell."""
    with caplog.at_level(logging.WARNING):
        assert load_model(state_dict=fixture_state_dict("S")).config.num_heads == 12
    assert "guessing" not in caplog.text  # the released width: 12 heads of 64
    narrow = build_mixformerv2(MixFormerV2Config(depth=1, embed_dim=128, num_heads=4, mlp_ratio=1.0,
                                                 template_size=32, search_size=64, num_bins=16))
    with caplog.at_level(logging.WARNING):
        assert load_model(state_dict=narrow.state_dict()).config.num_heads == 2
    assert "guessing 2 attention head(s) for width 128" in caplog.text


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="not found: .*nothing.pth"):
        load_model(checkpoint=tmp_path / "nothing.pth")


def test_corrupt_and_truncated_files_are_reported(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_model(checkpoint=junk)
    good = tmp_path / "good.pth"
    torch.save({"net": fixture_state_dict("S")}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        load_model(checkpoint=truncated)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"net": fixture_state_dict("S"), "settings": np.dtype("float32").__class__}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model(checkpoint=path)


def test_wrong_shapes_and_keys_are_listed():
    sd = dict(fixture_state_dict("S"))
    sd["box_head.layers.1.0.weight"] = torch.zeros(95, 768)
    del sd["score_head.layers.1.bias"]
    sd["backbone.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_model(state_dict=sd, config="S")
    message = str(err.value)
    assert "score_head.layers.1.bias" in message and "backbone.extra" in message
    assert "box_head.layers.1.0.weight: checkpoint (95, 768) vs model (96, 768)" in message


def test_variant_mismatch_is_refused():
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_model(state_dict=fixture_state_dict("S"), config="B")


def test_shapes_alone_rebuild_any_mlp_width_and_a_head_count_that_divides(caplog):
    """448 * (976 / 448) is 975.99... in floating point: the inferred ratio must still give 976."""
    odd = build_mixformerv2(MixFormerV2Config(depth=1, embed_dim=448, num_heads=7, mlp_ratio=976.5 / 448,
                                              template_size=32, search_size=64, num_bins=16))
    assert odd.config.mlp_hidden == 976
    with caplog.at_level(logging.WARNING):
        inferred = load_model(state_dict=odd.state_dict()).config
    assert inferred.mlp_hidden == 976 and inferred.num_heads == 7  # 448 // 64, which divides 448
    narrow = build_mixformerv2(MixFormerV2Config(depth=1, embed_dim=352, num_heads=4, mlp_ratio=1.0,
                                                 template_size=32, search_size=64, num_bins=16))
    assert load_model(state_dict=narrow.state_dict()).config.num_heads == 4  # 352 // 64 = 5 does not divide 352


def test_other_trainers_containers_and_non_float_weights(tmp_path):
    sd = fixture_state_dict("S")
    for key in ("state_dict", "model"):
        path = tmp_path / f"{key}.pth"
        torch.save({key: sd, "epoch": 3}, path)
        assert same_weights(load_model(checkpoint=path, config="S"), sd)
    torch.save({"optimizer": {"lr": 1.0}}, tmp_path / "no_weights.pth")
    with pytest.raises(CheckpointError, match="holds no state_dict of tensors .*optimizer"):
        load_model(checkpoint=tmp_path / "no_weights.pth")
    integers = {k: v.to(torch.int64) for k, v in sd.items()}
    with pytest.raises(CheckpointError, match="box_head.layers.1.0.weight: checkpoint torch.int64 vs model torch.float32"):
        load_model(state_dict=integers, config="S")
    torch.save({"net": sd, "config": {"depth": "4", "wings": 2}}, tmp_path / "bad_config.pth")
    with pytest.raises(CheckpointError, match="bad_config.pth: its recorded network config is not usable"):
        load_model(checkpoint=tmp_path / "bad_config.pth")


def test_random_bytes_are_called_corrupt_not_unsafe(tmp_path):
    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="noise.pth: not a readable PyTorch checkpoint"):
        load_model(checkpoint=noise)
