"""Command-line tools, one module each (``python -m ebv_ms.tools.NAME``): generate, inspect,
doctor, params, schema, inspect_data; dataset writers make_demo, make_glyphs, make_synthetic;
launch (the scripts' logic) and the two it starts, make_ebv and scheduler."""
