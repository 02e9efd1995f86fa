"""Gaussian diffusion for the video U-Net: noise schedules, training loss, DDIM sampling.

Defaults follow the VideoCrafter2 / LDM setup: the LDM "linear" schedule (a linspace of
sqrt(beta) from 0.00085 to 0.012, squared) over 1000 steps, eps prediction, MSE loss.
v-prediction, the cosine schedule (Nichol & Dhariwal) and a resolution shift of either schedule (`shift`,
Hoogeboom et al. 2023: every timestep's signal-to-noise ratio divided by shift**2, for inputs smaller than
the schedule was made for) are options. The DDIM sampler
uses the same uniform timestep grid as the official sampler (t = 1, 1 + c, 1 + 2c, ... below 1000,
c = 1000 // steps; see ddim_timesteps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")

# model(x[B,C,T,H,W], t[B], context[B,N,D], fps[B]) -> prediction [B,C,T,H,W]
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "linear"
    linear_start: float = 0.00085
    linear_end: float = 0.012
    timesteps: int = 1000
    prediction: str = "eps"
    shift: float = 1.0
    # VideoCrafter2's data scale (use_scale, scale_b, mid_step): x_t = sqrt(abar_t) * s_t * x0 + sqrt(1 - abar_t) * eps,
    # s_t falling linearly from 1 at t = 0 to x0_scale_end at t = x0_scale_steps - 1, then constant. 1.0 = off; the
    # released 512 v2.0 model was trained with 0.7 over 400 steps, so sampling it must undo the same scale.
    x0_scale_end: float = 1.0
    x0_scale_steps: int = 400

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"diffusion.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"diffusion.prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if not self.shift >= 1.0:
            raise ValueError(f"diffusion.shift must be >= 1 (1 = no shift), got {self.shift!r}")
        if self.x0_scale_end != 1.0 and (self.prediction != "eps" or not 1 <= self.x0_scale_steps <= self.timesteps):
            raise ValueError("diffusion.x0_scale_end needs prediction eps and 1 <= x0_scale_steps <= timesteps")


def beta_schedule(cfg: DiffusionConfig) -> torch.Tensor:
    """Betas in float64, shape [timesteps]."""
    n = cfg.timesteps
    if cfg.schedule == "linear":
        betas = torch.linspace(cfg.linear_start**0.5, cfg.linear_end**0.5, n, dtype=torch.float64) ** 2
    else:
        s = 8e-3  # cosine offset from Nichol & Dhariwal, as in LDM
        steps = torch.linspace(0, 1, n + 1, dtype=torch.float64)
        alphas_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        alphas_bar = alphas_bar / alphas_bar[0]
        betas = (1 - alphas_bar[1:] / alphas_bar[:-1]).clamp(0, 0.999)
    if cfg.shift == 1.0:
        return betas
    # SNR / shift^2 at every t: a small image keeps its layout visible through more noise than a large one
    # (its pixels average the noise away), so the unshifted schedule spends few steps where only the text can
    # tell the layout. abar' = SNR' / (1 + SNR') = abar / (abar + shift^2 (1 - abar)).
    alphas_bar = torch.cumprod(1 - betas, dim=0)
    shifted = alphas_bar / (alphas_bar + cfg.shift**2 * (1 - alphas_bar))
    previous = torch.cat([torch.ones(1, dtype=torch.float64), shifted[:-1]])
    return (1 - shifted / previous).clamp(0, 0.999)


def x0_scales(cfg: DiffusionConfig) -> torch.Tensor:
    """s_t of every timestep (see DiffusionConfig.x0_scale_end), float64 [timesteps]."""
    scales = torch.full((cfg.timesteps,), cfg.x0_scale_end, dtype=torch.float64)
    scales[: cfg.x0_scale_steps] = torch.linspace(1.0, cfg.x0_scale_end, cfg.x0_scale_steps, dtype=torch.float64)
    return scales


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] broadcast to like's rank, as float32 on like's device."""
    out = values.to(like.device)[t].float()
    return out.reshape(-1, *([1] * (like.dim() - 1)))


