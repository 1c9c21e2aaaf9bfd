"""Original Lightricks single-file checkpoints: config translation, release detection, key tables, strictness.

Tiny diffusers models are written in the single-file format (keys renamed by ``keymaps_ltx``, config in the
metadata in Lightricks' schema); diffusers' own converters (``convert_ltx_*_checkpoint_to_diffusers``) must
map those files back to the diffusers state dicts, and our loader must give the same tensors.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ltx_batch.weights.checkpoint import open_checkpoint
from ltx_batch.weights.keymaps_ltx import VAE_PREFIX
from ltx_batch.weights.resolve import resolve
from ltx_batch.weights.single_file import (
    RELEASES,
    SingleFileCheckpoint,
    detect_release,
    transformer_config_dict,
    upsampler_config_dict,
    vae_config_dict,
)
from ltx_batch.weights.errors import CheckpointError

from .single_file_data import (
    LT_SCHEDULER_LEGACY,
    LT_SCHEDULER_NEW,
    VAE_STYLES,
    diffusers_transformer,
    file_state,
    lt_transformer,
    model_config,
    randomize,
    write_single_file,
)

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel  # noqa: E402
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_ltx_transformer_checkpoint_to_diffusers,
    convert_ltx_vae_checkpoint_to_diffusers,
)
from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel  # noqa: E402

LATENT = 8


def _scheduler_for(style: str) -> dict:
    return LT_SCHEDULER_NEW if style == "0.9.5" else LT_SCHEDULER_LEGACY


def _models(style: str):
    """(Lightricks configs, diffusers transformer state, diffusers VAE state) for a tiny VAE style."""
    lt_vae, d_vae = VAE_STYLES[style]
    vae = randomize(AutoencoderKLLTXVideo(**d_vae).state_dict(), "vae" + style)
    tr = randomize(LTXVideoTransformer3DModel(**diffusers_transformer(LATENT)).state_dict(), "tr")
    lt_tr = lt_transformer(in_channels=LATENT, causal=True if style == "0.9.5" else None)
    return model_config(lt_vae, lt_tr, _scheduler_for(style)), tr, vae


def _make_file(style: str, folder):
    config, tr, vae = _models(style)
    path = folder / f"tiny-{style}.safetensors"
    write_single_file(path, file_state(transformer=tr, vae=vae, lt_vae=config["vae"]), config)
    return style, path, tr, vae


@pytest.fixture(scope="module", params=sorted(VAE_STYLES))
def model_file(request, tmp_path_factory):
    return _make_file(request.param, tmp_path_factory.mktemp("sf"))


@pytest.fixture(scope="module")
def file_095(tmp_path_factory):
    return _make_file("0.9.5", tmp_path_factory.mktemp("sf"))


def _same(ours: dict, ref: dict) -> None:
    assert ours.keys() == ref.keys(), sorted(ours.keys() ^ ref.keys())[:8]
    bad = [k for k in ref if not torch.equal(ours[k].to(ref[k].dtype), ref[k])]
    assert not bad, bad[:8]


def _file_dict(path) -> dict:
    return load_file(str(path))


def _metadata_config(path) -> dict:
    with safe_open(str(path), "pt") as fh:
        return json.loads(fh.metadata()["config"])


# --- configs and releases -----------------------------------------------------------------------------------


@pytest.mark.parametrize("style", sorted(VAE_STYLES))
def test_vae_config_translation(style):
    lt, expected = VAE_STYLES[style]
    assert vae_config_dict(lt) == expected


# Full-size release configs: Lightricks' schema (its ltx_video/utils/diffusers_config_mapping.py for 0.9.0; the
# 0.9.1 and 0.9.5+ block lists as published) against diffusers' scripts/convert_ltx_to_diffusers.py get_vae_config.
_R = lambda n, noise=None: ["res_x", {"num_layers": n} | ({} if noise is None else {"inject_noise": noise})]  # noqa: E731
_U = ["compress_all", {"residual": True, "multiplier": 2}]
REAL_VAE = {
    "0.9.0": ({"blocks": [["res_x", 4], ["compress_all", 1], ["res_x_y", 1], ["res_x", 3], ["compress_all", 1],
                          ["res_x_y", 1], ["res_x", 3], ["compress_all", 1], ["res_x", 3], ["res_x", 4]]},
              dict(block_out_channels=(128, 256, 512, 512), decoder_block_out_channels=(128, 256, 512, 512),
                   layers_per_block=(4, 3, 3, 3, 4), decoder_layers_per_block=(4, 3, 3, 3, 4),
                   decoder_spatio_temporal_scaling=(True, True, True, False), upsample_factor=(1, 1, 1, 1),
                   timestep_conditioning=False)),
    "0.9.1": ({"timestep_conditioning": True,
               "encoder_blocks": [_R(4), ["compress_all", {}], ["res_x_y", 1], _R(3), ["compress_all", {}],
                                  ["res_x_y", 1], _R(3), ["compress_all", {}], _R(3), _R(4)],
               "decoder_blocks": [_R(5, True), _U, _R(6, True), _U, _R(7, True), _U, _R(8, False)]},
              dict(block_out_channels=(128, 256, 512, 512), decoder_block_out_channels=(256, 512, 1024),
                   layers_per_block=(4, 3, 3, 3, 4), decoder_layers_per_block=(5, 6, 7, 8),
                   decoder_inject_noise=(True, True, True, False), upsample_residual=(True, True, True),
                   upsample_factor=(2, 2, 2), timestep_conditioning=True)),
    "0.9.5": ({"timestep_conditioning": True,
               "encoder_blocks": [_R(4), ["compress_space_res", {"multiplier": 2}], _R(6),
                                  ["compress_time_res", {"multiplier": 2}], _R(6), ["compress_all_res", {"multiplier": 2}],
                                  _R(2), ["compress_all_res", {"multiplier": 2}], _R(2)],
               "decoder_blocks": [_R(5, False), _U, _R(5, False), _U, _R(5, False), _U, _R(5, False)]},
              dict(block_out_channels=(128, 256, 512, 1024, 2048), down_block_types=("LTXVideo095DownBlock3D",) * 4,
                   decoder_block_out_channels=(256, 512, 1024), layers_per_block=(4, 6, 6, 2, 2),
                   decoder_layers_per_block=(5, 5, 5, 5), spatio_temporal_scaling=(True,) * 4,
                   downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
                   upsample_residual=(True,) * 3, upsample_factor=(2,) * 3, timestep_conditioning=True)),
}  # fmt: skip


@pytest.mark.parametrize("release", sorted(REAL_VAE))
def test_real_release_vae_configs_translate_as_diffusers_converts_them(release):
    blocks, expected = REAL_VAE[release]
    lt = {"_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128,
          "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
          "use_quant_conv": False, "causal_decoder": False, **blocks}  # fmt: skip
    got = vae_config_dict(lt)
    assert {k: got[k] for k in expected} == expected
    assert got["latent_channels"] == 128 and got["patch_size"] == 4
    from ltx_batch.models.vae import VAEConfig

    assert VAEConfig.from_dict(got).ratios() == (32, 8)


@pytest.mark.parametrize("size", ["2B", "13B"])
def test_real_transformer_configs_translate(size):
    heads, dim, layers = (32, 64, 28) if size == "2B" else (32, 128, 48)
    got = transformer_config_dict(lt_transformer(in_channels=128, heads=heads, head_dim=dim, layers=layers, caption=4096))
    assert got == diffusers_transformer(128, heads, dim, layers, 4096)  # get_transformer_config("0.9.0" / "0.9.7")


@pytest.mark.parametrize(
    "vae_style, tr, release",
    [("0.9.0", {}, "0.9.0"), ("0.9.1", {}, "0.9.1"), ("0.9.1-blocks", {}, "0.9.1"), ("0.9.5", {"causal": True}, "0.9.5"),
     ("0.9.5", {"causal": True, "heads": 32, "head_dim": 128, "layers": 48}, "0.9.7")],
)  # fmt: skip
def test_release_scheduler_and_pipeline_come_from_the_config(vae_style, tr, release):
    configs = model_config(VAE_STYLES[vae_style][0], lt_transformer(in_channels=8, **tr), LT_SCHEDULER_NEW)
    found = detect_release(configs)
    assert found is RELEASES[release]
    sched = found.scheduler_config()
    if release in ("0.9.0", "0.9.1"):
        assert found.pipeline == "base"
        assert (sched.use_dynamic_shifting, sched.base_shift, sched.max_shift, sched.base_image_seq_len,
                sched.max_image_seq_len, sched.shift_terminal) == (True, 0.95, 2.05, 1024, 4096, 0.1)  # fmt: skip
    else:
        assert found.pipeline == "condition" and not sched.use_dynamic_shifting
        from diffusers import FlowMatchEulerDiscreteScheduler

        ref = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False).config
        assert {k: v for k, v in dataclasses.asdict(sched).items()} == {k: ref[k] for k in dataclasses.asdict(sched)}


def test_checkpoint_reports_release_scheduler_and_configs(model_file):
    style, path, _, _ = model_file
    ckpt = open_checkpoint(str(path))
    assert isinstance(ckpt, SingleFileCheckpoint) and ckpt.path == path.resolve()
    assert ckpt.release.name == style.split("-")[0] and ckpt.revision.startswith("local-")
    assert ckpt.scheduler_config().use_dynamic_shifting == (style != "0.9.5")
    assert dataclasses.asdict(ckpt.vae_config) == dataclasses.asdict(
        type(ckpt.vae_config).from_dict(VAE_STYLES[style][1]))
    assert ckpt.transformer_config.caption_channels == 32


# --- keys: diffusers' converters agree, our loader gives the same tensors -------------------------------------


def test_diffusers_converters_agree_with_our_key_tables(model_file):
    style, path, tr, vae = model_file
    converted = convert_ltx_transformer_checkpoint_to_diffusers(_file_dict(path))
    _same(converted, tr)
    checkpoint = _file_dict(path)
    if style == "0.9.5":
        # diffusers picks its 0.9.5 table when the encoder's last width is 2048 (the released size); a free,
        # expanded stand-in of that width makes its converter take the same branch on this tiny model.
        key = VAE_PREFIX + "encoder.conv_out.conv.weight"
        checkpoint[key] = torch.zeros(()).expand(LATENT + 1, 2048, 3, 3, 3)
    converted = convert_ltx_vae_checkpoint_to_diffusers(checkpoint)
    if style == "0.9.5":
        converted["encoder.conv_out.conv.weight"] = vae["encoder.conv_out.conv.weight"]
    _same(converted, vae)


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", ""])
def test_our_loader_gives_the_diffusers_tensors(model_file, prefix, tmp_path):
    style, path, tr, vae = model_file
    if prefix == "":  # some releases store the transformer without the prefix
        config = _metadata_config(path)
        path = write_single_file(tmp_path / "noprefix.safetensors",
                                 file_state(transformer=tr, vae=vae, lt_vae=config["vae"], prefix=""), config)  # fmt: skip
    ckpt = open_checkpoint(str(path))
    _same(ckpt.load_transformer(dtype=torch.float32).state_dict(), tr)
    _same(ckpt.load_vae(dtype=torch.float32).state_dict(), vae)


def test_upsampler_single_file(tmp_path):
    cfg = dict(in_channels=LATENT, mid_channels=32, num_blocks_per_stage=1, dims=3, spatial_upsample=True,
               temporal_upsample=False)  # fmt: skip
    state = randomize(LTXLatentUpsamplerModel(**cfg).state_dict(), "up")
    path = write_single_file(tmp_path / "up.safetensors", state, {"_class_name": "LatentUpsampler", **cfg})
    ckpt = open_checkpoint(str(path))
    _same(ckpt.load_upsampler(dtype=torch.float32).state_dict(), state)
    with pytest.raises(CheckpointError, match="latent upsampler file; it has no transformer"):
        ckpt.load_transformer(dtype=torch.float32)
    # absent keys take Lightricks' defaults (LatentUpsampler.from_config), not diffusers'
    assert upsampler_config_dict({"in_channels": 128})["dims"] == 2
    assert upsampler_config_dict({"in_channels": 128})["mid_channels"] == 128


def test_fp8_file_loads_cast_to_the_compute_dtype(tmp_path):
    config, tr, vae = _models("0.9.5")
    fp8 = {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v.to(torch.bfloat16) for k, v in tr.items()}
    path = write_single_file(tmp_path / "fp8.safetensors", file_state(transformer=fp8, vae=vae, lt_vae=config["vae"]),
                             config)  # fmt: skip
    model = open_checkpoint(str(path)).load_transformer(dtype=torch.float32)
    _same(model.state_dict(), {k: v.to(torch.float32) for k, v in fp8.items()})
    assert all(p.dtype == torch.float32 for p in model.parameters())


# --- strictness and clear errors ----------------------------------------------------------------------------


def _rewrite(path, tmp_path, edit, config_edit=lambda c: c) -> SingleFileCheckpoint:
    tensors = _file_dict(path)
    edit(tensors)
    edited = write_single_file(tmp_path / "edited.safetensors", tensors, config_edit(_metadata_config(path)))
    return SingleFileCheckpoint(str(edited), resolve(str(edited)))


def test_missing_and_unexpected_keys_are_named(file_095, tmp_path):
    _, path, _, _ = file_095
    gone = "vae.decoder.conv_in.conv.weight"
    ckpt = _rewrite(path, tmp_path, lambda t: t.pop(gone))
    with pytest.raises(CheckpointError, match=rf"VAE weights do not match its config: missing key\(s\): {gone}"):
        ckpt.load_vae(dtype=torch.float32)
    ckpt = _rewrite(path, tmp_path, lambda t: t.update({"model.diffusion_model.extra.weight": torch.ones(1),
                                                        "vae.decoder.extra": torch.ones(1)}))  # fmt: skip
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): model.diffusion_model.extra.weight"):
        ckpt.load_transformer(dtype=torch.float32)
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): vae.decoder.extra"):
        ckpt.load_vae(dtype=torch.float32)


@pytest.mark.parametrize(
    "section, edit, message",
    [("vae", {"norm_layer": "group_norm"}, r"vae.norm_layer is 'group_norm'; only 'pixel_norm'"),
     ("vae", {"spatial_padding_mode": "reflect"}, r"vae.spatial_padding_mode is 'reflect'"),
     ("vae", {"future_switch": 1}, r"vae: unknown key\(s\) \['future_switch'\]"),
     ("transformer", {"standardization_norm": "layer_norm"}, r"transformer.standardization_norm is 'layer_norm'"),
     ("transformer", {"positional_embedding_max_pos": [20, 1024, 1024]}, r"positional_embedding_max_pos"),
     ("transformer", {"_class_name": "AVTransformer3DModel"}, r"expected 'Transformer3DModel'")],
)  # fmt: skip
def test_configs_we_cannot_compute_are_refused_by_name(file_095, tmp_path, section, edit, message):
    _, path, _, _ = file_095
    ckpt = _rewrite(path, tmp_path, lambda t: None, lambda c: {**c, section: {**c[section], **edit}})
    with pytest.raises(CheckpointError, match=message):
        getattr(ckpt, f"load_{section}")(dtype=torch.float32)


def test_file_without_config_metadata_and_text_encoder_errors(file_095, tmp_path):
    _, path, _, _ = file_095
    bare = tmp_path / "bare.safetensors"
    save_file({"x": torch.ones(1)}, str(bare))
    with pytest.raises(CheckpointError, match="no 'config' in its safetensors metadata"):
        open_checkpoint(str(bare)).scheduler_config()
    with pytest.raises(CheckpointError, match="set model.text_encoder to a folder or hub repo with text_encoder/"):
        open_checkpoint(str(path)).load_text_encoder(dtype=torch.float32)
    with pytest.raises(CheckpointError, match="transformer \\+ VAE file; it has no upsampler"):
        open_checkpoint(str(path)).load_upsampler(dtype=torch.float32)


def test_key_names_of_the_releases():
    """Spot checks of the file names, independent of diffusers' substring renames (which accept either form):
    Lightricks' ResnetBlock3D has a 1x1 ``conv_shortcut`` Conv3d and a LayerNorm wrapper ``norm3.norm``; its
    blocks are one flat list per encoder/decoder; the decoder's final time embedder is ``last_time_embedder``."""
    from ltx_batch.weights.keymaps_ltx import transformer_file_key, vae_layout

    base = {"_class_name": "CausalVideoAutoencoder", "dims": 3, "latent_channels": 128, "patch_size": 4,
            "norm_layer": "pixel_norm", "latent_log_var": "uniform", "use_quant_conv": False}  # fmt: skip
    v090 = vae_layout({**base, **REAL_VAE["0.9.0"][0]}).file_key
    assert v090("encoder.down_blocks.0.conv_out.conv_shortcut.conv.weight") == "vae.encoder.down_blocks.2.conv_shortcut.weight"
    assert v090("encoder.down_blocks.1.conv_out.norm3.bias") == "vae.encoder.down_blocks.5.norm3.norm.bias"
    assert v090("encoder.mid_block.resnets.3.conv2.conv.bias") == "vae.encoder.down_blocks.9.res_blocks.3.conv2.conv.bias"
    assert v090("decoder.up_blocks.3.conv_in.conv1.conv.weight") == "vae.decoder.up_blocks.7.conv1.conv.weight"
    assert v090("decoder.up_blocks.2.upsamplers.0.conv.conv.weight") == "vae.decoder.up_blocks.5.conv.conv.weight"
    assert v090("latents_std") == "vae.per_channel_statistics.std-of-means"
    v091 = vae_layout({**base, **REAL_VAE["0.9.1"][0]}).file_key
    assert v091("decoder.time_embedder.timestep_embedder.linear_1.weight") == (
        "vae.decoder.last_time_embedder.timestep_embedder.linear_1.weight")
    assert v091("decoder.scale_shift_table") == "vae.decoder.last_scale_shift_table"
    assert v091("decoder.up_blocks.0.resnets.1.per_channel_scale1") == "vae.decoder.up_blocks.2.res_blocks.1.per_channel_scale1"
    assert v091("decoder.mid_block.time_embedder.timestep_embedder.linear_2.bias") == (
        "vae.decoder.up_blocks.0.time_embedder.timestep_embedder.linear_2.bias")
    v095 = vae_layout({**base, **REAL_VAE["0.9.5"][0]}).file_key
    assert v095("encoder.down_blocks.3.downsamplers.0.conv.conv.weight") == "vae.encoder.down_blocks.7.conv.conv.weight"
    assert v095("encoder.mid_block.resnets.0.conv1.conv.weight") == "vae.encoder.down_blocks.8.res_blocks.0.conv1.conv.weight"
    assert transformer_file_key("time_embed.emb.timestep_embedder.linear_1.weight") == (
        "adaln_single.emb.timestep_embedder.linear_1.weight")
    assert transformer_file_key("transformer_blocks.27.attn2.norm_k.weight") == "transformer_blocks.27.attn2.k_norm.weight"
    assert transformer_file_key("proj_in.bias") == "patchify_proj.bias"


def test_absent_keys_take_lightricks_defaults():
    """An absent key means what Lightricks' code makes of it, which may be a model we do not implement."""
    raw = lt_transformer(in_channels=8)
    del raw["standardization_norm"]  # Transformer3DModel's default: layer_norm
    with pytest.raises(CheckpointError, match=r"standardization_norm is 'layer_norm' \(Lightricks' default"):
        transformer_config_dict(raw)
    raw = lt_transformer(in_channels=8)
    del raw["caption_channels"]
    with pytest.raises(CheckpointError, match=r"transformer.caption_channels is missing"):
        transformer_config_dict(raw)
    vae = {k: v for k, v in VAE_STYLES["0.9.5"][0].items() if k != "use_quant_conv"}  # default: True
    with pytest.raises(CheckpointError, match=r"vae.use_quant_conv is True \(Lightricks' default"):
        vae_config_dict(vae)
