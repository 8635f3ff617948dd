"""compat.diffusers with diffusers installed: our FlowMatchEulerDiscreteScheduler is diffusers' own class with the
fused step, so its configs load and save as diffusers' do and a real diffusers pipeline runs on it unchanged."""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")  # in the test extra: this runs in CI
from diffusers import FlowMatchEulerDiscreteScheduler as Original  # noqa: E402

from flowkernels.compat import diffusers as fk_diffusers  # noqa: E402

Ours = fk_diffusers.FlowMatchEulerDiscreteScheduler

CONFIGS = {"sd3": dict(shift=3.0), "flux": dict(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
           "terminal": dict(shift=2.0, shift_terminal=0.1), "karras": dict(use_karras_sigmas=True),
           "stochastic": dict(stochastic_sampling=True)}


def settings(config):
    """A scheduler config without diffusers' bookkeeping keys (_class_name, _diffusers_version, ...)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def test_is_a_diffusers_scheduler():
    assert issubclass(Ours, Original)
    assert Ours.step is not Original.step


@pytest.mark.parametrize("config", list(CONFIGS))
def test_from_config_and_save_load_round_trip(config, tmp_path):
    original = Original(**CONFIGS[config])
    ours = Ours.from_config(original.config)
    assert isinstance(ours, Ours) and settings(ours.config) == settings(original.config)
    ours.save_pretrained(tmp_path)
    for cls in (Ours, Original):  # our saved config is diffusers' own file
        loaded = cls.from_pretrained(tmp_path)
        assert type(loaded) is cls and settings(loaded.config) == settings(original.config)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_step_sequence_matches_diffusers(config, dtype):
    """The whole loop of set_timesteps + step against diffusers' scheduler: fp32 equal to float rounding, 16-bit
    within one rounding of the result, float64 exactly (diffusers' own arithmetic)."""
    mu = 0.7 if CONFIGS[config].get("use_dynamic_shifting") else None
    ours, original = Ours(**CONFIGS[config]), Original(**CONFIGS[config])
    for s in (ours, original):
        s.set_timesteps(6, mu=mu)
    torch.testing.assert_close(ours.sigmas, original.sigmas, rtol=0, atol=0)
    torch.testing.assert_close(ours.timesteps, original.timesteps, rtol=0, atol=0)
    w = torch.randn(7, 7, dtype=torch.float64) * 0.3
    x = torch.randn(2, 3, 7, dtype=torch.float64).to(dtype)
    a = b = x
    for t in original.timesteps:
        gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        a = ours.step(torch.tanh(a.double() @ w).to(dtype), t, a, generator=gen_a).prev_sample
        b = original.step(torch.tanh(b.double() @ w).to(dtype), t, b, generator=gen_b).prev_sample
        assert a.dtype == b.dtype == dtype
    if dtype in (torch.float32, torch.float64):
        tol = 1e-6 if dtype == torch.float32 else 0.0
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    else:
        torch.testing.assert_close(a.double(), b.double(), rtol=2 ** -6, atol=2 ** -6)


def tiny_sd3_pipeline(scheduler):
    from diffusers import AutoencoderKL, SD3Transformer2DModel, StableDiffusion3Pipeline
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=1, in_channels=4, out_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                        caption_projection_dim=16, pooled_projection_dim=8, pos_embed_max_size=16)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8,), layers_per_block=1, latent_channels=4,
                        norm_num_groups=2, sample_size=16, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.06, scaling_factor=1.5)
    return StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=None,
                                    tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
                                    tokenizer_3=None)


def test_sd3_pipeline_same_output_with_ours():
    """StableDiffusion3Pipeline from tiny random configs (nothing downloaded; prompt embeddings passed, so no text
    encoder runs), with CFG: the same image with our scheduler as with diffusers', in fp32."""
    original = Original(shift=3.0)
    embeds = dict(prompt_embeds=torch.randn(1, 5, 16), pooled_prompt_embeds=torch.randn(1, 8),
                  negative_prompt_embeds=torch.randn(1, 5, 16), negative_pooled_prompt_embeds=torch.randn(1, 8))
    images = {}
    for name, scheduler in (("diffusers", original), ("ours", Ours.from_config(original.config))):
        pipe = tiny_sd3_pipeline(scheduler)
        pipe.set_progress_bar_config(disable=True)
        images[name] = pipe(height=16, width=16, num_inference_steps=4, guidance_scale=4.0, output_type="pt",
                            generator=torch.Generator().manual_seed(1), **embeds).images
    assert isinstance(pipe.scheduler, Ours)
    assert images["ours"].shape == (1, 3, 16, 16) and torch.isfinite(images["ours"]).all()
    torch.testing.assert_close(images["ours"], images["diffusers"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["standalone", "hunyuan3d"])
@pytest.mark.parametrize("when", ["by-timestep", "begin-index"])
def test_scale_noise_is_the_forward_process(which, when):
    """scale_noise (img2img's forward process) of the standalone and Hunyuan3D schedulers: sigma·noise +
    (1 − sigma)·sample with each scheduler's own sigma (Hunyuan3D's schedule runs the other way), and for the
    standalone scheduler exactly what diffusers' own class returns."""
    from flowkernels.compat.hunyuan3d import FlowMatchEulerDiscreteScheduler as Hunyuan3D
    ours = {"standalone": fk_diffusers.StandaloneFlowMatchEulerDiscreteScheduler, "hunyuan3d": Hunyuan3D}[which]()
    original = Original()
    for s in (ours, original):
        s.set_timesteps(9)
        if when == "begin-index":
            s.set_begin_index(3)
    sample, noise = torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(3, 4, 5, dtype=torch.float64)
    t = ours.timesteps[[2, 5, 7]]
    index = [2, 5, 7] if when == "by-timestep" else [3, 3, 3]
    sigma = ours.sigmas.double()[index].view(-1, 1, 1)
    torch.testing.assert_close(ours.scale_noise(sample, t, noise), sigma * noise + (1 - sigma) * sample)
    if which == "standalone":
        torch.testing.assert_close(ours.scale_noise(sample, t, noise), original.scale_noise(sample, t, noise),
                                   rtol=0, atol=0)
    with pytest.raises(ValueError, match="noise"):
        ours.scale_noise(sample, t, None)
