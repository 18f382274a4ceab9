"""OpenCVInpaint: the classical inpainting baselines as a parameter-free network, so
``trainer.py -test`` scores them like any model (``networks.net: {type: OpenCVInpaint}``).

* ``telea``: A. Telea, "An Image Inpainting Technique Based on the Fast Marching Method", JGT 2004;
* ``ns``: Bertalmío, Bertozzi & Sapiro, "Navier–Stokes, Fluid Dynamics, and Image and Video
  Inpainting", CVPR 2001;

both through OpenCV's ``cv2.inpaint`` (``radius`` = the neighbourhood radius) on the 8-bit
image. Output ``where(mask > 0.5, lq, fill)``: known pixels exact; gradients reach ``lq``
through the known pixels only (the fill is a constant).
"""
from __future__ import annotations

import numpy as np
import torch

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from utils.errors import ConfigError


class OpenCVInpaint_config(RestorationConfig):
    """Args: method (``telea`` or ``ns``), radius (pixels), in_channels (1 or 3)."""

    model_type = "restorelab_open_cv_inpaint"

    def __init__(self, method: str = "telea", radius: int = 3, in_channels: int = 3, **kwargs):
        if method not in ("telea", "ns"):
            raise ConfigError(f"OpenCVInpaint: method must be telea or ns, got {method!r}")
        self.method, self.radius, self.in_channels = method, int(radius), int(in_channels)
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls):
        return cls()


class OpenCVInpaint_arch(RestorationModel):
    config_class = OpenCVInpaint_config

    def __init__(self, config: OpenCVInpaint_config):
        super().__init__(config)
        # a frozen parameter: transformers' save/load needs one (nothing is trained)
        self.radius = torch.nn.Parameter(torch.tensor(float(config.radius)), requires_grad=False)
        self.post_init()

    @property
    def input_keys(self) -> tuple[str, ...]:
        return ("lq", "mask")

    @property
    def io(self) -> ArchIO:
        return ArchIO(kind="image", inputs={"lq": "image", "mask": "mask"})

    def forward(self, lq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        import cv2

        flag = cv2.INPAINT_TELEA if self.config.method == "telea" else cv2.INPAINT_NS
        fills = []
        for b in range(lq.shape[0]):
            img = np.round(lq[b].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
            hole = ((mask[b, 0] < 0.5).cpu().numpy() * 255).astype(np.uint8)
            out = cv2.inpaint(np.ascontiguousarray(img), hole, self.config.radius, flag)
            out = out.reshape(img.shape).astype(np.float32) / 255
            fills.append(torch.from_numpy(out).permute(2, 0, 1))
        fill = torch.stack(fills).to(lq.device, lq.dtype)
        return torch.where(mask > 0.5, lq, fill)

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        gt = torch.rand(batch_size, self.config.in_channels, size, size, generator=generator)
        mask = (torch.rand(batch_size, 1, size, size, generator=generator) > 0.3).float()
        return {"lq": gt * mask, "mask": mask}
