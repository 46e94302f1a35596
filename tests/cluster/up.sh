#!/usr/bin/env bash
# Starts a throw-away etcd + kube-apiserver on 127.0.0.1 and prints a kubeconfig path.
# With KUBECONFIG already set (kind, k3d, a real cluster) it starts nothing and prints it.
# Usage: up.sh STATE_DIR. down.sh STATE_DIR stops exactly the processes started here.
set -euo pipefail
STATE=$(mkdir -p "${1:?usage: up.sh STATE_DIR}" && cd "$1" && pwd)
if [ -n "${KUBECONFIG:-}" ]; then echo "$KUBECONFIG"; exit 0; fi
here=$(cd "$(dirname "$0")" && pwd)
APISERVER=$("$here/build-apiserver.sh")
"$(dirname "$0")/../ensure-packages.sh" etcd-server openssl curl

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ETCD_PORT=$(free_port); ETCD_PEER_PORT=$(free_port); API_PORT=$(free_port)
cd "$STATE"
{
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=kauth-test-ca
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 2 -extfile san.ext
  openssl genrsa -out sa.key 2048
  openssl rsa -in sa.key -pubout -out sa.pub
} >openssl.log 2>&1
TOKEN=$(openssl rand -hex 24)
echo "$TOKEN,kauth-test-admin,kauth-test-admin,system:masters" > tokens.csv

etcd --name kauth-test --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "kauth-test=http://127.0.0.1:$ETCD_PEER_PORT" >etcd.log 2>&1 &
echo $! > etcd.pid
ISSUER="https://127.0.0.1:$API_PORT"
"$APISERVER" --bind-address=127.0.0.1 --secure-port="$API_PORT" --insecure-port=0 \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" --service-cluster-ip-range=10.96.0.0/24 \
  --endpoint-reconciler-type=none --tls-cert-file=apiserver.crt --tls-private-key-file=apiserver.key \
  --client-ca-file=ca.crt --service-account-key-file=sa.pub --service-account-signing-key-file=sa.key \
  --service-account-issuer="$ISSUER" --api-audiences="$ISSUER" \
  --authorization-mode=RBAC --token-auth-file=tokens.csv >apiserver.log 2>&1 &
echo $! > apiserver.pid

cat > kubeconfig <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority-data: $(base64 -w0 ca.crt)}
users:
- name: admin
  user: {token: $TOKEN}
contexts:
- name: test
  context: {cluster: test, user: admin, namespace: default}
current-context: test
KC
for _ in $(seq 1 300); do
  if curl -sf --cacert ca.crt -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1; then
    echo "$STATE/kubeconfig"
    exit 0
  fi
  sleep 0.2
done
echo "kube-apiserver did not become ready; last log lines:" >&2
tail -20 apiserver.log >&2
exit 1
