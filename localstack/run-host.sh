#!/usr/bin/env bash
# Run a command against a LocalStack started for it alone, in host mode (no Docker), then stop it.
#
#   localstack/run-host.sh [--venv DIR] -- COMMAND [ARGS...]
#
# LocalStack (from the venv localstack/install.sh builds) starts in its own session on a free port
# (LOCALSTACK_PORT to choose one), with every file it writes under a fresh directory in /tmp. Once
# its health endpoint reports s3, sqs, dynamodb and dynamodbstreams, and DynamoDB answers a real
# call, COMMAND runs with SKYLOOM_LOCAL_AWS_ENDPOINT pointing at it: every Skyloom local stack
# COMMAND starts then uses LocalStack instead of moto. Whatever happens (COMMAND fails, Ctrl-C,
# readiness times out) LocalStack and the helper processes it spawned in sessions of their own
# (DynamoDB Local, kinesis-mock) are stopped by PID. The exit status is COMMAND's.
#
# LOCALSTACK_READY_TIMEOUT (seconds, default 180) bounds start-up; LOCALSTACK_KEEP=1 keeps the run
# directory (logs) even on success. On failure the directory is kept and the log tail printed;
# COMMAND's temporary files (pytest's base temp, with the local stacks' worker logs) are in it too.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/../.localstack-venv"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --venv) venv="$2"; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[[ $# -gt 0 ]] || { echo "usage: run-host.sh [--venv DIR] -- COMMAND [ARGS...]" >&2; exit 2; }
venv="$(cd "$venv" && pwd)"
py="$venv/bin/python"
[[ -x "$py" && -d "$venv/var-libs/dynamodb-local/2" ]] || {
    echo "run-host.sh: $venv is not a LocalStack host-mode venv; run 'make localstack-venv'" >&2; exit 2; }

timeout="${LOCALSTACK_READY_TIMEOUT:-180}"
port="${LOCALSTACK_PORT:-}"
if [[ -z "$port" || "$port" == 0 ]]; then
    # A free port now; LocalStack binds it a second later. Two runs at once get different ones.
    port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
run="$(mktemp -d "${TMPDIR:-/tmp}/skyloom-localstack.XXXXXX")"
log="$run/localstack.log"
mkdir -p "$run/fs/var/lib/localstack" "$run/home" "$run/tmp"
ln -s "$venv/var-libs" "$run/fs/var/lib/localstack/lib"
endpoint="http://127.0.0.1:$port"

pid=""
cmd=""
status=1
descendants() {  # every process below $1, depth first, read before anything is signalled
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}
stop_command() {
    # COMMAND (pytest) before LocalStack, gracefully: on SIGINT pytest runs its fixtures' teardown,
    # which stops the local stacks and worker agents it started. It has a process group of its own,
    # so whatever it left behind goes with it.
    [[ -n "$cmd" ]] || return 0
    if kill -0 "$cmd" 2>/dev/null; then
        kill -INT -- "-$cmd" 2>/dev/null || true
        local sig
        for sig in TERM KILL; do
            for _ in $(seq 1 150); do kill -0 "$cmd" 2>/dev/null || break 2; sleep 0.2; done
            kill -"$sig" -- "-$cmd" 2>/dev/null || true
        done
        wait "$cmd" 2>/dev/null || true
    fi
    kill -KILL -- "-$cmd" 2>/dev/null || true
}
teardown() {
    trap - EXIT INT TERM
    stop_command
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        local others
        others="$(descendants "$pid" | tr '\n' ' ')"
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        # LocalStack's shutdown can wait on its helpers; what is left after 10 s is killed.
        kill -KILL -- "-$pid" 2>/dev/null || true
        for other in $others; do
            kill -KILL -- "-$other" 2>/dev/null || true
            kill -KILL "$other" 2>/dev/null || true
        done
        wait "$pid" 2>/dev/null || true
    fi
    if [[ "$status" -ne 0 || "${LOCALSTACK_KEEP:-0}" == 1 ]]; then
        echo "run-host.sh: LocalStack run directory kept: $run (log: $log)" >&2
    else
        rm -rf "$run"
    fi
}
trap teardown EXIT
trap 'status=130; exit 130' INT
trap 'status=143; exit 143' TERM

