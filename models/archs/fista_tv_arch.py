"""Total-variation deconvolution by FISTA with the sample's spatially varying PSFs.

Solves ``min_x ½‖H x − y‖² + λ TV(x)`` subject to ``x ∈ [0, 1]`` (``clip``), with
``H x = Σ_k B_k ∗ (a_k ⊙ x)`` the batch's spatially varying blur (``utils.sv_renderer.BasisBlur``)
and TV the isotropic total variation of each channel (forward differences, Neumann boundary).

* FISTA (Beck & Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear
  inverse problems", SIAM J. Imaging Sci. 2(1), 2009) with the backtracking rule of its
  Section 4: the step 1/L is found per sample (L grows by ``eta`` until the quadratic upper
  bound holds), starting from a power-iteration estimate of ‖H‖², so no Lipschitz constant is
  assumed. Every iteration applies H once and Hᵀ once (H y of the extrapolated point follows
  by linearity).
* The proximal step ``argmin_x ‖x − z‖² + 2(λ/L) TV(x), x ∈ C`` is solved by FGP, the fast
  gradient projection on the dual (Beck & Teboulle, "Fast gradient-based algorithms for
  constrained total variation image denoising and deblurring problems", IEEE TIP 18(11), 2009,
  Algorithm FGP), ``tv_iterations`` steps each time, its dual variables carried from one
  proximal step to the next (warm start), so a few steps per iteration suffice.

``linear_light: true`` solves in linear light (data rendered in linear light) and re-encodes the
result to sRGB. ``learnable_tv_weight`` trains λ (per channel) through the unrolled iterations.

Batch keys: ``lq``, ``basis_psfs`` [B, C_out, C_in, K, k, k], ``basis_coef`` [B, C_out, C_in, K, H, W].
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.archs.arch_util import PSF_INPUTS, ArchIO, RestorationConfig, RestorationModel
from utils.errors import ConfigError


class FISTATV_config(RestorationConfig):
    """Args:
        iterations: FISTA iterations.
        tv_weight: λ, the weight of the total variation (in the units of the working space).
        tv_iterations: FGP iterations per proximal step.
        learnable_tv_weight: train λ (per channel, log-parametrised).
        clip: constrain the solution to [0, 1].
        boundary: image border model of the blur, ``reflect`` or ``zero``.
        linear_light: solve in linear light (data rendered in linear light).
        eta: backtracking factor (> 1) by which L grows when the step was too long.
        in_channels: image channels.
    """

    model_type = "restorelab_fista_tv"

    def __init__(self, iterations: int = 50, tv_weight: float = 2e-3, tv_iterations: int = 10,
                 learnable_tv_weight: bool = False, clip: bool = True, boundary: str = "reflect",
                 linear_light: bool = False, eta: float = 1.25, in_channels: int = 3, **kwargs):
        if int(iterations) < 0 or int(tv_iterations) < 1:
            raise ConfigError(f"network FISTATV: iterations must be >= 0 and tv_iterations >= 1, "
                              f"got {iterations}, {tv_iterations}")
        if not tv_weight > 0 or not eta > 1:
            raise ConfigError(f"network FISTATV: tv_weight must be > 0 and eta > 1, got {tv_weight}, {eta}")
        if boundary not in ("reflect", "zero"):
            raise ConfigError(f"network FISTATV: boundary must be reflect or zero, got {boundary!r}")
        self.iterations = int(iterations)
        self.tv_weight = float(tv_weight)
        self.tv_iterations = int(tv_iterations)
        self.learnable_tv_weight = bool(learnable_tv_weight)
        self.clip = bool(clip)
        self.boundary = boundary
        self.linear_light = bool(linear_light)
        self.eta = float(eta)
        self.in_channels = int(in_channels)
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> "FISTATV_config":
        return cls(iterations=3, tv_iterations=3, learnable_tv_weight=True)


# -- total variation (Beck & Teboulle 2009, TIP, Section II) --------------------------------------
def tv_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Lᵀ x = (p, q)``: p_ij = x_ij − x_i+1,j, q_ij = x_ij − x_i,j+1; zero on the last row / column."""
    p = F.pad(x[..., :-1, :] - x[..., 1:, :], (0, 0, 0, 1))
    q = F.pad(x[..., :, :-1] - x[..., :, 1:], (0, 1))
    return p, q


