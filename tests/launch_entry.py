"""An ENTRY for the launch tests: records the arguments and the device environment it was started
with, in $LAUNCH_PROBE_OUT/entry_<rank>.json. Started as a dynamic-cluster worker (MS_ROLE set)
it joins the cluster first, so the rank and world size it records are MindSpore's own."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

ENV_KEYS = ("CUDA_VISIBLE_DEVICES", "DEVICE_ID", "MS_ROLE", "MS_NODE_ID", "RANK_ID",
            "MS_WORKER_NUM", "MS_SCHED_HOST", "MS_SCHED_PORT")


def main():
    rec = {"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in ENV_KEYS},
           "rank": 0, "world_size": 1}
    if os.environ.get("MS_ROLE"):
        from ebv_ms.engine.distributed import init_distributed
        rec["rank"], rec["world_size"] = init_distributed({"device_target": "CPU"})
    path = os.path.join(os.environ["LAUNCH_PROBE_OUT"], f"entry_{rec['rank']}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rec, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
