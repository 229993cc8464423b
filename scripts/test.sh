#!/usr/bin/env bash
# The project's test command: static checks, then the real peers the tests need, then every test with the race
# detector. Missing tools or peers fail the run; nothing is skipped silently. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

staticcheck_version=v0.8.2 # honnef.co/go/tools; 0.8 is the first to understand Go 1.26
cache="${XDG_CACHE_HOME:-$HOME/.cache}/atkafka"
run="$(mktemp -d "${TMPDIR:-/tmp}/atkafka-test.XXXXXX")"

stops=()
cleanup() {
	local status=$?
	for ((i = ${#stops[@]} - 1; i >= 0; i--)); do
		eval "${stops[i]}" || echo "test.sh: clean-up failed: ${stops[i]}" >&2
	done
	rm -rf "$run"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n==> %s\n' "$*" >&2; }

# peer NAME START STOP ENVFILE starts a peer (its failure fails the run), makes sure STOP runs however the run
# ends, and exports the KEY=VALUE lines START wrote to ENVFILE, which is how testenv finds the peer.
peer() {
	local name=$1 start=$2 stop=$3 envfile=$4
	step "starting $name"
	stops+=("$stop")
	local began=$SECONDS
	eval "$start" >/dev/null || { echo "test.sh: could not start $name" >&2; exit 1; }
	set -a
	# shellcheck disable=SC1090
	. "$envfile"
	set +a
	echo "test.sh: $name ready in $((SECONDS - began))s" >&2
}

staticcheck_bin() {
	local bin="$cache/tools/staticcheck-$staticcheck_version/staticcheck"
	if [[ ! -x "$bin" ]]; then
		GOBIN="$(dirname "$bin")" go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version" >&2
	fi
	echo "$bin"
}

step "gofmt"
unformatted="$(find . -name node_modules -prune -o -path './.*' -prune -o -name '*.go' -print | xargs gofmt -l)"
if [[ -n "$unformatted" ]]; then
	echo "test.sh: not gofmt'ed:" >&2
	echo "$unformatted" >&2
	exit 1
fi

step "go vet"
go vet ./...

step "staticcheck $staticcheck_version"
"$(staticcheck_bin)" ./...

# Peers, one line each. Every peer keeps its state under $run, so parallel runs on one machine do not collide.
export ATKAFKA_TEST_STATE="$run/kafka"
peer kafka "bash testenv/kafka.sh start" "bash testenv/kafka.sh stop" "$ATKAFKA_TEST_STATE/kafka.env"
# >>> more peers here (dev-env PLC/PDS/Ozone, Postgres, Tap): peer NAME START STOP ENVFILE <<<
step "atproto set-up"; bash testenv/setup-atproto.sh # installs (cached) dev-env + node 22, Tap, PostgreSQL; Go tests start them per test

step "go test"
go test -race -count=1 -timeout 15m ./...
