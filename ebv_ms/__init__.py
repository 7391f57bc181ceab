"""ebv-ms: Equiangular Basis Vectors (Shen, Sun, Wei, CVPR 2023) for MindSpore.

Folders by role: ``ebv`` (the vector set: files, metrics), ``generation`` (making sets),
``models`` (backbones, heads, classifier factory), ``loss``, ``data``, ``optim``,
``scheduler``, ``engine`` (training/evaluation loops, checkpoints, logs), ``deploy`` (export,
predict). Importing the package registers the EBV models with mindcv's model registry
(``mindcv.create_model("ebv_resnet50", ...)``; ebv_ms/models/mindcv_zoo.py) when mindcv is
installed.
"""
__version__ = "0.1.0"


def _register_with_mindcv() -> None:
    import importlib.util
    if importlib.util.find_spec("mindcv") is None:
        return
    try:
        from .models import mindcv_zoo  # noqa: F401 - registers on import
    except Exception as exc:  # noqa: BLE001 - a broken MindSpore must not break `import ebv_ms`
        import warnings                # (python -m ebv_ms.doctor has to run to diagnose it)
        warnings.warn(f"ebv_ms: EBV models not registered with mindcv ({type(exc).__name__}: "
                      f"{exc}); run python -m ebv_ms.doctor", RuntimeWarning, stacklevel=2)


_register_with_mindcv()
