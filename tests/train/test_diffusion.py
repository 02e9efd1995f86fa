"""Diffusion: the LDM schedules, prediction targets, DDIM exactness on a perfect denoiser, seeded sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.train.diffusion import DiffusionConfig, GaussianDiffusion, beta_schedule, drop_captions
from curate.train.presets import build_unet

pytestmark = pytest.mark.usefixtures("one_thread")


def test_linear_schedule_is_ldm_sqrt_linspace():
    betas = beta_schedule(DiffusionConfig())
    assert betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(0.00085) and betas[-1].item() == pytest.approx(0.012)
    steps = betas.sqrt().diff()
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-12)  # sqrt(beta) is equally spaced
    # SD terminal sqrt(alpha_bar) = 0.068265 (Lin et al. 2024, "Common Diffusion Noise Schedules are Flawed")
    assert torch.cumprod(1 - betas, 0)[-1].sqrt().item() == pytest.approx(0.068265, abs=1e-6)


def test_cosine_schedule_decreases_alpha_bar_to_near_zero():
    ab = torch.cumprod(1 - beta_schedule(DiffusionConfig(schedule="cosine")), 0)
    assert (ab.diff() < 0).all() and ab[-1] < 1e-4 and ab[0] > 0.999


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_shift_divides_every_snr_by_its_square(schedule):
    """SNR = abar / (1 - abar), computed in numpy from the unshifted schedule's betas."""
    base = np.cumprod(1 - beta_schedule(DiffusionConfig(schedule=schedule)).numpy())
    shifted = np.cumprod(1 - beta_schedule(DiffusionConfig(schedule=schedule, shift=4.0)).numpy())
    finite = base < 1 - 1e-12
    ratio = (shifted / (1 - shifted))[finite] / (base / (1 - base))[finite]
    np.testing.assert_allclose(ratio, 1 / 16, rtol=1e-5)
    assert (np.diff(shifted) < 0).all()
    assert torch.equal(beta_schedule(DiffusionConfig(schedule=schedule, shift=1.0)),
                       beta_schedule(DiffusionConfig(schedule=schedule)))


def test_unknown_options_are_rejected():
    with pytest.raises(ValueError, match="prediction"):
        DiffusionConfig(prediction="x0")
    with pytest.raises(ValueError, match="shift"):
        DiffusionConfig(shift=0.5)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_target_converts_back_to_noise_and_x0(prediction):
    d = GaussianDiffusion(DiffusionConfig(prediction=prediction))
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 2, 2, 4, 4, generator=g), torch.randn(3, 2, 2, 4, 4, generator=g)
    t = torch.tensor([0, 500, 999])
    eps, x0_hat = d.to_eps_and_x0(d.target(x0, t, noise), d.q_sample(x0, t, noise), t)
    assert torch.allclose(eps, noise, atol=1e-4) and torch.allclose(x0_hat, x0, atol=1e-3)