echo "run-host.sh: starting LocalStack on $endpoint (run directory $run)" >&2
# setsid: its own process group, so the teardown signals it and its children by one PID.
env HOME="$run/home" TMPDIR="$run/tmp" \
    OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$run/fs" KINESIS_LATENCY=0 \
    GATEWAY_LISTEN="127.0.0.1:$port" LOCALSTACK_HOST="127.0.0.1:$port" SQS_ENDPOINT_STRATEGY=path \
    SERVICES=s3,sqs,dynamodb,dynamodbstreams,kinesis EAGER_SERVICE_LOADING=1 \
    DYNAMODB_IN_MEMORY=1 DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 \
    LOCALSTACK_TELEMETRY_DISABLED=1 \
    setsid "$py" -m localstack.runtime.main >"$log" 2>&1 </dev/null &
pid=$!

if ! "$py" - "$endpoint" "$timeout" "$pid" <<'PY'
"""Wait until LocalStack reports the four services and DynamoDB Local answers a real request."""
import json, os, sys, time, urllib.error, urllib.request

endpoint, timeout, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
wanted = ("s3", "sqs", "dynamodb", "dynamodbstreams")
deadline = time.monotonic() + timeout
# Any SigV4-shaped credential will do: LocalStack reads the account from it and checks nothing.
auth = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0"

def alive() -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False

def healthy() -> bool:
    with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=5) as r:
        services = json.load(r).get("services", {})
    return all(services.get(s) in ("available", "running") for s in wanted)

def dynamodb_answers() -> bool:
    request = urllib.request.Request(
        endpoint, data=b"{}", method="POST",
        headers={"X-Amz-Target": "DynamoDB_20120810.ListTables", "Content-Type": "application/x-amz-json-1.0",
                 "Authorization": auth},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return "TableNames" in json.load(r)

step = healthy
while True:
    if not alive():
        sys.exit("LocalStack exited during start-up")
    try:
        if step():
            if step is dynamodb_answers:
                break
            step = dynamodb_answers
            continue
    except (urllib.error.URLError, OSError, ValueError):
        pass
    if time.monotonic() > deadline:
        sys.exit(f"LocalStack was not ready within {timeout:.0f} s ({step.__name__} never succeeded)")
    time.sleep(0.5)
PY
then
    echo "run-host.sh: LocalStack did not become ready; last lines of $log:" >&2
    tail -n 40 "$log" >&2 || true
    status=1
    exit 1
fi
echo "run-host.sh: LocalStack ready at $endpoint" >&2

# In the background, waited for: bash runs a trap only once a foreground command has ended, so a
# TERM sent to this script alone (a CI timeout) would otherwise leave LocalStack up until the tests
# end. In a session of its own (setsid; the subshell first restores SIGINT, which background
# commands start with ignored), so that the teardown can interrupt it, and anything it leaves, by
# one PID; Ctrl-C reaches it through this script's trap. stdin stays this script's, for debuggers.
# COMMAND's temporary files (pytest's, with the stacks' logs) and Skyloom home live in the run
# directory too: kept with LocalStack's log when the run fails, gone when it passes.
mkdir -p "$run/command/tmp" "$run/command/skyloom-home"
( trap - INT; export SKYLOOM_LOCAL_AWS_ENDPOINT="$endpoint" TMPDIR="$run/command/tmp" \
    SKYLOOM_HOME="${SKYLOOM_HOME:-$run/command/skyloom-home}"; exec setsid "$@" ) <&0 &
cmd=$!
set +e
wait "$cmd"
status=$?
set -e
if [[ "$status" -ne 0 ]]; then
    echo "run-host.sh: command exited $status; last lines of $log:" >&2
    tail -n 20 "$log" >&2 || true
fi
exit "$status"
