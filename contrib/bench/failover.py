#!/usr/bin/env python3
"""Failover after kill -9 of the leader: Ferrium and etcd 3.4 side by side.

Starts a three-node cluster of each (default settings, fsync on, loopback),
then ROUNDS times: finds the leader, kills it with SIGKILL, and writes
through the surviving members until one write is acknowledged. The figure is
the time from the kill to that first acknowledged write, measured with the
same client for both: one HTTP/1.1 JSON request at a time (Ferrium's
POST /write, etcd's gateway POST /v3/kv/put), each attempt bounded by 0.5 s,
round-robin over the survivors. The killed member is then
restarted and the cluster waited for before the next round.

  contrib/bench/failover.py [--rounds 10] [--server target/debug/ferrium-server] [--etcd etcd]
      [--only ferrium|etcd] [--ferrium-extra 'TOML']

Prints each round and the median, minimum and maximum per system. Ports:
19101-19103 and 19201-19203 (Ferrium), 22479-22499 (etcd), loopback only.
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def request(port, method, path, body=None, timeout=0.5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except (OSError, ValueError, http.client.HTTPException):
            pass
        time.sleep(0.02)
    sys.exit("timed out waiting for " + what)


class Ferrium:
    name = "ferrium"

    def __init__(self, work, server, extra):
        self.work, self.server, self.extra = work, server, extra
        self.procs = {}
        self.http = {i: 19100 + i for i in (1, 2, 3)}
        members = ", ".join(
            '{ id = %d, http_addr = "127.0.0.1:%d", grpc_addr = "127.0.0.1:%d" }' % (i, 19100 + i, 19200 + i)
            for i in (1, 2, 3))
        for i in (1, 2, 3):
            with open(os.path.join(work, "node%d.toml" % i), "w") as f:
                f.write('[node]\nid = %d\nhttp_addr = "127.0.0.1:%d"\ngrpc_addr = "127.0.0.1:%d"\n'
                        'data_dir = "%s/data%d"\n\n[cluster]\nname = "failover"\ninitial_members = [%s]\n\n%s\n'
                        % (i, 19100 + i, 19200 + i, work, i, members, extra))

    def start(self, i):
        log = open(os.path.join(self.work, "node%d.log" % i), "a")
        self.procs[i] = subprocess.Popen([self.server, "--config", os.path.join(self.work, "node%d.toml" % i)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def leader(self):
        for i, p in self.http.items():
            if self.procs[i].poll() is None:
                st, body = request(p, "GET", "/leader")
                if st == 200 and body.get("leader"):
                    ok, b2 = request(self.http[body["leader"]], "GET", "/is-leader")
                    if ok == 200 and b2.get("is_leader"):
                        return body["leader"]
        return None

    def write(self, i, n):
        st, _ = request(self.http[i], "POST", "/write", {"Set": {"key": "failover", "value": str(n)}})
        return st == 200

    def healthy(self):
        return all(request(p, "GET", "/ready")[0] == 200 for p in self.http.values())


class Etcd:
    name = "etcd"

    def __init__(self, work, binary):
        self.work, self.binary = work, binary
        self.procs = {}
        self.http = {i: 22469 + 10 * i for i in (1, 2, 3)}
        self.peer = {i: 22470 + 10 * i for i in (1, 2, 3)}
        self.ids = {}

    def start(self, i):
        cluster = ",".join("e%d=http://127.0.0.1:%d" % (j, self.peer[j]) for j in (1, 2, 3))
        log = open(os.path.join(self.work, "etcd%d.log" % i), "a")
        self.procs[i] = subprocess.Popen([
            self.binary, "--name", "e%d" % i, "--data-dir", os.path.join(self.work, "e%d" % i),
            "--listen-client-urls", "http://127.0.0.1:%d" % self.http[i],
            "--advertise-client-urls", "http://127.0.0.1:%d" % self.http[i],
            "--listen-peer-urls", "http://127.0.0.1:%d" % self.peer[i],
            "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % self.peer[i],
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", "failover"], stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def leader(self):
        for i, p in self.http.items():
            if self.procs[i].poll() is None:
                st, body = request(p, "POST", "/v3/maintenance/status", {})
                if st == 200:
                    self.ids[int(body["header"]["member_id"])] = i
                    if body.get("leader") and int(body["leader"]) == int(body["header"]["member_id"]):
                        return i
        return None

    def write(self, i, n):
        b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
        st, _ = request(self.http[i], "POST", "/v3/kv/put", {"key": b64("failover"), "value": b64(str(n))})
        return st == 200

    def healthy(self):
        return self.leader() is not None and all(
            request(p, "GET", "/health")[0] == 200 for p in self.http.values())


def run(system, rounds):
    for i in (1, 2, 3):
        system.start(i)
    wait_for(system.healthy, 60, system.name + " cluster")
    times = []
    n = 0
    for r in range(rounds):
        wait_for(system.healthy, 60, system.name + " healthy before round %d" % (r + 1))
        leader = wait_for(system.leader, 30, system.name + " leader")
        survivors = [i for i in (1, 2, 3) if i != leader]
        killed_at = time.monotonic()
        system.procs[leader].send_signal(signal.SIGKILL)
        system.procs[leader].wait()
        k = 0
        while True:
            n += 1
            target = survivors[k % len(survivors)]
            k += 1
            try:
                if system.write(target, n):
                    break
            except (OSError, ValueError, http.client.HTTPException):
                time.sleep(0.005)
            if time.monotonic() - killed_at > 60:
                sys.exit("%s: no write acknowledged within 60 s of the kill" % system.name)
        took = time.monotonic() - killed_at
        times.append(took)
        print("%-8s round %2d: leader %d killed, first write acknowledged after %.3f s" % (system.name, r + 1, leader, took), flush=True)
        system.start(leader)
    for p in system.procs.values():
        p.send_signal(signal.SIGKILL)
        p.wait()
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--server", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "debug/ferrium-server"))
    ap.add_argument("--etcd", default="etcd")
    ap.add_argument("--only", choices=["ferrium", "etcd"])
    ap.add_argument("--ferrium-extra", default="", help="TOML appended to every Ferrium config")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ferrium-failover.")
    results = {}
    try:
        if args.only != "etcd":
            results["ferrium"] = run(Ferrium(work, args.server, args.ferrium_extra), args.rounds)
        if args.only != "ferrium":
            results["etcd"] = run(Etcd(work, args.etcd), args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n%-8s %8s %8s %8s  (seconds from kill -9 of the leader to the first acknowledged write, %d rounds)"
          % ("system", "median", "min", "max", args.rounds))
    for name, t in results.items():
        print("%-8s %8.3f %8.3f %8.3f" % (name, statistics.median(t), min(t), max(t)))


if __name__ == "__main__":
    main()
