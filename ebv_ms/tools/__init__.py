"""Command-line tools, one module each (``python -m ebv_ms.tools.NAME``); library modules have no
``__main__``. ``generate`` (make an EBV set), ``inspect`` (an EBV file's statistics), ``doctor``
(what this machine can run), ``params`` (parameter counts of a config), ``schema`` (the config
keys as the table in docs/training.md)."""
