"""eval.py with a record of the order of its set-up: ``python tests/eval_order_probe.py EVAL ARGS``.

Prints ``ORDER [...]``: the first ``set_device``, the first ``init_distributed`` (which calls
``mindspore.communication.init()`` on several ranks) and the first Tensor made (a checkpoint's
weights are Tensors), each recorded by a wrapper that then calls the real function.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import mindspore as ms  # noqa: E402
from mindspore.common.tensor import Tensor  # noqa: E402

import eval as eval_py  # noqa: E402
from ebv_ms.engine import distributed  # noqa: E402

ORDER = []


def _first(name, fn):
    def wrapper(*args, **kwargs):
        if name not in ORDER:
            ORDER.append(name)
        return fn(*args, **kwargs)
    return wrapper


ms.set_device = _first("set_device", ms.set_device)
distributed.init_distributed = _first("init_parallel", distributed.init_distributed)
Tensor.__init__ = _first("tensor", Tensor.__init__)

if __name__ == "__main__":
    rc = eval_py.main(sys.argv[1:])
    print("ORDER " + json.dumps(ORDER))
    sys.exit(rc)
