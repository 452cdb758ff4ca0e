#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance): every server
# scenario of `--suite all`, at each spec version, against the conformance server
# (examples/src/bin/conformance.rs) served bare, through the full McpStack (`layered`), and
# through the gateway fronting it (`gateway`).
#
# Installs Node >= 22 and the suite locally (pinned by .ci/conformance/package-lock.json) into
# .ci/work/conformance/npm, starts every server on 127.0.0.1 (fresh ones per spec version and
# target), writes .ci/work/conformance/results/comparison.md and fails on any failure that
# .ci/conformance/expected-failures-<spec>.yml does not list, and on any check that fails
# layered or through the gateway but not bare (.ci/conformance/compare.py).
#
# Each server gets the whole suite twice: the second pass (`<target>-warm`) meets the caches
# and state the first pass left behind, which is where a layer could show through (the suite
# alone repeats few calls, so one pass would hardly exercise the cache).
#
# A pass normally takes a few seconds; a hanging server cannot hold CI for long: each pass is
# cut off after PASS_LIMIT seconds, and passes that would start after the whole budget is
# spent are skipped (their scenarios then count as failures).
#
# Environment: CONFORMANCE_SPECS="2025-11-25 2026-07-28" (the spec versions),
# CONFORMANCE_TARGETS="bare layered gateway" (the servers, bare first),
# CONFORMANCE_PASSES=2 (1 skips the warm pass), CONFORMANCE_BUDGET_SECONDS=900.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CONF="$ROOT/.ci/conformance"
WORK="$ROOT/.ci/work/conformance"
RESULTS="$WORK/results"
read -r -a SPECS <<<"${CONFORMANCE_SPECS:-2025-11-25 2026-07-28}"
PASSES=${CONFORMANCE_PASSES:-2}
case $PASSES in 1 | 2) ;; *) echo "CONFORMANCE_PASSES must be 1 or 2" >&2; exit 2 ;; esac
# The targets, the first being the baseline the others are compared to: `bare` (the handler
# alone), `layered` (through McpStack), `gateway` (the gateway fronting a bare conformance
# server over streamable HTTP: the gateway's stack and pool are what is tested). A target
# `T` is served by `start_T` below.
read -r -a TARGETS <<<"${CONFORMANCE_TARGETS:-bare layered gateway}"
[ "${TARGETS[0]}" = bare ] || { echo "CONFORMANCE_TARGETS must start with bare" >&2; exit 2; }
BUDGET=${CONFORMANCE_BUDGET_SECONDS:-900}
PASS_LIMIT=300
STARTED=$SECONDS

say() { printf '[conformance %s] %s\n' "$(date +%T)" "$*"; }
die() { say "error: $*" >&2; exit 1; }

PIDS=()
stop_all() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
trap stop_all EXIT

