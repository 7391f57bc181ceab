"""Parameter report: trainable / frozen counts per part for the configured head and FC.

Only the backbone is built; projection and head sizes follow from their shapes, so the 100k-class
report needs neither the EBV set nor a 205M-parameter FC layer in memory (docs/models.md)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Dict, List, Mapping, Optional

from ..config import load_config
from ..errors import run_cli
from ..models.classifier import PARTS, PartCount, count_cell


def parameter_report(model_cfg: Mapping, heads: Optional[List[str]] = None) -> Dict[str, Dict[str, PartCount]]:
    """{head: {part: PartCount}} for ``heads`` (default: the configured one and FC, or EBV if FC)."""
    from ..models.backbones import create_backbone
    head, n, d = model_cfg["head"], model_cfg["num_classes"], model_cfg["embed_dim"]
    feats, f, _ = create_backbone(model_cfg["backbone"], 1, in_channels=model_cfg["in_channels"],
                                  **model_cfg["backbone_kwargs"])
    backbone = count_cell(feats)
    fc = {"projection": PartCount(), "head": PartCount(trainable=f * n + n)}
    fixed = {"projection": PartCount(trainable=f * d + d), "head": PartCount(frozen=n * d)}
    return {h: {"backbone": backbone, **(fc if h == "fc" else fixed)}
            for h in heads or [head, "fc" if head != "fc" else "ebv"]}


def format_report(model_cfg: Mapping, report: Dict[str, Dict[str, PartCount]]) -> str:
    m = lambda n: f"{n / 1e6:.1f}M"  # noqa: E731
    lines = [f"backbone={model_cfg['backbone']}  num_classes={model_cfg['num_classes']}  "
             f"embed_dim(d)={model_cfg['embed_dim']}"]
    totals = {}
    for head, parts in report.items():
        tag = "configured" if head == model_cfg["head"] else "alternative"
        lines += ["", f"head = {head} ({tag})",
                  f"  {'part':<11}{'trainable':>16}{'frozen':>16}{'buffers':>12}"]
        tot = totals[head] = PartCount(*(sum(getattr(parts[p], k) for p in PARTS)
                                         for k in ("trainable", "frozen", "buffers")))
        for part, c in [*((p, parts[p]) for p in PARTS), ("total", tot)]:
            lines.append(f"  {part:<11}{c.trainable:>16,}{c.frozen:>16,}{c.buffers:>12,}")
        lines.append(f"  trainable: {m(tot.trainable)}   frozen (fixed class vectors): {m(tot.frozen)}")
    if len(totals) == 2:
        (h1, t1), (h2, t2) = totals.items()
        lines += ["", f"trainable {h1} / {h2}: {m(t1.trainable)} / {m(t2.trainable)} "
                      f"= {t1.trainable / max(t2.trainable, 1):.3f}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ebv_ms.tools.params", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML config (its 'model' section is used)")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. model.num_classes=100000")
    args = parser.parse_args(argv)

    def run() -> int:
        cfg = load_config(args.config, args.overrides)
        report = parameter_report(cfg.model)
        print(json.dumps({h: {p: asdict(c) for p, c in parts.items()} for h, parts in report.items()},
                         indent=2) if args.json else format_report(cfg.model, report))
        return 0
    return run_cli("params", run, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
