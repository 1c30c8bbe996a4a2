"""The image export checks run on (export.py, and --backend's cached exports in val.py and detect.py): a picture from
the built-in shapes generator, letterboxed. A real scene matters: a model's ill-conditioned activations show on it
where a flat or random image hides them (an export that differs from PyTorch by 0.03 there matched on a drawn one)."""
from __future__ import annotations

import numpy as np
import torch

from utils.data.augmentations import letterbox


def check_image(batch: int, hw: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A picture from the shapes generator letterboxed to ``hw``, as a (batch, 3, H, W) tensor in [0, 1]."""
    from data.generators.shapes import ShapesConfig, render_image  # data/ is optional for users of real datasets

    img = render_image(ShapesConfig(imgsz=max(max(hw), 64)), "val", 0)[0]  # (s, s, 3) BGR uint8
    img = letterbox(img, hw, auto=False)[0][..., ::-1].transpose(2, 0, 1)  # (3, H, W) RGB
    im = torch.from_numpy(np.ascontiguousarray(img)).to(device, dtype) / 255
    return im.unsqueeze(0).expand(batch, -1, -1, -1).contiguous()
