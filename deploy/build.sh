#!/bin/sh
# deploy/build.sh compiles natsaga's programs and nats-server (the version
# go.mod pins) as static binaries on this machine and builds the two images
# the compose demo runs, both FROM scratch, so that no registry is needed:
#
#   natsaga/natsaga:$NATSAGA_TAG      coordinator, the four agents, floodsim, natsaga
#   natsaga/nats-server:$NATSAGA_TAG  nats-server with deploy/nats/*.conf
#
# NATSAGA_TAG defaults to "local". Needs Go and a Docker engine.
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
cd "$root"
tag=${NATSAGA_TAG:-local}
out=deploy/.build

programs="coordinator household-agent government-agent insurer-agent contractor-agent floodsim natsaga"
pkgs=""
for p in $programs; do
	if [ -d "cmd/$p" ]; then
		pkgs="$pkgs ./cmd/$p"
	else
		echo "build.sh: cmd/$p does not exist yet; the image will lack it" >&2
	fi
done

rm -rf "$out"
mkdir -p "$out/natsaga/bin" "$out/natsaga/report" "$out/nats/data" "$out/nats/conf"

echo "build.sh: compiling static binaries"
export CGO_ENABLED=0
# shellcheck disable=SC2086 # pkgs is a list of packages
go build -trimpath -ldflags='-s -w' -o "$out/natsaga/bin/" $pkgs
go build -trimpath -ldflags='-s -w' -o "$out/nats/nats-server" github.com/nats-io/nats-server/v2
natsver=$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)

cp deploy/Dockerfile "$out/natsaga/Dockerfile"
cp deploy/nats/Dockerfile "$out/nats/Dockerfile"
cp deploy/nats/nats.conf deploy/nats/auth.conf "$out/nats/conf/"

echo "build.sh: building natsaga/natsaga:$tag and natsaga/nats-server:$tag (nats-server $natsver)"
# image TAG CONTEXT LABEL builds quietly, showing the output on failure.
image() {
	if ! log=$(docker build --label "$3" -t "$1" "$2" 2>&1); then
		echo "$log" >&2
		echo "build.sh: docker build of $1 failed" >&2
		exit 1
	fi
}
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
image "natsaga/natsaga:$tag" "$out/natsaga" "org.opencontainers.image.revision=$rev"
image "natsaga/nats-server:$tag" "$out/nats" "org.opencontainers.image.version=$natsver"
echo "build.sh: done"
