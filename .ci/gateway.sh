#!/usr/bin/env bash
# The gateway in front of the reference MCP server, @modelcontextprotocol/server-everything:
# installs it (pinned) with npm into .ci/work/gateway, then runs the gateway tests that need
# it (ignored by a plain `cargo test`): its tools listed and called through the gateway,
# progress of a long-running tool reaching the client, a cancelled call cancelled upstream.
# The gateway's other tests (a Rust upstream killed under load, SIGTERM reaping its
# children…) run in `cargo test --workspace`.
#
# Needs Node.js (>= 18) with npm. Environment: SERVER_EVERYTHING_VERSION to test another
# release.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$PWD/.ci/work/gateway"
VERSION="${SERVER_EVERYTHING_VERSION:-2026.8.31}"
PACKAGE="@modelcontextprotocol/server-everything"

command -v node >/dev/null || { echo "gateway.sh: node is needed (Node.js >= 18 with npm)" >&2; exit 1; }
command -v npm >/dev/null || { echo "gateway.sh: npm is needed" >&2; exit 1; }

mkdir -p "$WORK"
# Its own package.json, so npm installs here and never into a parent directory's project.
[ -f "$WORK/package.json" ] || echo '{"private": true, "name": "mcp-tower-gateway-upstreams"}' >"$WORK/package.json"
INSTALLED=$(cd "$WORK" && node -p "require('$PACKAGE/package.json').version" 2>/dev/null || true)
if [ "$INSTALLED" != "$VERSION" ]; then
  echo "=== installing $PACKAGE@$VERSION into $WORK"
  (cd "$WORK" && npm install --no-audit --no-fund --loglevel=error "$PACKAGE@$VERSION")
fi
export SERVER_EVERYTHING_JS="$WORK/node_modules/$PACKAGE/dist/index.js"
[ -f "$SERVER_EVERYTHING_JS" ] || { echo "gateway.sh: $SERVER_EVERYTHING_JS is missing" >&2; exit 1; }

echo "=== gateway tests against $PACKAGE@$VERSION"
cargo test -p mcp-tower-examples --test gateway -- --ignored
