"""``python -m ebv_ms.tools.make_ebv --config X [key=value ...]``: generate (once) and cache the
EBV set a config trains with (the quick start's EBV step; ``engine.ebv_source.resolve_ebv``)."""
from __future__ import annotations

import argparse
import logging

from ebv_ms.config import load_config
from ebv_ms.engine.ebv_source import ebv_cache_path, resolve_ebv
from ebv_ms.errors import run_cli


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ebv_ms.tools.make_ebv",
                                 description="generate (once) the EBV set a config trains with")
    ap.add_argument("--config", "-c", required=True)
    ap.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def body() -> int:
        cfg = load_config(args.config, args.overrides)
        ebv = resolve_ebv(cfg)
        if ebv is None:
            print(f"model.head={cfg.model.head}: no EBV set needed")
        else:
            print(f"EBV set ready: {ebv!r} ({cfg.ebv.path or ebv_cache_path(cfg)})")
        return 0

    return run_cli("make_ebv", body, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
