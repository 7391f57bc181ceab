"""EBV classifiers in mindcv's registry (``import ebv_ms.models`` registers them) for mindcv's own
tooling: ``mindcv.create_model("ebv_resnet50", num_classes=100000, embed_dim=5000, tau=0.007)``.
Each is ``create_classifier`` with the backbone fixed and head "ebv"; ``ebv`` is an ``EBVSet``, an
N x d array or a file path, else ``create_ebv`` (method ``auto``) makes one. Extra keyword
arguments go to the mindcv backbone."""
from __future__ import annotations

import atexit
import contextlib
from typing import Optional, Union

import numpy as np
from mindcv.models.registry import register_model

from ..ebv import EBVSet
from .classifier import create_classifier


def quiet_cell_teardown() -> None:
    """Drop the AttributeError MindSpore 2.10's ``Cell.__del__`` raises for Cells freed at exit,
    after MindSpore's globals are gone (train.py's network is, with mindcv imported)."""
    from mindspore.nn import cell as _cell
    original = _cell.Cell.__del__

    def _del(self, _original=original):
        with contextlib.suppress(AttributeError):
            _original(self)

    _cell.Cell.__del__ = _del


atexit.register(quiet_cell_teardown)

# read by mindcv's register_model (no url: no pretrained EBV weights to download; the
# backbone's ImageNet weights still load with pretrained=True)
default_cfgs = {name: {"url": "", "num_classes": 1000, "input_size": (3, 224, 224),
                       "first_conv": first, "classifier": "head"}
                for name, first in (("ebv_resnet50", "conv1"), ("ebv_swin_tiny", "patch_embed.proj"))}


def _entry(name: str, backbone: str, what: str):
    def entry(pretrained: bool = False, num_classes: int = 1000, in_channels: int = 3,
              embed_dim: Optional[int] = None, ebv: Union[EBVSet, np.ndarray, str, None] = None,
              tau: float = 0.07, alpha: Optional[float] = None, ebv_method: str = "auto",
              ebv_seed: int = 0, ebv_dtype: str = "float32", **kwargs):
        if ebv is None:
            from ..generation import create_ebv
            d = int(embed_dim) if embed_dim else 1000  # the paper's ImageNet setting
            ebv = create_ebv(int(num_classes), d, alpha=alpha, method=ebv_method,
                             seed=int(ebv_seed), progress=False)
        elif isinstance(ebv, str):
            from ..ebv import load_ebv
            ebv = load_ebv(ebv)
        return create_classifier(backbone, "ebv", int(num_classes), embed_dim=embed_dim, ebv=ebv,
                                 tau=float(tau), ebv_dtype=ebv_dtype, pretrained=pretrained,
                                 in_channels=int(in_channels), backbone_kwargs=kwargs)

    entry.__name__ = entry.__qualname__ = name  # mindcv registers the function by its name
    entry.__doc__ = f"mindcv {what} whose last linear layer projects to d, then the frozen EBV head."
    return register_model(entry)


ebv_resnet50 = _entry("ebv_resnet50", "resnet50", "ResNet-50")
ebv_swin_tiny = _entry("ebv_swin_tiny", "swin_tiny", "Swin-T")
