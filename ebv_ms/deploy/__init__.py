"""From a checkpoint to use: load for inference, export (MindIR / ONNX / AIR), predict on images.

``load_network(ckpt, overrides) -> (cfg, network, class_names)`` is the one checkpoint loader
of export.py and predict.py. See docs/deploy.md.
"""
from .loading import eval_sizes, input_spec, load_network, class_names

__all__ = ["load_network", "eval_sizes", "input_spec", "class_names"]
