"""PSF field networks: continuous PSF models fitted to the lab's PSF files.

* ``PSFFieldNet``: (x, y[, depth]) -> PSF ``[C, k, k]``. The normalised coordinates go through a
  Fourier-feature encoding (Tancik et al., "Fourier features let networks learn high frequency
  functions in low dimensional domains", NeurIPS 2020) and an MLP; the decoder is a linear layer
  (``decoder="mlp"``) or a small transposed-convolution stack (``decoder="deconv"``) giving one
  logit per pixel; a softmax over each channel's k x k pixels makes every output PSF non-negative
  and summing to 1 by construction.
* ``PSFEmbeddingNet``: an encoder PSF -> latent ``z`` (conv + linear), a decoder ``z`` -> PSF (as
  above), and a learned coordinates -> latent map. Trained on (i) reconstruction through the
  encoder, (ii) reconstruction through the coordinate map, (iii) agreement of the two latents, and
  (iv) node triples on a grid line: the decoded mean of the latents of nodes i-1 and i+1 must be
  node i's PSF (the latent-midpoint loss svd_v2's PSF_Emb_model computed but left out). Latents of
  two positions can then be interpolated (``interpolate``).

Both are plain ``torch.nn.Module``s with ``save(folder)`` / ``load(folder)``: ``config.json``
(the constructor arguments) + ``model.safetensors`` (float32 weights, stored bit for bit), so a
load gives identical outputs. ``to_field`` samples a network on a grid and returns a
``PSFField`` the renderer (``utils.sv_renderer.SVRenderer``) takes: the network is a
continuous field, sampled at whatever grid density the render needs.

Coordinates: sensor pixels (x right, y down, pixel centres at integers) normalised to [-1, 1]
over ``sensor_res``; depth (mm, optional) normalised as inverse depth (defocus is linear in
1/depth) over ``depth_range_mm``.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from utils.errors import ConfigError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DECODERS = ("mlp", "deconv")


@dataclass
class PSFNetConfig:
    """Constructor arguments of both networks (stored as config.json)."""

    psf_size: int = 33
    channels: int = 3
    sensor_res: tuple = (512, 512)
    depth_range_mm: tuple | None = None  # (near, far): the net takes a depth input
    decoder: str = "mlp"
    hidden: int = 256
    layers: int = 4
    n_freqs: int = 0  # Fourier-feature octaves; 0 = raw coordinates (smoothest between nodes)
    latent_dim: int = 16  # PSFEmbeddingNet
    coord_map: str = "affine"  # PSFEmbeddingNet: "affine" (latents linear in the coordinates) | "mlp"
    deconv_channels: int = 32
    kind: str = "field"  # "field" | "embedding" (set by the class)

    def __post_init__(self):
        self.sensor_res = tuple(int(v) for v in self.sensor_res)
        if self.depth_range_mm is not None:
            self.depth_range_mm = tuple(float(v) for v in self.depth_range_mm)
            near_far = self.depth_range_mm
            if len(near_far) != 2 or min(near_far) <= 0 or near_far[0] == near_far[1]:
                raise ConfigError(f"depth_range_mm must be two different positive depths, got {self.depth_range_mm}")
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.psf_size < 1 or self.psf_size % 2 == 0:
            raise ConfigError(f"psf_size must be odd, got {self.psf_size}")
        if self.coord_map not in ("affine", "mlp"):
            raise ConfigError(f"coord_map must be affine or mlp, got {self.coord_map!r}")

    @property
    def coord_dims(self) -> int:
        return 2 if self.depth_range_mm is None else 3


def normalise_coords(xy_px, sensor_res, depth_mm=None, depth_range_mm=None) -> torch.Tensor:
    """Sensor pixels (x, y) [N, 2] (+ depth mm [N]) -> [N, 2 or 3] in [-1, 1]."""
    xy = torch.as_tensor(np.asarray(xy_px, dtype=np.float64)).reshape(-1, 2)
    h, w = sensor_res
    out = [2 * xy[:, 0] / max(w - 1, 1) - 1, 2 * xy[:, 1] / max(h - 1, 1) - 1]
    if depth_range_mm is not None:
        if depth_mm is None:
            raise ConfigError("this network takes a depth: pass depth_mm")
        d = torch.as_tensor(np.asarray(depth_mm, dtype=np.float64)).reshape(-1).expand(len(xy))
        near, far = depth_range_mm
        inv = (1 / d - 1 / far) / (1 / near - 1 / far)
        out.append(2 * inv - 1)
    elif depth_mm is not None:
        raise ConfigError("this network has no depth input (depth_range_mm is None)")
    return torch.stack(out, dim=-1).float()


def fourier_features(c: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """[c, sin(2^i pi c), cos(2^i pi c)] for i < n_freqs."""
    if n_freqs == 0:
        return c
    f = (2.0 ** torch.arange(n_freqs, device=c.device, dtype=c.dtype)) * math.pi
    a = c[..., None] * f
    return torch.cat([c, torch.sin(a).flatten(-2), torch.cos(a).flatten(-2)], dim=-1)


def mlp(n_in: int, hidden: int, layers: int, n_out: int | None = None) -> nn.Sequential:
    mods, d = [], n_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.GELU()]
        d = hidden
    if n_out is not None:
        mods.append(nn.Linear(d, n_out))
    return nn.Sequential(*mods)


class PSFDecoder(nn.Module):
    """Feature vector -> normalised PSFs [B, C, k, k] (softmax over each channel's pixels)."""

    def __init__(self, n_in: int, cfg: PSFNetConfig):
        super().__init__()
        self.k, self.c, self.kind = cfg.psf_size, cfg.channels, cfg.decoder
        if self.kind == "mlp":
            self.head = nn.Linear(n_in, self.c * self.k * self.k)
        else:
            s, ups = self.k, 0
            while s > 9:  # transposed convs of stride 2 (kernel 3, padding 1): s -> 2 s - 1
                s, ups = (s + 1) // 2, ups + 1
            self.s0, ch = s, cfg.deconv_channels
            self.head = nn.Linear(n_in, ch * s * s)
            convs = []
            for _ in range(ups):
                convs += [nn.ConvTranspose2d(ch, ch, 3, stride=2, padding=1), nn.GELU()]
            convs.append(nn.Conv2d(ch, self.c, 3, padding=1))
            self.convs = nn.Sequential(*convs)
            self.ch = ch

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b = h.shape[0]
        if self.kind == "mlp":
            logits = self.head(h).reshape(b, self.c, self.k * self.k)
        else:
            x = self.convs(self.head(h).reshape(b, self.ch, self.s0, self.s0))
            off = (x.shape[-1] - self.k) // 2
            logits = x[..., off:off + self.k, off:off + self.k].reshape(b, self.c, self.k * self.k)
        return torch.softmax(logits, dim=-1).reshape(b, self.c, self.k, self.k)


class _Saveable(nn.Module):
    config: PSFNetConfig

    def save(self, folder: str | os.PathLike) -> Path:
        """Write config.json + model.safetensors (exact float32 weights)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_NAME))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, device=None):
        """A network saved by ``save`` (either class: dispatched on the config's ``kind``)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise ConfigError(f"{folder}: expected {CONFIG_NAME} and {WEIGHTS_NAME} (written by PSFFieldNet.save)")
        cfg = PSFNetConfig(**json.loads((folder / CONFIG_NAME).read_text()))
        net = {"field": PSFFieldNet, "embedding": PSFEmbeddingNet}[cfg.kind](cfg)
        net.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        return net.to(device) if device is not None else net

    def coords(self, xy_px, depth_mm=None) -> torch.Tensor:
        return normalise_coords(xy_px, self.config.sensor_res, depth_mm, self.config.depth_range_mm).to(self._device())

    def _device(self):
        return next(self.parameters()).device

    @torch.no_grad()
    def sample(self, xy_px, depth_mm=None) -> torch.Tensor:
        """PSFs [N, C, k, k] at sensor pixels (x, y) [N, 2] (and depths)."""
        return self.forward(self.coords(xy_px, depth_mm))

    @torch.no_grad()
    def to_field(self, grid_shape=(9, 9), depth_mm=None, H_img=None, like=None):
        """Sample the network on a node grid -> ``PSFField`` (float32, each PSF sums to 1) for the
        renderer. ``like``: a PSF field of the same sensor whose pixel -> object-plane map, attributes
        and channel order are kept (without it ``H_obj`` is the identity)."""
        from psf.field import PSFField, default_H_img, grid_positions

        grid_shape = tuple(int(v) for v in grid_shape)
        H = default_H_img(grid_shape, self.config.sensor_res) if H_img is None else np.asarray(H_img, np.float64)
        psfs = self.sample(grid_positions(H, grid_shape), depth_mm).cpu().double()
        psfs = psfs / psfs.sum(dim=(-2, -1), keepdim=True)
        n_ch = self.config.channels
        order = like.channel_order if like is not None else {1: "L", 3: "RGB"}.get(n_ch, "C" * n_ch)
        attrs = dict(like.attrs) if like is not None else {}
        attrs.pop("args", None)
        attrs.update({"psf_net": json.dumps(asdict(self.config))})
        if depth_mm is not None:
            attrs["depth_mm"] = float(depth_mm)
        f = PSFField(psfs=psfs.permute(1, 0, 2, 3)[:, None].float().contiguous(), grid_shape=grid_shape,
                     sensor_res=self.config.sensor_res, H_img=H,
                     H_obj=(np.asarray(like.H_obj) @ np.linalg.inv(np.asarray(like.H_img)) @ H) if like is not None
                     else np.eye(3),  # pixel -> object plane of ``like``, applied to the new grid
                     psf_type="psf_net", channel_order=order, normalized=True, attrs=attrs)
        f.validate()
        return f


    @torch.no_grad()
    def to_depth_field(self, grid_shape, depths_m, H_img=None, like=None):
        """Sample a depth network at several object distances (metres) -> ``DepthPSFField``
        (psf/depth.py; its file has ``psfs [C, 1, D, N, k, k]`` + ``depths_m``)."""
        from psf.depth import DepthPSFField

        planes = [self.to_field(grid_shape, 1000.0 * float(d), H_img, like) for d in depths_m]
        return DepthPSFField.from_planes(planes, depths_m)


class PSFFieldNet(_Saveable):
    """(x, y[, depth]) -> PSF (see module docstring)."""

    def __init__(self, config: PSFNetConfig | None = None, **kwargs):
        super().__init__()
        self.config = config if config is not None else PSFNetConfig(**kwargs)
        self.config.kind = "field"
        c = self.config
        n_in = c.coord_dims * (1 + 2 * c.n_freqs)
        self.body = mlp(n_in, c.hidden, c.layers)
        self.decoder = PSFDecoder(c.hidden, c)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.body(fourier_features(coords, self.config.n_freqs)))


class PSFEncoder(nn.Module):
    """PSFs [B, C, k, k] -> latents [B, D]: strided convolutions, then a linear layer."""

    def __init__(self, cfg: PSFNetConfig):
        super().__init__()
        ch, layers, c_in, s = 32, [], cfg.channels, cfg.psf_size
        for i in range(3):
            layers += [nn.Conv2d(c_in, ch * 2 ** i, 3, stride=2, padding=1), nn.GELU()]
            c_in, s = ch * 2 ** i, (s + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * s * s, cfg.latent_dim)

    def forward(self, psfs: torch.Tensor) -> torch.Tensor:
        # PSFs sum to 1 over k*k pixels: rescale so the input is O(1)
        x = psfs * psfs.shape[-1] * psfs.shape[-2]
        return self.head(self.convs(x).flatten(1))


class PSFEmbeddingNet(_Saveable):
    """Encoder PSF -> latent, decoder latent -> PSF, coordinates -> latent map."""

    def __init__(self, config: PSFNetConfig | None = None, **kwargs):
        super().__init__()
        self.config = config if config is not None else PSFNetConfig(**kwargs)
        self.config.kind = "embedding"
        c = self.config
        self.encoder = PSFEncoder(c)
        self.decoder = nn.Sequential(mlp(c.latent_dim, c.hidden, max(1, c.layers - 1)), PSFDecoder(c.hidden, c))
        n_in = c.coord_dims * (1 + 2 * c.n_freqs)
        if c.coord_map == "affine":
            self.coord_map = nn.Linear(n_in, c.latent_dim)
        else:
            self.coord_map = mlp(n_in, c.hidden, max(1, c.layers - 1), c.latent_dim)

    def encode(self, psfs: torch.Tensor) -> torch.Tensor:
        return self.encoder(psfs)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def latent(self, coords: torch.Tensor) -> torch.Tensor:
        return self.coord_map(fourier_features(coords, self.config.n_freqs))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Coordinates -> latent -> PSF (the continuous field)."""
        return self.decode(self.latent(coords))

    @torch.no_grad()
    def interpolate(self, psf_a: torch.Tensor, psf_b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
        """Decode ``(1 - t) z_a + t z_b`` of two PSFs [C, k, k] (or batches)."""
        a, b = (p[None] if p.ndim == 3 else p for p in (psf_a, psf_b))
        return self.decode((1 - t) * self.encode(a) + t * self.encode(b))


# -- data and training -------------------------------------------------------------------------------
def relative_l2(pred: torch.Tensor, target: torch.Tensor) -> float:
    """||pred - target|| / ||target|| over the whole stack."""
    return float(torch.linalg.vector_norm((pred - target).double()) / torch.linalg.vector_norm(target.double()))


def load_training_fields(paths) -> list[tuple]:
    """[(PSFField, depth_mm or None)] from PSF files: a depth-aware file (``psfs [C, 1, D, N, k, k]``
    + ``depths_m``, psf/depth.py) gives one entry per stored depth."""
    import h5py

    from psf.depth import load_depth_psf_field
    from psf.field import load_psf_field, resolve_psf_path

    out = []
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        path = resolve_psf_path(path)
        with h5py.File(path, "r") as f:
            stacked = "depths_m" in f
        if stacked:
            stack = load_depth_psf_field(path)
            out += [(stack.plane(i), 1000.0 * float(d)) for i, d in enumerate(stack.depths_m)]
        else:
            out.append((load_psf_field(path), None))
    return out


def field_training_data(fields, depths_mm=None):
    """(pixel positions [N, 2], depths [N] or None, PSFs [N, C, k, k]) from PSF fields (one per
    depth when ``depths_mm`` is given; a ``DepthPSFField`` gives its planes and depths).
    Per-channel fields only (C_in = 1)."""
    from psf.depth import DepthPSFField
    from psf.field import PSFField, load_psf_field

    if isinstance(fields, DepthPSFField):
        if depths_mm is not None:
            raise ConfigError("a depth stack carries its depths; do not pass depths_mm")
        depths_mm = [1000.0 * float(d) for d in fields.depths_m]
        fields = [fields.plane(i) for i in range(fields.n_depths)]
    fields = [fields] if isinstance(fields, (PSFField, str, os.PathLike)) else list(fields)
    fields = [load_psf_field(f) if not isinstance(f, PSFField) else f for f in fields]
    if depths_mm is not None and len(depths_mm) != len(fields):
        raise ConfigError(f"{len(fields)} fields but {len(depths_mm)} depths")
    xy, d, p = [], [], []
    for i, f in enumerate(fields):
        if f.c_in != 1:
            raise ConfigError("PSF networks take per-channel fields (C_in = 1)")
        if f.sensor_res != fields[0].sensor_res or f.psfs.shape[-1] != fields[0].psfs.shape[-1]:
            raise ConfigError("the fields must share the sensor resolution and PSF size")
        xy.append(torch.as_tensor(f.positions))
        p.append(f.psfs[:, 0].permute(1, 0, 2, 3).float())
        if depths_mm is not None:
            d.append(torch.full((f.n_nodes,), float(depths_mm[i]), dtype=torch.float64))
    return torch.cat(xy), (torch.cat(d) if d else None), torch.cat(p)


def grid_triples(grid_shape, n_fields: int = 1) -> torch.Tensor:
    """[T, 3] node indices (a, mid, b) of three consecutive nodes along grid rows and columns."""
    gh, gw = grid_shape
    out = []
    for f in range(n_fields):
        base = f * gh * gw
        for r in range(gh):
            for c in range(gw):
                if c + 2 < gw:
                    out.append((base + r * gw + c, base + r * gw + c + 1, base + r * gw + c + 2))
                if r + 2 < gh:
                    out.append((base + r * gw + c, base + (r + 1) * gw + c, base + (r + 2) * gw + c))
    return torch.tensor(out, dtype=torch.long).reshape(-1, 3)


def _rel_loss(pred, target):
    return ((pred - target).square().sum(dim=(-3, -2, -1)) / target.square().sum(dim=(-3, -2, -1))).mean()


@dataclass
class FitResult:
    steps: int
    seconds: float
    relative_l2: float
    history: list = field(default_factory=list)


def fit(net, coords: torch.Tensor, psfs: torch.Tensor, steps: int = 2000, lr: float = 2e-3,
        time_limit_s: float | None = None, triples: torch.Tensor | None = None, target_l2: float | None = None,
        log: Callable[[int, float], None] | None = None, log_every: int = 100, seed: int = 0) -> FitResult:
    """Full-batch Adam with a cosine schedule on the mean squared relative error per PSF.

    ``PSFEmbeddingNet``: loss = encoder reconstruction + coordinate-map reconstruction
    + latent agreement + (with ``triples``) the latent-midpoint reconstruction.
    Stops at ``steps``, ``time_limit_s`` or when the field's relative L2 reaches ``target_l2``.
    """
    torch.manual_seed(seed)
    device = next(net.parameters()).device
    coords, psfs = coords.to(device).float(), psfs.to(device).float()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.02)
    embedding = isinstance(net, PSFEmbeddingNet)
    start, history, step = time.perf_counter(), [], 0
    net.train()
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        if embedding:
            z = net.encode(psfs)
            zc = net.latent(coords)
            pred = net.decode(zc)
            loss = _rel_loss(net.decode(z), psfs) + _rel_loss(pred, psfs) + (zc - z).square().mean()
            if triples is not None and len(triples):
                zm = 0.5 * (z[triples[:, 0]] + z[triples[:, 2]])
                loss = loss + _rel_loss(net.decode(zm), psfs[triples[:, 1]])
        else:
            pred = net(coords)
            loss = _rel_loss(pred, psfs)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            err = relative_l2(pred.detach(), psfs)
            history.append((step, loss.item(), err))
            if log is not None:
                log(step, err)
            if target_l2 is not None and err < target_l2:
                break
        if time_limit_s is not None and time.perf_counter() - start > time_limit_s:
            break
    net.eval()
    with torch.no_grad():
        err = relative_l2(net(coords), psfs)
    return FitResult(step, time.perf_counter() - start, err, history)