def tv_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``L(p, q)_ij = p_ij + q_ij − p_i−1,j − q_i,j−1`` (the adjoint of ``tv_gradient``; p's last
    row and q's last column are zero)."""
    return p + q - F.pad(p[..., :-1, :], (0, 0, 1, 0)) - F.pad(q[..., :, :-1], (1, 0))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Isotropic TV of each channel [B, C, 1, 1]: Σ over pixels of √(Δ_y² + Δ_x²)."""
    p, q = tv_gradient(x)
    return (p.square() + q.square()).sqrt().sum(dim=(-2, -1), keepdim=True)


def tv_prox(b: torch.Tensor, weight, iterations: int, clip: bool, dual=None):
    """FGP: ``argmin_x ‖x − b‖² + 2·weight·TV(x)`` over x ∈ [0, 1] (``clip``) or all x.

    ``weight`` broadcasts against b (e.g. [B, C, 1, 1]). Beck & Teboulle 2009 (TIP), Algorithm FGP
    with the isotropic projection onto {‖(p_ij, q_ij)‖ ≤ 1}, started from ``dual`` = (p, q)
    (zeros by default). Returns ``(x, (p, q))``: the dual can start the next call."""
    def project(x):
        return x.clamp(0, 1) if clip else x

    weight = torch.as_tensor(weight, dtype=b.dtype, device=b.device)
    step = 1.0 / (8.0 * weight.clamp(min=1e-12))
    p, q = dual if dual is not None else (torch.zeros_like(b), torch.zeros_like(b))
    r, s = p, q
    t = 1.0
    for _ in range(iterations):
        gp, gq = tv_gradient(project(b - weight * tv_divergence(r, s)))
        p_new, q_new = r + step * gp, s + step * gq
        scale = (p_new.square() + q_new.square()).clamp(min=1).sqrt()  # max(1, |(p, q)|), finite gradient at 0
        p_new, q_new = p_new / scale, q_new / scale
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        r = p_new + (t - 1) / t_new * (p_new - p)
        s = q_new + (t - 1) / t_new * (q_new - q)
        p, q, t = p_new, q_new, t_new
    return project(b - weight * tv_divergence(p, q)), (p, q)


def lipschitz_estimate(op, shape, dtype, device, steps: int = 2) -> torch.Tensor:
    """Per-sample estimate [B] of ‖H‖² = ‖HᵀH‖ by the power method from a flat image (the
    dominant singular vector of a blur is smooth); only a start for the backtracking."""
    v = torch.ones(shape, dtype=dtype, device=device)
    for _ in range(steps):
        v = v / v.flatten(1).norm(dim=1).clamp(min=1e-30).view(-1, 1, 1, 1)
        v = op.adjoint(op(v))
    v = v / v.flatten(1).norm(dim=1).clamp(min=1e-30).view(-1, 1, 1, 1)
    return op(v).flatten(1).square().sum(1)


def fista_tv(y: torch.Tensor, op, tv_weight, iterations: int, tv_iterations: int = 10, clip: bool = True,
             eta: float = 1.25, x0: torch.Tensor | None = None, lipschitz: torch.Tensor | None = None,
             max_backtracks: int = 30, trace: list | None = None) -> torch.Tensor:
    """FISTA with backtracking for ``min ½‖op(x) − y‖² + tv_weight·TV(x)`` (module docstring).

    ``tv_weight`` broadcasts against y ([B, C, 1, 1] or a float). ``lipschitz`` [B]: the first L
    (default: ``lipschitz_estimate``). ``trace``: a list that receives the objective [B] after
    every iteration."""
    b = y.shape[0]
    view = (b,) + (1,) * (y.ndim - 1)
    x_prev = (y if x0 is None else x0).clamp(0, 1) if clip else (y if x0 is None else x0)
    lip = (lipschitz_estimate(op, y.shape, y.dtype, y.device) if lipschitz is None else lipschitz).clamp(min=1e-12)
    weight = torch.as_tensor(tv_weight, dtype=y.dtype, device=y.device)
    z, hz_prev = x_prev, op(x_prev)
    hz = hz_prev
    t = 1.0
    dual = None

    def half_sq(r):
        return 0.5 * r.flatten(1).square().sum(1)

    for _ in range(iterations):
        residual = hz - y  # hz = H z at the extrapolated point z
        grad = op.adjoint(residual)
        f_z = half_sq(residual)
        for _ in range(max_backtracks):
            step = lip.view(view)
            x, new_dual = tv_prox(z - grad / step, weight / step, tv_iterations, clip, dual)
            hx = op(x)
            d = x - z
            bound = f_z + (d * grad).flatten(1).sum(1) + 0.5 * lip * d.flatten(1).square().sum(1)
            ok = half_sq(hx - y) <= bound + 1e-12 * bound.abs().detach()
            if bool(ok.all()):
                break
            lip = torch.where(ok, lip, lip * eta)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        beta = (t - 1) / t_new
        z = x + beta * (x - x_prev)
        hz = hx + beta * (hx - hz_prev)  # H z by linearity: no extra application
        x_prev, hz_prev, t, dual = x, hx, t_new, new_dual
        if trace is not None:
            trace.append((half_sq(hx - y) + (weight * total_variation(x)).flatten(1).sum(1)).detach())
    return x_prev


def fista_tv_objective(x: torch.Tensor, y: torch.Tensor, op, tv_weight) -> torch.Tensor:
    """``½‖op(x) − y‖² + Σ_c λ_c TV(x_c)`` per image [B]."""
    weight = torch.as_tensor(tv_weight, dtype=x.dtype, device=x.device)
    return 0.5 * (op(x) - y).flatten(1).square().sum(1) + (weight * total_variation(x)).flatten(1).sum(1)


class FISTATV_arch(RestorationModel):
    """TV-regularised deconvolution by FISTA with the batch's spatially varying PSFs."""

    config_class = FISTATV_config
    input_keys = ("lq", "basis_psfs", "basis_coef")

    def __init__(self, config: FISTATV_config):
        super().__init__(config)
        self.log_tv_weight = torch.nn.Parameter(torch.full((config.in_channels,), math.log(config.tv_weight)),
                                                requires_grad=config.learnable_tv_weight)
        self.post_init()

    @property
    def io(self) -> ArchIO:
        # The step size (power method) and backtracking are global over the image.
        return ArchIO(kind="image", scale=1, inputs=PSF_INPUTS, receptive_radius=None)

    @property
    def tv_weight(self) -> torch.Tensor:
        return self.log_tv_weight.exp()

    def forward(self, lq: torch.Tensor, basis_psfs: torch.Tensor | None = None, basis_coef: torch.Tensor | None = None,
                **_) -> torch.Tensor:
        from models.archs.psf_util import check_basis_inputs, decode_srgb, encode_srgb
        from utils.sv_renderer import BasisBlur

        c = self.config
        check_basis_inputs(lq, basis_psfs, basis_coef, "FISTATV")
        op = BasisBlur(basis_psfs, basis_coef.to(lq.dtype), c.boundary)
        weight = self.tv_weight.to(lq.dtype).view(1, -1, 1, 1)
        x = fista_tv(decode_srgb(lq, c.linear_light), op, weight, c.iterations, c.tv_iterations, c.clip, c.eta)
        return encode_srgb(x, c.linear_light)

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        from models.archs.psf_util import example_psf_inputs

        return example_psf_inputs(batch_size, size, self.config.in_channels, generator=generator)
