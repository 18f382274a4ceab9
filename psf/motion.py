"""``motion`` PSFs: one camera-shake trajectory per field, imaged at every node.

Camera shake during the exposure is modelled as an in-plane translation of the image (yaw and
pitch of the camera, to first order) plus a roll about the optical axis. The translation path is
the random walk with inertia of Boracchi & Foi, "Modeling the performance of image restoration
from motion blur", IEEE TIP 21(8), 2012 (their trajectory generator: constant speed, velocity
perturbed by Gaussian and centripetal terms, occasional abrupt shakes); the roll angle follows an
independent walk of the same kind, scaled to ``roll_deg`` peak to peak.

A node at offset q from the sensor centre is displaced at time t by ``R(phi_t) q - q + x_t``, so
without roll every node gets the same kernel and with roll the blur grows with the distance from
the centre. The reference pose is the time average (mean translation and mean roll removed), so
the sharp image is the mean position and the blur has no global shift. The kernel is the fraction
of the exposure the point spends in each pixel (dense sampling of the path, binned to pixels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from psf.field import MAX_ATTR_VALUES
from utils.errors import ConfigError


def shake_trajectory(n_steps: int, length: float, anxiety: float, generator: torch.Generator) -> torch.Tensor:
    """[n_steps, 2] positions of a Boracchi-Foi random walk with total path length ``length``."""
    g = generator
    rand = lambda: float(torch.rand((), generator=g, dtype=torch.float64))  # noqa: E731
    centripetal = 0.7 * rand()
    prob_big_shake = 0.2 * rand()
    gaussian_term = 10.0 * rand()
    step = length / max(n_steps - 1, 1)
    angle = 2.0 * math.pi * rand()
    v = complex(math.cos(angle), math.sin(angle)) * step
    x = [0j]
    noise = torch.randn(n_steps, 2, generator=g, dtype=torch.float64).tolist()
    shakes = torch.rand(n_steps, 2, generator=g, dtype=torch.float64).tolist()
    for t in range(n_steps - 1):
        turn = 0j
        if shakes[t][0] < prob_big_shake * anxiety:  # abrupt shake: sharp change of direction
            turn = 2.0 * v * complex(math.cos(math.pi + shakes[t][1] - 0.5), math.sin(math.pi + shakes[t][1] - 0.5))
        dv = turn + anxiety * (gaussian_term * complex(*noise[t]) - centripetal * x[t]) * step
        v = v + dv
        v = v / abs(v) * step if abs(v) > 0 else complex(step, 0.0)
        x.append(x[t] + v)
    arr = np.array(x)
    return torch.from_numpy(np.stack([arr.real, arr.imag], axis=1))


@dataclass
class MotionPSF:
    """Options of the ``motion`` type.

    length_px: path length of the translation (pixels) during the exposure.
    roll_deg: peak-to-peak camera roll about the optical axis (degrees); 0 = uniform blur.
    anxiety: how erratic the walk is (Boracchi & Foi use 0.005).
    n_steps: time samples along the exposure.
    """

    length_px: float = 15.0
    roll_deg: float = 0.5
    anxiety: float = 0.005
    n_steps: int = 2000

    def __post_init__(self):
        if not float(self.length_px) >= 0:
            raise ConfigError(f"motion length_px must be >= 0, got {self.length_px}")
        if not float(self.roll_deg) >= 0:
            raise ConfigError(f"motion roll_deg must be >= 0, got {self.roll_deg}")
        if not float(self.anxiety) >= 0:
            raise ConfigError(f"motion anxiety must be >= 0, got {self.anxiety}")
        if int(self.n_steps) < 2:
            raise ConfigError(f"motion n_steps must be >= 2, got {self.n_steps}")

    def trajectory(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Translation [T, 2] (px, mean removed) and roll [T] (radians, mean removed)."""
        n = int(self.n_steps)
        shift = shake_trajectory(n, float(self.length_px), float(self.anxiety), generator)
        walk = shake_trajectory(n, 1.0, float(self.anxiety), generator)
        axis = float(torch.rand((), generator=generator, dtype=torch.float64)) * math.pi
        roll = walk[:, 0] * math.cos(axis) + walk[:, 1] * math.sin(axis)
        span = float(roll.max() - roll.min())
        roll = roll * (math.radians(float(self.roll_deg)) / span) if span > 0 else torch.zeros(n, dtype=torch.float64)
        return shift - shift.mean(dim=0), roll - roll.mean()

    def simulate(self, ctx):
        shift, roll = self.trajectory(ctx.generator)
        q = torch.from_numpy(ctx.geometry.offsets())  # [N, 2]
        cos, sin = torch.cos(roll), torch.sin(roll)
        rotated = torch.stack([cos[None] * q[:, :1] - sin[None] * q[:, 1:],
                               sin[None] * q[:, :1] + cos[None] * q[:, 1:]], dim=-1)  # [N, T, 2]
        disp = rotated - q[:, None] + shift[None]
        # Sub-divide so consecutive samples are <= 0.05 px apart; midpoints of equal time slices.
        seg = disp[:, 1:] - disp[:, :-1]
        sub = max(1, math.ceil(float(seg.norm(dim=-1).max()) / 0.05)) if seg.numel() else 1
        frac = (torch.arange(sub, dtype=torch.float64) + 0.5) / sub
        points = disp[:, :-1, None] + seg[:, :, None] * frac[None, None, :, None]  # [N, T-1, sub, 2]
        points = points.reshape(q.shape[0], -1, 2)
        k = ctx.psf_size
        col = torch.round(points[..., 0]).long() + k // 2
        row = torch.round(points[..., 1]).long() + k // 2
        inside = (col >= 0) & (col < k) & (row >= 0) & (row < k)
        node = torch.arange(q.shape[0])[:, None].expand_as(col)
        flat = (node * k * k + row * k + col)[inside]
        counts = torch.bincount(flat, minlength=q.shape[0] * k * k).double() / points.shape[1]
        kernels = counts.reshape(q.shape[0], k, k)
        if ctx.progress is not None:
            ctx.progress(ctx.n_channels * q.shape[0])
        psfs = kernels[None].expand(ctx.n_channels, -1, -1, -1).clone()  # achromatic
        attrs = {}
        if shift.numel() + roll.numel() <= MAX_ATTR_VALUES:
            attrs["motion_trajectory_px"] = shift.numpy().astype(np.float32)
            attrs["motion_roll_rad"] = roll.numpy().astype(np.float32)
        return psfs, attrs
