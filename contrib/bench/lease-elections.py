#!/usr/bin/env python3
"""A lease without keep-alives under repeated elections: Ferrium and etcd 3.4.

Starts a three-node cluster of each (default settings, fsync on, loopback;
the clusters of contrib/bench/failover.py), grants one lease of --ttl
seconds, puts a key with it, sends no keep-alive, and then forces a leader
change every --every seconds: the leader is paused (SIGSTOP) until the two
others elect one of themselves, then resumed. The figure is when the key
disappears, counted from the grant, and after how many leader changes; a
key still there after --limit seconds is reported as such. The same client
for both: one HTTP/1.1 JSON request at a time (Ferrium's REST routes,
etcd's JSON gateway).

  contrib/bench/lease-elections.py [--ttl 5] [--every 1.5] [--limit 30]
      [--server target/debug/ferrium-server] [--etcd etcd] [--only ferrium|etcd]
"""

import argparse
import base64
import http.client
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import failover  # noqa: E402  (the clusters and the request helper)

request = failover.request


def b64(s):
    return base64.b64encode(s.encode()).decode()


def leader_among(system, ids):
    """The leader as the members `ids` see it, or None."""
    for i in ids:
        try:
            if system.name == "ferrium":
                st, body = request(system.http[i], "GET", "/leader")
                if st == 200 and body.get("leader") in ids:
                    return body["leader"]
            else:
                st, body = request(system.http[i], "POST", "/v3/maintenance/status", {})
                if st == 200:
                    system.ids[int(body["header"]["member_id"])] = i
                    lead = system.ids.get(int(body.get("leader", 0)))
                    if lead in ids:
                        return lead
        except (OSError, ValueError, http.client.HTTPException):
            pass
    return None


def grant_and_put(system, ttl):
    for i in (1, 2, 3):
        try:
            if system.name == "ferrium":
                st, g = request(system.http[i], "POST", "/lease/grant", {"ttl": ttl}, timeout=5)
                if st != 200:
                    continue
                st, _ = request(system.http[i], "POST", "/write",
                                {"Set": {"key": "flap", "value": "x", "lease": g["id"]}}, timeout=5)
            else:
                st, g = request(system.http[i], "POST", "/v3/lease/grant", {"TTL": ttl}, timeout=5)
                if st != 200:
                    continue
                st, _ = request(system.http[i], "POST", "/v3/kv/put",
                                {"key": b64("flap"), "value": b64("x"), "lease": g["ID"]}, timeout=5)
            if st == 200:
                return
        except (OSError, ValueError, http.client.HTTPException):
            pass
    sys.exit(system.name + ": could not grant a lease and put its key")


def exists(system, ids):
    for i in ids:
        try:
            if system.name == "ferrium":
                st, body = request(system.http[i], "POST", "/range", {"key": "flap"})
            else:
                st, body = request(system.http[i], "POST", "/v3/kv/range", {"key": b64("flap")})
            if st == 200:
                return int(body.get("count", 0)) > 0
        except (OSError, ValueError, http.client.HTTPException):
            pass
    return None


def run(system, ttl, every, limit):
    for i in (1, 2, 3):
        system.start(i)
    failover.wait_for(system.healthy, 60, system.name + " cluster")
    grant_and_put(system, ttl)
    granted = time.monotonic()
    changes = 0
    gone = None
    while time.monotonic() - granted < limit:
        round_began = time.monotonic()
        lead = failover.wait_for(lambda: leader_among(system, [1, 2, 3]), 30, system.name + " leader")
        others = [i for i in (1, 2, 3) if i != lead]
        if exists(system, others) is False:
            gone = time.monotonic() - granted
            break
        system.procs[lead].send_signal(signal.SIGSTOP)
        failover.wait_for(lambda: leader_among(system, others), 30, system.name + " new leader")
        system.procs[lead].send_signal(signal.SIGCONT)
        changes += 1
        if exists(system, others) is False:
            gone = time.monotonic() - granted
            break
        time.sleep(max(0.0, every - (time.monotonic() - round_began)))
    for p in system.procs.values():
        p.send_signal(signal.SIGCONT)
        p.send_signal(signal.SIGKILL)
        p.wait()
    if gone is None:
        print("%-8s lease of %d s, a leader change every %.1f s: the key is still there after %.0f s and %d leader changes"
              % (system.name, ttl, every, limit, changes), flush=True)
    else:
        print("%-8s lease of %d s, a leader change every %.1f s: the key went %.2f s after the grant, after %d leader changes"
              % (system.name, ttl, every, gone, changes), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ttl", type=int, default=5)
    ap.add_argument("--every", type=float, default=1.5)
    ap.add_argument("--limit", type=float, default=30)
    ap.add_argument("--server", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "debug/ferrium-server"))
    ap.add_argument("--etcd", default="etcd")
    ap.add_argument("--only", choices=["ferrium", "etcd"])
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ferrium-lease-elections.")
    try:
        if args.only != "etcd":
            run(failover.Ferrium(work, args.server, ""), args.ttl, args.every, args.limit)
        if args.only != "ferrium":
            run(failover.Etcd(work, args.etcd), args.ttl, args.every, args.limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
