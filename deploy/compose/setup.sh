#!/bin/sh
# One-shot setup of the compose stack (runs in the `setup` service, after the control plane is
# healthy): the hub's tunnel certificate, the session store keys, a `hub` API key for the hub's
# --control connection, the demo catalog, and a one-time enrollment token for edge-1.
set -eu
export MESHGATE_CONTROL_URL=http://control:7070
export MESHGATE_CONTROL_TOKEN="$MESHGATE_CONTROL_ADMIN_KEY"
[ -f /pki/hub.pem ] || meshgate-edge pki quickstart --out /pki --hub-name hub --hub-name localhost --edge unused
[ -f /setup/store.keys ] || printf 'k1:%s\nindex:%s\n' "$(head -c32 /dev/urandom | base64)" "$(head -c32 /dev/urandom | base64)" > /setup/store.keys
[ -f /setup/hub.token ] || meshgate-control keys create hub --role hub | sed -n 's/.*"key": "\(mgc_[^"]*\)".*/\1/p' > /setup/hub.token
for s in alpha:upstream-a beta:upstream-b; do
  name=${s%%:*}; host=${s#*:}
  printf 'kind: http\nzone: compose\nowner: demo\nendpoints: [http://%s:9100/mcp]\nversion: 1.0.0\n' "$host" > /tmp/$name.yaml
  meshgate-control catalog zone compose --description "docker compose demo" >/dev/null
  meshgate-control catalog put "$name" --file /tmp/$name.yaml >/dev/null
done
meshgate-control catalog put device --file /dev/stdin >/dev/null <<YAML
kind: edge
zone: compose
owner: site-ops
endpoints: [edge-1]
version: 1.0.0
YAML
[ -f /setup/edge-1.token ] || meshgate-control edge enroll edge-1 > /setup/edge-1.token
echo "setup done"
