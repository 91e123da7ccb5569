#!/usr/bin/env bash
# Builds the playground image with podman where there is no Docker daemon and no container registry
# (checked on Debian bookworm hosts; needs `apt-get install podman runc debootstrap`).
#
#   deploy/build-image.sh [TAG]        TAG defaults to localhost/playground:latest
#
# The base is made from Debian's packages: debootstrap's minimal bookworm plus python3 and python3-venv,
# which is Python 3.11 as in python:3.11-slim-bookworm. pip inside the build reads this machine's own
# pip configuration (CA bundle, local wheel folders, indexes, constraints) through read-only mounts, so
# none of it is written into the Dockerfile or the image. A user with Docker needs none of this:
#   docker build -t playground . && docker run -p 7860:7860 -v playground-data:/app/data playground
# Run the result with podman as below; the default runtime (crun) and the host's rlimits fail here.
#   podman --runtime runc run --rm --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
#       --network host -e PORT=7860 localhost/playground:latest
set -euo pipefail
tag=${1:-localhost/playground:latest}
base=${BASE_TAG:-localhost/debian-bookworm-python:latest}
work=${WORK:-/var/tmp/playground-image}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work"

if ! podman image exists "$base"; then
  root="$work/rootfs"
  [ -x "$root/usr/bin/apt-get" ] || debootstrap --variant=minbase bookworm "$root" "$mirror"
  # In the chroot rather than by --include, so a rootfs left by an earlier run is completed too.
  chroot "$root" apt-get install -y --no-install-recommends python3 python3-venv
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | podman import --change 'CMD ["python3"]' - "$base"
fi

# pip's effective configuration here, as one file for the build's /etc/pip.conf, and a read-only mount
# for every local path it names (find-links folders, file:// indexes, constraint files, the CA bundle).
mounts=()
while IFS= read -r path; do
  mounts+=(-v "$path:$path:ro")
done < <(pip config list | python3 -c '
import os, sys
conf, paths = {}, []
for line in sys.stdin:
    key, _, value = line.strip().partition("=")
    name, value = key.rpartition(".")[2], value.strip("\x27\"")
    conf[name] = value  # a later line of the listing wins, as in pip
    for item in value.split():
        path = item.removeprefix("file://")
        if item.startswith("file://") and path.rstrip("/").endswith("/simple"):
            path = os.path.dirname(path.rstrip("/"))  # a local index links to files beside it
        if path.startswith("/") and os.path.exists(path):
            paths.append(path)
open(sys.argv[1], "w").write("".join(["[global]\n"] + [f"{k} = {v}\n" for k, v in conf.items()]))
print("\n".join(dict.fromkeys(paths)))
' "$work/pip.conf")
mounts+=(-v "$work/pip.conf:/etc/pip.conf:ro")

# TORCH_INDEX_URL is emptied so pip uses the configuration above (which serves the CPU torch wheel).
podman build --isolation chroot "${mounts[@]}" \
  --build-arg BASE_IMAGE="$base" --build-arg TORCH_INDEX_URL= \
  -t "$tag" "$repo"
echo "built $tag"
