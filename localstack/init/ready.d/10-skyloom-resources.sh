#!/bin/bash
# LocalStack init hook (READY stage): create Skyloom's resources from the single definition.
#
# Runs inside the LocalStack container (localstack/docker-compose.yml mounts the repository at
# /opt/skyloom). The first boot installs skyloom from that checkout into a venv on LocalStack's
# volume (network access to PyPI needed once); later boots reuse it. Provisioning is idempotent:
# existing tables, queues and the bucket are kept.
set -euo pipefail

venv=/var/lib/localstack/skyloom-venv
if [ ! -x "$venv/bin/python" ] || [ /opt/skyloom/pyproject.toml -nt "$venv/.installed" ]; then
    src="$(mktemp -d)"
    # A copy without the host's environments: the mount is read-only and the build writes metadata.
    tar -C /opt/skyloom --exclude=./.venv --exclude=./.localstack-venv --exclude=./node_modules \
        --exclude=./cdk.out -cf - . | tar -C "$src" -xf -
    python3 -m venv "$venv"
    # `skyloom local provision` is part of `skyloom local`, which needs the [local] extra.
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$src[local]"
    rm -rf "$src"
    touch "$venv/.installed"
fi

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
"$venv/bin/skyloom" local provision --aws-endpoint "http://localhost:4566"
