"""Command-line tools, one module each: ``python -m ebv_ms.tools.NAME`` (README lists them)."""
