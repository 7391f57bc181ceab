"""ebv-ms: Equiangular Basis Vectors (Shen, Sun, Wei, CVPR 2023) for MindSpore.

Folders by role: ``ebv`` (the vector set: files, metrics), ``generation`` (making sets),
``models`` (backbones, heads, classifier factory), ``loss``, ``data``, ``optim``,
``scheduler``, ``engine`` (training/evaluation loops, checkpoints, logs), ``deploy`` (export,
predict), ``tools`` (the ``python -m`` commands). Importing the package imports no framework;
``import ebv_ms.models`` registers the EBV models with mindcv (ebv_ms/models/mindcv_zoo.py).
"""
__version__ = "0.1.0"
