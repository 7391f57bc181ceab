"""Command-line tools, one module each (``python -m ebv_ms.tools.NAME``); library modules have no
``__main__``. ``generate`` (make an EBV set), ``inspect`` (an EBV file's statistics), ``doctor``
(what this machine can run), ``params`` (parameter counts of a config), ``schema`` (the config
keys as the table in docs/training.md), ``inspect_data`` (what the data pipeline sees in a
dataset). Dataset writers: ``make_demo`` (the digits demo archive), ``make_glyphs`` (the
many-class Han glyph archive), ``make_synthetic`` (small tagged images and archives for tests
and benchmarks)."""
