#!/usr/bin/env python3
"""The API server down for 20 s under a running operator (leader election on), on a real control plane.

Measures how long after the API server is ready again a new event takes to become its Job, and how many
log lines the operator wrote over the outage and 5 s after. Needs a control plane whose kube-apiserver this
script may SIGKILL and start again:

  ASC_OUTAGE_KUBECONFIG   admin kubeconfig (rights to create namespaces, CRDs applied already)
  ASC_OUTAGE_KUBECTL      kubectl binary (default: kubectl)
  ASC_OUTAGE_PIDFILE      file holding kube-apiserver's pid
  ASC_OUTAGE_START        command that starts the control plane again and returns once it is ready
  ASC_OUTAGE_OPERATOR     the operator binary (default: target/release/asc-webhook-operator)

It uses (and deletes) namespace `outage`.
"""
import subprocess, time, json, hmac, hashlib, http.client, os, signal

KUBECONFIG = os.environ["ASC_OUTAGE_KUBECONFIG"]
PIDFILE = os.environ["ASC_OUTAGE_PIDFILE"]
START = os.environ["ASC_OUTAGE_START"]
OPERATOR = os.environ.get("ASC_OUTAGE_OPERATOR", "target/release/asc-webhook-operator")
LOG = "outage-operator.log"
K = [os.environ.get("ASC_OUTAGE_KUBECTL", "kubectl"), "--kubeconfig", KUBECONFIG]
NS = "outage"; SECRET = "outage-secret"
def kubectl(*a, inp=None):
    return subprocess.run(K + list(a), input=inp, capture_output=True, text=True)
kubectl("delete", "ns", NS, "--wait=true")
kubectl("create", "ns", NS)
kubectl("-n", NS, "create", "secret", "generic", "hook", f"--from-literal=secret={SECRET}")
route = {"apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute", "metadata": {"name": "r", "namespace": NS},
  "spec": {"secretRef": {"name": "hook", "key": "secret"}, "rules": [{"name": "build",
    "match": {"eventTypes": ["BUILD_UPLOAD_STATE_UPDATED"]}, "enrich": "Never",
    "job": {"template": {"spec": {"template": {"spec": {"restartPolicy": "Never",
      "containers": [{"name": "lane", "image": "busybox", "command": ["true"]}]}}}}}}]}}
print(kubectl("apply", "--server-side", "-f", "-", inp=json.dumps(route)).stdout.strip())
log = open(LOG, "w")
env = dict(os.environ, KUBECONFIG=KUBECONFIG)
op = subprocess.Popen([OPERATOR, "run",
    "--namespace", NS, "--lease-namespace", NS, "--leader-election", "--listen-addr", "127.0.0.1:18080", "--admin-addr", "127.0.0.1:18081"],
    stdout=log, stderr=log, env=env)
def ready():
    try:
        c = http.client.HTTPConnection("127.0.0.1", 18081, timeout=1); c.request("GET", "/readyz"); return c.getresponse().status == 200
    except Exception: return False
while not ready(): time.sleep(0.1)
def post(i):
    body = json.dumps({"data": {"type": "buildUploadStateUpdated", "id": f"out-{i}", "attributes": {"newState": "COMPLETE"}}}).encode()
    sig = "hmacsha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", 18080, timeout=5)
            c.request("POST", f"/hooks/{NS}/r", body=body, headers={"x-apple-signature": sig, "content-type": "application/json"})
            s = c.getresponse().status
            if s in (200, 202): return
        except Exception: pass
        time.sleep(0.05)
def jobs():
    out = kubectl("-n", NS, "get", "jobs", "-o", "name").stdout.split()
    return len(out)
time.sleep(3)
post(0)
while jobs() < 1: time.sleep(0.05)
print("first event -> Job ok")
lines_before = sum(1 for _ in open(LOG))
pid = int(open(PIDFILE).read())
os.kill(pid, signal.SIGKILL)
t_down = time.time()
time.sleep(20)
subprocess.run(START, shell=True, capture_output=True)
t_back = time.time()
print(f"API server back after {t_back - t_down:.1f} s")
post(1)
while jobs() < 2: time.sleep(0.05)
took = time.time() - t_back
time.sleep(5)
lines_after = sum(1 for _ in open(LOG))
print(f"new event -> Job {took:.2f} s after the API server was ready again; operator log lines over the outage and 5 s after: {lines_after - lines_before}")
op.terminate(); op.wait()
kubectl("delete", "ns", NS, "--wait=false")
