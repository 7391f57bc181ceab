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
        import atexit
        atexit.register(_quiet_cell_teardown)
    except Exception as exc:  # noqa: BLE001 - a broken MindSpore must not break `import ebv_ms`
        import warnings                # (python -m ebv_ms.doctor has to run to diagnose it)
        warnings.warn(f"ebv_ms: EBV models not registered with mindcv ({type(exc).__name__}: "
                      f"{exc}); run python -m ebv_ms.doctor", RuntimeWarning, stacklevel=2)


def _quiet_cell_teardown() -> None:
    """At interpreter exit only: MindSpore 2.10's ``Cell.__del__`` raises AttributeError
    ("'NoneType' object has no attribute 'total_instance_count'", printed as "Exception ignored
    in Cell.__del__") for Cells freed after MindSpore's module globals are gone. With mindcv
    imported at package import, train.py's network is freed that late (3 tracebacks per run,
    measured); the error is dropped then, as tests/conftest.py does for pytest."""
    try:
        from mindspore.nn import cell as _cell
    except Exception:  # noqa: BLE001 - MindSpore itself unusable: nothing to quiet
        return
    original = _cell.Cell.__del__

    def _del(self, _original=original):
        try:
            _original(self)
        except AttributeError:
            pass

    _cell.Cell.__del__ = _del


_register_with_mindcv()
