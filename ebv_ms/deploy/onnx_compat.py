"""Rewrites that let MindSpore 2.10's ONNX exporter take our networks (ONNX exports only).

Its exporter has no conversion for three ops our networks compile to (the error it raises:
"Can not find key <Op> in convert map"):

- ``Rsqrt`` (and ``Reciprocal``, ``L2Normalize``): the heads' ``ScaledL2Normalize`` computes
  v * rsqrt(sum v^2) * scale. ``PortableL2Normalize`` computes v / sqrt(sum v^2) * scale
  (Sqrt, RealDiv, ReduceSum, Mul), the same function to float32 rounding.
- ``InplaceAddExt``: graph mode compiles ``tensor += tensor`` to it, and mindcv 0.3.0's ResNet
  blocks end in ``out += identity``. ``_AddBottleneck`` / ``_AddBasicBlock`` are the same blocks
  with ``out = out + identity`` (Add); only the instances' class changes, not their parameters.

Applied to the network being exported, never in training (rsqrt is one kernel fewer, and
``ScaledL2Normalize`` carries the hand-written backward the training step uses).
"""
from __future__ import annotations

from typing import List

from mindspore import Tensor, nn, ops

__all__ = ["PortableL2Normalize", "make_onnx_exportable"]


class PortableL2Normalize(nn.Cell):
    """y = v / sqrt(sum v^2 + 1e-24) * scale, row-wise; ``ScaledL2Normalize`` for inference."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = float(scale)

    def construct(self, v):
        return v / ops.sqrt(ops.sum(v * v, -1, keepdim=True) + 1e-24) * self.scale


def _residual_blocks():
    from mindcv.models.resnet import BasicBlock, Bottleneck

    class _AddBasicBlock(BasicBlock):
        def construct(self, x: Tensor) -> Tensor:
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.down_sample is not None:
                identity = self.down_sample(x)
            return self.relu(out + identity)

    class _AddBottleneck(Bottleneck):
        def construct(self, x: Tensor) -> Tensor:
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            if self.down_sample is not None:
                identity = self.down_sample(x)
            return self.relu(out + identity)

    return {BasicBlock: _AddBasicBlock, Bottleneck: _AddBottleneck}


def make_onnx_exportable(network: nn.Cell) -> List[str]:
    """Apply the rewrites above to ``network`` in place; returns what was rewritten."""
    from ebv_ms.models.heads import ScaledL2Normalize
    try:
        blocks = _residual_blocks()
    except ImportError:  # no mindcv: no mindcv blocks to rewrite
        blocks = {}
    done = []
    n_blocks = 0
    for name, cell in list(network.cells_and_names()):
        if type(cell) in blocks:
            cell.__class__ = blocks[type(cell)]
            n_blocks += 1
        for child_name, child in list(cell.name_cells().items()):
            if isinstance(child, ScaledL2Normalize):
                setattr(cell, child_name, PortableL2Normalize(child.scale))
                done.append(f"{name + '.' if name else ''}{child_name}: Rsqrt -> Sqrt, RealDiv")
    if n_blocks:
        done.append(f"{n_blocks} mindcv residual blocks: InplaceAddExt -> Add")
    return done
