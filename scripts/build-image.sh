#!/usr/bin/env bash
# Build the mdmpush container image (deploy/Dockerfile) where Docker answers, and say how to pin
# it in an overlay. Usage: scripts/build-image.sh [IMAGE]   (default mdmpush:dev; also $IMAGE)
#   IMAGE=registry.example.com/mdmpush/mdmpush:0.1.0 make image && docker push "$IMAGE"
# then pin the pushed digest in the overlay's one `images:` entry:
#   (cd deploy/k8s/overlays/production/app && kustomize edit set image mdmpush=REGISTRY/mdmpush:TAG@sha256:...)
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-${IMAGE:-mdmpush:dev}}"

if ! command -v docker >/dev/null 2>&1; then
    echo "make image: docker is not installed; nothing built." >&2
    echo "  Install Docker (or build deploy/Dockerfile with any OCI builder, context = repository root)." >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "make image: docker is installed but its daemon does not answer (docker info failed); nothing built." >&2
    echo "  Start the Docker daemon, or build deploy/Dockerfile with another OCI builder (context = repository root)." >&2
    exit 1
fi

docker build --file deploy/Dockerfile --tag "$image" .
echo "built $image"
echo "after docker push $image, pin its digest in the overlay:"
echo "  (cd deploy/k8s/overlays/production/app && kustomize edit set image mdmpush=$image@\$(docker inspect --format '{{index .RepoDigests 0}}' $image | cut -d@ -f2))"
