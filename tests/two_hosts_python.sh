#!/usr/bin/env bash
# PYTHON for the two-host test (tests/test_launch.py). A process that mpirun starts (the rank
# wrapper, and through it its rank) runs in its own mount namespace where
# $TWO_HOSTS/host_<rank> is mounted over $TWO_HOSTS/host, the one path every "host" uses, and
# starts in that folder: one path, two disks, as on two machines that share no file system.
# Everything else (the launcher, the scheduler) sees the folder that is really there.
if [[ -n "${OMPI_COMM_WORLD_RANK:-}" ]]; then
  exec unshare --mount --propagation private bash -c \
    'mount --bind "$TWO_HOSTS/host_$OMPI_COMM_WORLD_RANK" "$TWO_HOSTS/host" && cd "$TWO_HOSTS/host" && exec "$@"' \
    _ "$REAL_PYTHON" "$@"
fi
exec "$REAL_PYTHON" "$@"