# Node >= 22 and the suite, exactly as locked. Reinstalled only when the lock file changes.
install_suite() {
  local npm_dir="$WORK/npm"
  command -v npm >/dev/null || die "npm is needed to install the suite (any Node.js with npm)"
  mkdir -p "$npm_dir"
  if ! cmp -s "$CONF/package-lock.json" "$npm_dir/.installed-lock.json"; then
    say "installing Node.js 22 and the conformance suite (npm ci)"
    cp "$CONF/package.json" "$CONF/package-lock.json" "$npm_dir/"
    (cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$CONF/package-lock.json" "$npm_dir/.installed-lock.json"
  fi
  NODE="$npm_dir/node_modules/.bin/node"
  SUITE="$npm_dir/node_modules/@modelcontextprotocol/conformance/dist/index.js"
  local major
  major=$("$NODE" -p 'process.versions.node.split(".")[0]') || die "the local Node.js does not run"
  [ "$major" -ge 22 ] || die "the local Node.js is $major, the suite needs >= 22"
  say "Node.js $("$NODE" --version), conformance suite $("$NODE" "$SUITE" --version)"
}

build_servers() {
  local bins=(--bin conformance)
  [[ " ${TARGETS[*]} " != *" gateway "* ]] || bins+=(--bin gateway)
  cargo build --quiet -p mcp-tower-examples "${bins[@]}"
  local target_dir
  target_dir=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  SERVER_BIN="$target_dir/debug/conformance"
  GATEWAY_BIN="$target_dir/debug/gateway"
}

# start_process NAME COMMAND...: starts COMMAND (which prints `listening on URL` on stderr)
# in the background and sets URL.
start_process() {
  local name=$1 log="$RUN_DIR/$1.log"
  shift
  "$@" 2>"$log" &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    # A whole line only: the address may be written in more than one piece.
    URL=$(sed -n 's#^listening on \(http://[^ ]*/mcp\)$#\1#p' "$log" | head -n 1)
    [ -n "$URL" ] && return 0
    kill -0 "${PIDS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  cat "$log" >&2
  die "$name did not start"
}

start_bare() { start_process server "$SERVER_BIN" --http 127.0.0.1:0 --bare; }
start_layered() { start_process server "$SERVER_BIN" --http 127.0.0.1:0; }
start_gateway() {
  start_process upstream "$SERVER_BIN" --http 127.0.0.1:0 --bare
  cat >"$RUN_DIR/gateway.toml" <<EOF
# The gateway fronting the bare conformance server (written by .ci/conformance.sh), exposed
# without a prefix: a client must not be able to tell the gateway from the server.
[upstreams.conformance]
url = "$URL"
namespace = false

# What the layered conformance server sets in code (NOTIFYING_TOOLS in
# examples/src/conformance.rs): tools whose log and progress notifications the caller must
# see are neither cached nor shared. Their annotations cannot tell the gateway.
[stack.tools.test_tool_with_logging]
cache = false
dedup = false
[stack.tools.test_logging_tool]
cache = false
dedup = false
[stack.tools.test_tool_with_progress]
cache = false
dedup = false
EOF
  start_process gateway "$GATEWAY_BIN" --config "$RUN_DIR/gateway.toml" --http 127.0.0.1:0
}

# run_suite SPEC TARGET: every server scenario of SPEC, PASSES times, against one fresh TARGET
# server; pass 1 is reported as TARGET, pass 2 as TARGET-warm.
run_suite() {
  local spec=$1 target=$2 pass name
  RUN_DIR="$RESULTS/$spec/$target"
  mkdir -p "$RUN_DIR"
  "start_$target"
  for pass in $(seq 1 "$PASSES"); do
    name=$target
    [ "$pass" -eq 1 ] || name="$target-warm"
    local out="$RESULTS/$spec/$name" started=$SECONDS status=0
    local left=$((BUDGET - (SECONDS - STARTED)))
    mkdir -p "$out"
    if [ "$left" -le 0 ]; then
      say "$spec $name: skipped, the ${BUDGET} s budget is spent"
      continue
    fi
    timeout --kill-after=5 "$((left < PASS_LIMIT ? left : PASS_LIMIT))" \
      "$NODE" "$SUITE" server --url "$URL" --suite all --spec-version "$spec" \
      --timeout 20000 -o "$out" >"$out/suite.log" 2>&1 || status=$?
    say "$spec $name: $(grep -E '^Total:' "$out/suite.log" || echo 'no total') " \
      "(suite exit $status, $((SECONDS - started)) s)"
  done
  stop_all
}

mkdir -p "$WORK"
# One run at a time per work directory (a shared checkout may run it twice).
exec 9>"$WORK/.lock"
flock -w 600 9 || die "another conformance run holds $WORK/.lock"
install_suite
python3 "$CONF/test_compare.py"
build_servers
rm -rf "$RESULTS"
for spec in "${SPECS[@]}"; do
  mkdir -p "$RESULTS/$spec"
  "$NODE" "$SUITE" list --server --spec-version "$spec" |
    sed -n 's/^  - \([^ ]*\).*/\1/p' >"$RESULTS/$spec/scenarios.txt"
  [ -s "$RESULTS/$spec/scenarios.txt" ] || die "the suite lists no server scenario for $spec"
  for target in "${TARGETS[@]}"; do
    run_suite "$spec" "$target"
  done
done

compared=()
for target in "${TARGETS[@]}"; do
  compared+=("$target")
  [ "$PASSES" -lt 2 ] || compared+=("$target-warm")
done
status=0
python3 "$CONF/compare.py" --results "$RESULTS" --expected-dir "$CONF" \
  --specs "$(IFS=,; echo "${SPECS[*]}")" --targets "$(IFS=,; echo "${compared[*]}")" || status=$?
say "done in $((SECONDS - STARTED)) s"
exit "$status"
