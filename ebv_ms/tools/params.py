"""Parameter report: trainable / frozen counts per part for the configured head and FC.

    python -m ebv_ms.tools.params --config CONFIG [model.num_classes=100000 model.embed_dim=5000 ...]

Parts: ``backbone`` (feature extractor), ``projection`` (F -> d, the backbone's own last linear
layer for mindcv models), ``head`` (the frozen N x d EBV / random matrix, or the learned F -> N
FC layer). "frozen" counts the fixed class vectors; "buffers" the BatchNorm running statistics
(also non-trainable, never counted in the paper's numbers). Only the backbone is built (once, with
a 1-way last layer); projection and head sizes follow from their shapes, so the 100k-class report
needs neither a 100k x 5000 EBV set nor a 205M-parameter FC layer in memory. ``count_parameters``
counts a real built model the same way (the tests check both agree).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Dict, List, Mapping, Optional

from ..config import ConfigError, load_config
from ..models.classifier import PARTS, PartCount, count_cell, count_parameters

__all__ = ["PartCount", "count_parameters", "parameter_report", "format_report", "main"]



def _dense(fan_in: int, fan_out: int) -> int:
    return fan_in * fan_out + fan_out


def _head_counts(head: str, num_features: int, num_classes: int, dim: Optional[int]) -> Dict[str, PartCount]:
    if head == "fc":
        return {"projection": PartCount(), "head": PartCount(trainable=_dense(num_features, num_classes))}
    if dim is None:
        raise ConfigError(f"model.embed_dim must be set for head '{head}'")
    return {"projection": PartCount(trainable=_dense(num_features, dim)),
            "head": PartCount(frozen=num_classes * dim)}


def parameter_report(model_cfg: Mapping, heads: Optional[List[str]] = None) -> Dict[str, Dict[str, PartCount]]:
    """{head: {part: PartCount}} for the configured head and its comparison (FC, or EBV if FC)."""
    from ..models.backbones import create_backbone
    from ..models.classifier import HEADS

    head = model_cfg.get("head", "ebv")
    if head not in HEADS:
        raise ConfigError(f"model.head: unknown head {head!r}; use one of {', '.join(HEADS)}")
    if heads is None:
        heads = [head, "fc" if head != "fc" else "ebv"]
    num_classes = int(model_cfg["num_classes"])
    dim = model_cfg.get("embed_dim")
    feats, num_features, _ = create_backbone(model_cfg.get("backbone", "resnet50"), 1,
                                             in_channels=model_cfg.get("in_channels", 3),
                                             **dict(model_cfg.get("backbone_kwargs") or {}))
    backbone = count_cell(feats)
    report = {}
    for h in heads:
        report[h] = {"backbone": backbone, **_head_counts(h, num_features, num_classes, dim)}
    return report


def _m(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def format_report(model_cfg: Mapping, report: Dict[str, Dict[str, PartCount]]) -> str:
    lines = [f"backbone={model_cfg.get('backbone')}  num_classes={model_cfg['num_classes']}  "
             f"embed_dim(d)={model_cfg.get('embed_dim')}"]
    configured = model_cfg.get("head", "ebv")
    totals = {}
    for head, parts in report.items():
        tag = "configured" if head == configured else "alternative"
        lines.append("")
        lines.append(f"head = {head} ({tag})")
        lines.append(f"  {'part':<11}{'trainable':>16}{'frozen':>16}{'buffers':>12}")
        tot = PartCount()
        for part in PARTS:
            c = parts[part]
            tot.trainable += c.trainable
            tot.frozen += c.frozen
            tot.buffers += c.buffers
            lines.append(f"  {part:<11}{c.trainable:>16,}{c.frozen:>16,}{c.buffers:>12,}")
        lines.append(f"  {'total':<11}{tot.trainable:>16,}{tot.frozen:>16,}{tot.buffers:>12,}")
        lines.append(f"  trainable: {_m(tot.trainable)}   frozen (fixed class vectors): {_m(tot.frozen)}")
        totals[head] = tot
    if len(totals) == 2:
        (h1, t1), (h2, t2) = totals.items()
        lines.append("")
        lines.append(f"trainable {h1} / {h2}: {_m(t1.trainable)} / {_m(t2.trainable)} "
                     f"= {t1.trainable / max(t2.trainable, 1):.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ebv_ms.tools.params", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML config (its 'model' section is used)")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. model.num_classes=100000")
    args = parser.parse_args(argv)
    from ..errors import run_cli
    return run_cli("params", lambda: _run(args), debug=args.debug)


def _run(args) -> int:
    cfg = load_config(args.config, args.overrides)
    report = parameter_report(cfg.model)
    if args.json:
        print(json.dumps({h: {p: asdict(c) for p, c in parts.items()} for h, parts in report.items()}, indent=2))
    else:
        print(format_report(cfg.model, report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
