"""ebv-ms: Equiangular Basis Vectors (Shen, Sun, Wei, CVPR 2023) for MindSpore. Folders by role:
docs/architecture.md. Importing the package imports no framework; ``import ebv_ms.models``
registers the EBV models with mindcv (ebv_ms/models/mindcv_zoo.py)."""
__version__ = "0.1.0"