class GaussianDiffusion:
    def __init__(self, cfg: DiffusionConfig = DiffusionConfig()):
        self.cfg = cfg
        self.betas = beta_schedule(cfg)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)
        self.sqrt_ab = self.alphas_cumprod.sqrt()
        self.sqrt_1m_ab = (1 - self.alphas_cumprod).sqrt()
        self.x0_scales = x0_scales(cfg)

    @property
    def num_timesteps(self) -> int:
        return self.cfg.timesteps

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return _at(self.sqrt_ab * self.x0_scales, t, x0) * x0 + _at(self.sqrt_1m_ab, t, x0) * noise

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.cfg.prediction == "eps":
            return noise
        return _at(self.sqrt_ab, t, x0) * noise - _at(self.sqrt_1m_ab, t, x0) * x0

    def to_eps_and_x0(self, pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Convert a model prediction at x_t into (eps, x0) estimates (x0 unscaled: see x0_scale_end)."""
        a, s = _at(self.sqrt_ab, t, x_t), _at(self.sqrt_1m_ab, t, x_t)
        if self.cfg.prediction == "eps":
            return pred, (x_t - s * pred) / a / _at(self.x0_scales, t, x_t)
        return a * pred + s * x_t, a * x_t - s * pred

    def loss(
        self,
        model: Denoiser,
        x0: torch.Tensor,
        context: torch.Tensor,
        fps: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """MSE between the model output and the target at a uniformly drawn timestep.

        All randomness comes from `generator`, so a step is reproducible from its seed alone.
        """
        b = x0.shape[0]
        t = torch.randint(0, self.num_timesteps, (b,), generator=generator, device=generator.device)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=torch.float32)
        t, noise = t.to(x0.device), noise.to(x0.device)
        x_t = self.q_sample(x0.float(), t, noise)
        pred = model(x_t, t, context, fps)
        return F.mse_loss(pred.float(), self.target(x0.float(), t, noise))

    def ddim_timesteps(self, steps: int) -> torch.Tensor:
        """The official 'uniform' grid (lvdm make_ddim_timesteps): range(0, T, T // steps) + 1, ascending.

        As in the official sampler (whose length assert is commented out) the grid can hold more than
        `steps` timesteps where steps does not divide T: 30 steps give c = 33 and 31 timesteps, 1..991.
        Where c divides T - 1 the official grid ends at T, which is no timestep (the official sampler raises
        IndexError: for T = 1000 that is 3, 9, 27, 36-37, 101-111, 251-333 and 501-1000 steps); that entry is
        left out, so 3 steps give 1, 334, 667 and 501..1000 steps all give the 999 timesteps 1..T-1.
        """
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"DDIM steps must be in 1..{self.num_timesteps} (the training timesteps), got {steps}")
        grid = torch.arange(0, self.num_timesteps, self.num_timesteps // steps) + 1
        return grid[grid < self.num_timesteps]

    @torch.no_grad()
    def ddim_sample(
        self,
        model: Denoiser,
        shape: tuple[int, ...],
        context: torch.Tensor,
        uncond_context: torch.Tensor | None,
        fps: torch.Tensor,
        steps: int = 50,
        eta: float = 1.0,
        guidance: float = 12.0,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """DDIM with classifier-free guidance: eps = eps_u + guidance * (eps_c - eps_u).

        `generator` (a CPU generator) draws the initial noise and every eta noise term, so the
        result is a function of its seed.
        """
        ts = self.ddim_timesteps(steps)
        ab = self.alphas_cumprod
        alphas = ab[ts]
        alphas_prev = torch.cat([ab[:1], ab[ts[:-1]]])
        scales_prev = torch.cat([self.x0_scales[:1], self.x0_scales[ts[:-1]]])
        sigmas = eta * ((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev)).sqrt()
        x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
        guided = uncond_context is not None and guidance != 1.0
        for i in reversed(range(len(ts))):
            t = torch.full((shape[0],), int(ts[i]), device=device, dtype=torch.long)
            if guided:
                pred2 = model(
                    torch.cat([x, x]), torch.cat([t, t]), torch.cat([context, uncond_context]), torch.cat([fps, fps])
                ).float()
                eps_c, x0_c = self.to_eps_and_x0(pred2[: shape[0]], x, t)
                eps_u, x0_u = self.to_eps_and_x0(pred2[shape[0] :], x, t)
                eps = eps_u + guidance * (eps_c - eps_u)
                x0 = x0_u + guidance * (x0_c - x0_u)
            else:
                eps, x0 = self.to_eps_and_x0(model(x, t, context, fps).float(), x, t)
            a_prev, sigma, scale_prev = float(alphas_prev[i]), float(sigmas[i]), float(scales_prev[i])
            noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
            x = a_prev**0.5 * scale_prev * x0 + (1 - a_prev - sigma**2) ** 0.5 * eps + sigma * noise
        return x


def drop_captions(captions: list[str], rate: float, generator: torch.Generator) -> list[str]:
    """Replace each caption by '' with probability `rate` (classifier-free guidance training)."""
    keep = torch.rand(len(captions), generator=generator) >= rate
    return [c if k else "" for c, k in zip(captions, keep.tolist())]