def official_uniform_grid(steps: int, timesteps: int = 1000) -> np.ndarray:
    """lvdm.models.utils_diffusion.make_ddim_timesteps('uniform', ...) as released with VideoCrafter:
    c = T // steps; np.asarray(list(range(0, T, c))) + 1, with its length assert commented out."""
    return np.asarray(list(range(0, timesteps, timesteps // steps))) + 1


@pytest.mark.parametrize("steps, expected", [
    (1, [1]),
    (3, [1, 334, 667]),  # official: [1, 334, 667, 1000], and alphas_cumprod[1000] raises IndexError
    (7, [1, 143, 285, 427, 569, 711, 853, 995]),  # c = 142: eight timesteps
    (30, list(range(1, 1000, 33))),  # 31 timesteps, 1..991, as the official sampler runs
    (50, list(range(1, 1000, 20))),
    (250, list(range(1, 1000, 4))),
    (999, list(range(1, 1000))),
    (1000, list(range(1, 1000))),  # official: 1..1000, IndexError at 1000
])
def test_ddim_grid_is_the_official_uniform_grid(steps, expected):
    assert GaussianDiffusion().ddim_timesteps(steps).tolist() == expected


def test_ddim_grid_equals_official_wherever_the_official_one_is_defined():
    d = GaussianDiffusion()
    for steps in range(1, 1001):
        official = official_uniform_grid(steps)
        ours = d.ddim_timesteps(steps).numpy()
        if official.max() < 1000:
            np.testing.assert_array_equal(ours, official)
        else:  # only the one timestep that does not exist is left out
            np.testing.assert_array_equal(ours, official[:-1])
            assert official[-1] == 1000


@pytest.mark.parametrize("steps", [0, -1, 1001])
def test_ddim_steps_outside_the_training_timesteps_are_refused(steps):
    with pytest.raises(ValueError, match="1..1000"):
        GaussianDiffusion().ddim_timesteps(steps)


@pytest.mark.parametrize("steps", [30, 1000])
def test_ddim_sample_visits_every_grid_timestep_once(steps):
    d = GaussianDiffusion()
    seen = []

    def model(x, t, context, fps):
        seen.append(int(t[0]))
        return torch.zeros_like(x)

    out = d.ddim_sample(model, (1, 1, 1, 2, 2), torch.zeros(1, 1, 1), None, torch.ones(1), steps=steps, eta=0.0,
                        generator=torch.Generator().manual_seed(0))
    assert seen == d.ddim_timesteps(steps).flip(0).tolist() and torch.isfinite(out).all()


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("schedule", [{}, {"schedule": "cosine", "shift": 4.0}], ids=["linear", "cosine-shift4"])
def test_ddim_with_a_perfect_denoiser_lands_on_the_data(prediction, eta, schedule):
    """A denoiser that knows x0 predicts the exact target; DDIM must then land on x0 (any eta).

    As in the official sampler, the last step goes to alpha_bar[0] = 1 - 0.00085, so the result keeps
    noise of std sqrt(0.00085) ~ 0.029 around x0.
    """
    d = GaussianDiffusion(DiffusionConfig(prediction=prediction, **schedule))
    x0 = torch.linspace(-1, 1, 2 * 3 * 2 * 4 * 4).reshape(2, 3, 2, 4, 4)

    def oracle(x, t, context, fps):
        a = d.sqrt_ab[t].float().view(-1, 1, 1, 1, 1)
        s = d.sqrt_1m_ab[t].float().view(-1, 1, 1, 1, 1)
        eps = (x - a * x0.repeat(x.shape[0] // 2, 1, 1, 1, 1)) / s
        return eps if prediction == "eps" else a * eps - s * x0.repeat(x.shape[0] // 2, 1, 1, 1, 1)

    ctx = torch.zeros(2, 1, 1)
    out = d.ddim_sample(oracle, x0.shape, ctx, ctx, torch.ones(2), steps=20, eta=eta, guidance=3.0,
                        generator=torch.Generator().manual_seed(0))
    assert (out - x0).abs().mean() < 0.05 and (out - x0).abs().max() < 0.2


def test_ddim_sampling_is_deterministic_given_seed():
    torch.manual_seed(0)
    model = build_unet("tiny", in_channels=3, out_channels=3).eval()
    torch.nn.init.normal_(model.out[-1].weight, std=0.02)  # make the zero-initialised output layer say something
    d = GaussianDiffusion()
    ctx, unc = torch.randn(1, 77, 64), torch.zeros(1, 77, 64)

    def run(seed):
        return d.ddim_sample(model, (1, 3, 2, 8, 8), ctx, unc, torch.tensor([8.0]), steps=2, eta=1.0, guidance=5.0,
                             generator=torch.Generator().manual_seed(seed))

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_loss_is_a_function_of_the_generator():
    d = GaussianDiffusion()
    x0, ctx, fps = torch.randn(2, 3, 2, 4, 4), torch.zeros(2, 1, 1), torch.ones(2)

    def model(x, t, c, f):
        return 0.5 * x

    losses = [d.loss(model, x0, ctx, fps, torch.Generator().manual_seed(s)).item() for s in (7, 7, 8)]
    assert losses[0] == losses[1] != losses[2]


def test_caption_dropout_rate_and_determinism():
    caps = [f"c{i}" for i in range(1000)]
    dropped = drop_captions(caps, 0.1, torch.Generator().manual_seed(0))
    assert dropped == drop_captions(caps, 0.1, torch.Generator().manual_seed(0))
    assert 60 < dropped.count("") < 140
    assert drop_captions(caps, 0.0, torch.Generator()) == caps
    assert set(drop_captions(caps, 1.0, torch.Generator())) == {""}


def _linear_eps(x, t, context, fps):
    """A stand-in denoiser linear in its inputs: depends on x, the timestep, the text and the fps."""
    return 0.5 * x + context[:, :1, :1, None, None] * 0.3 + (t.float() / 1000 + fps / 100)[:, None, None, None, None]


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("scale_end", [1.0, 0.7])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_two_ddim_steps_equal_the_hand_computed_update(eta, scale_end, guidance):
    """Two DDIM steps (timesteps 501, 1) computed here from the alphas alone, in float64, as the DDIM paper's
    update with VideoCrafter2's x0 scale: guided eps, x0 = (x - sqrt(1-a) eps) / sqrt(a) / s_t,
    x <- sqrt(a_prev) s_prev x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z."""
    cfg = DiffusionConfig(x0_scale_end=scale_end, x0_scale_steps=400)
    shape = (1, 2, 3, 2, 2)
    context, uncond, fps = torch.full((1, 4, 5), 0.8), torch.full((1, 4, 5), -0.4), torch.tensor([28.0])
    ours = GaussianDiffusion(cfg).ddim_sample(_linear_eps, shape, context, uncond, fps, steps=2, eta=eta,
                                              guidance=guidance, generator=torch.Generator().manual_seed(7))
    draws = torch.Generator().manual_seed(7)  # the same draws: initial noise, then one per step
    x = torch.randn(shape, generator=draws).double()
    betas = [(0.00085**0.5 + (0.012**0.5 - 0.00085**0.5) * i / 999) ** 2 for i in range(1000)]
    abar, prod = [], 1.0
    for beta in betas:
        prod *= 1 - beta
        abar.append(prod)
    scale = [1 + (scale_end - 1) * t / 399 if t < 400 else scale_end for t in range(1000)]
    for t, t_prev in ((501, 1), (1, None)):
        eps_c = _linear_eps(x, torch.tensor([t]), context.double(), fps.double())
        eps_u = _linear_eps(x, torch.tensor([t]), uncond.double(), fps.double())
        eps = eps_u + guidance * (eps_c - eps_u) if guidance != 1.0 else eps_c
        a, a_prev = abar[t], abar[t_prev] if t_prev else abar[0]
        s_prev = scale[t_prev] if t_prev else scale[0]
        sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5
        x0 = (x - (1 - a) ** 0.5 * eps) / a**0.5 / scale[t]
        x = a_prev**0.5 * s_prev * x0 + (1 - a_prev - sigma**2) ** 0.5 * eps + sigma * torch.randn(shape, generator=draws)
    assert torch.allclose(ours.double(), x, rtol=1e-5, atol=1e-5), (ours.double() - x).abs().max()


def test_x0_scale_enters_the_forward_process():
    cfg = DiffusionConfig(x0_scale_end=0.7, x0_scale_steps=400)
    diffusion = GaussianDiffusion(cfg)
    x0, noise = torch.ones(2, 1, 1, 1, 1), torch.zeros(2, 1, 1, 1, 1)
    x_t = diffusion.q_sample(x0, torch.tensor([0, 600]), noise).flatten()
    assert torch.allclose(x_t, torch.stack([diffusion.sqrt_ab[0], diffusion.sqrt_ab[600] * 0.7]).float())
    with pytest.raises(ValueError, match="x0_scale_end"):
        DiffusionConfig(x0_scale_end=0.7, prediction="v")
