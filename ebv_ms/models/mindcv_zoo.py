"""EBV classifiers in mindcv's model registry: ``mindcv.create_model("ebv_resnet50", ...)``.

``import ebv_ms.models`` imports this module (mindcv costs ~0.1 s more after MindSpore); import
it yourself to use mindcv's own tooling (``create_model``, ``list_models("ebv_*")``, its
optimizer/loss/trainer factories, its checkpoint loading via ``checkpoint_path=``) by name:

    import mindcv, ebv_ms.models.mindcv_zoo
    net = mindcv.create_model("ebv_resnet50", num_classes=100000, embed_dim=5000, tau=0.007)

Each entry point is ``create_classifier`` with the backbone fixed and head "ebv". ``ebv`` is an
``EBVSet``, an N x d array or a file path (.npz / .npy / the authors' .pkl); without it the set
is made by ``create_ebv`` (method ``auto``: a closed form when one fits, e.g. the padded Kerdock
set for 100,000 x 5,000 in ~12 s; else the ``smoothmax`` optimiser). Extra keyword arguments go
to the mindcv backbone (e.g. ``drop_rate``).
"""
from __future__ import annotations

import atexit
from typing import Optional, Union

import numpy as np
from mindcv.models.registry import register_model

from ..ebv import EBVSet
from .classifier import create_classifier

__all__ = ["quiet_cell_teardown"]  # register_model appends the entry points


def quiet_cell_teardown() -> None:
    """Drop the AttributeError MindSpore 2.10's ``Cell.__del__`` raises ("'NoneType' object has
    no attribute 'total_instance_count'") for Cells freed at interpreter exit, after MindSpore's
    module globals are gone: with mindcv imported, train.py's network is freed that late (3
    tracebacks per run, measured)."""
    from mindspore.nn import cell as _cell
    original = _cell.Cell.__del__

    def _del(self, _original=original):
        try:
            _original(self)
        except AttributeError:
            pass

    _cell.Cell.__del__ = _del


atexit.register(quiet_cell_teardown)

# read by mindcv's register_model (no url: no pretrained EBV weights to download; the
# backbone's ImageNet weights still load with pretrained=True)
default_cfgs = {name: {"url": "", "num_classes": 1000, "input_size": (3, 224, 224),
                       "first_conv": first, "classifier": "head"}
                for name, first in (("ebv_resnet50", "conv1"), ("ebv_swin_tiny", "patch_embed.proj"))}


def _ebv_set(ebv, num_classes: int, embed_dim: Optional[int], alpha, method: str,
             seed: int) -> EBVSet:
    if ebv is None:
        from ..generation import create_ebv
        d = int(embed_dim) if embed_dim else 1000  # the paper's ImageNet setting
        return create_ebv(int(num_classes), d, alpha=alpha, method=method, seed=int(seed),
                          progress=False)
    if isinstance(ebv, str):
        from ..ebv import load_ebv
        return load_ebv(ebv)
    return ebv if isinstance(ebv, EBVSet) else EBVSet(np.asarray(ebv, dtype=np.float32))


def _entry(name: str, backbone: str, what: str):
    def entry(pretrained: bool = False, num_classes: int = 1000, in_channels: int = 3,
              embed_dim: Optional[int] = None, ebv: Union[EBVSet, np.ndarray, str, None] = None,
              tau: float = 0.07, alpha: Optional[float] = None, ebv_method: str = "auto",
              ebv_seed: int = 0, ebv_dtype: str = "float32", **kwargs):
        ebv = _ebv_set(ebv, num_classes, embed_dim, alpha, ebv_method, ebv_seed)
        return create_classifier(backbone, "ebv", int(num_classes), embed_dim=embed_dim, ebv=ebv,
                                 tau=float(tau), ebv_dtype=ebv_dtype, pretrained=pretrained,
                                 in_channels=int(in_channels), backbone_kwargs=kwargs)

    entry.__name__ = entry.__qualname__ = name  # mindcv registers the function by its name
    entry.__doc__ = f"mindcv {what} whose last linear layer projects to d, then the frozen EBV head."
    return register_model(entry)


ebv_resnet50 = _entry("ebv_resnet50", "resnet50", "ResNet-50")
ebv_swin_tiny = _entry("ebv_swin_tiny", "swin_tiny", "Swin-T")
