#!/usr/bin/env python3
"""What the console costs the nodes: CPU of each member of a running
three-node cluster over a quiet interval, first with nobody looking, then
with the console (/ui) open in headless Chromium on every member at once (one browser per member).

    contrib/dev-cluster.sh start        # a cluster on 127.0.0.1:8001-8003
    contrib/bench/console-cost.py       # SECONDS=60 by default per phase
    contrib/dev-cluster.sh stop

Needs Debian's chromium and chromium-driver. The member processes are found
from contrib/dev-cluster.sh's pid files (or PIDS="p1 p2 p3" with
ENDPOINTS="127.0.0.1:8001 ..."). CPU is utime+stime from /proc/PID/stat.
Prints, per member, the CPU share in each phase, the difference, and the
console's calls it served per second while open (/cluster/status, /metrics
and the peer route /raft/status they cause).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

SECONDS = float(os.environ.get("SECONDS", "60"))
ENDPOINTS = os.environ.get(
    "ENDPOINTS", "127.0.0.1:8001 127.0.0.1:8002 127.0.0.1:8003").split()
TICK = os.sysconf("SC_CLK_TCK")


def pids():
    if os.environ.get("PIDS"):
        return [int(p) for p in os.environ["PIDS"].split()]
    out = []
    for n in (1, 2, 3):
        with open(f"data/dev-cluster/node{n}.pid") as f:
            out.append(int(f.read().strip()))
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def measure(members, seconds):
    before = [cpu_seconds(p) for p in members]
    t0 = time.monotonic()
    time.sleep(seconds)
    took = time.monotonic() - t0
    after = [cpu_seconds(p) for p in members]
    return [100.0 * (a - b) / took for a, b in zip(after, before)]


def served(ep):
    """Requests this member has served for the console's routes."""
    req = urllib.request.Request(f"http://{ep}/metrics",
                                 headers={"Accept": "text/plain;version=0.0.4"})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("ferrium_http_requests_total{") and (
                'route="/cluster/status"' in line or 'route="/metrics"' in line
                or 'route="/raft/status"' in line):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def webdriver(addr, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def main():
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    members = pids()
    driver = subprocess.Popen(["chromedriver", "--port=0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    port = None
    for line in driver.stdout:
        m = re.search(r"started successfully on port (\d+)", line)
        if m:
            port = m.group(1)
            break
    if port is None:
        sys.exit("chromedriver did not start")
    addr = f"127.0.0.1:{port}"
    profile = tempfile.mkdtemp(prefix="ferrium-console-cost-")
    try:
        print(f"members {members} at {ENDPOINTS}; {SECONDS:.0f} s per phase")
        idle = measure(members, SECONDS)
        sessions = []
        for i, ep in enumerate(ENDPOINTS):
            caps = {"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--window-size=1400,1000", f"--user-data-dir={profile}/{i}"]}}}}
            session = webdriver(addr, "POST", "/session", caps)["value"]["sessionId"]
            sessions.append(session)
            webdriver(addr, "POST", f"/session/{session}/url", {"url": f"http://{ep}/ui"})
        # One window per member, each the visible page of its own browser,
        # so every page keeps polling.
        time.sleep(5)
        state = [webdriver(addr, "POST", f"/session/{s}/execute/sync",
                           {"script": "return [document.visibilityState, "
                                      "document.querySelectorAll('#members tbody tr').length]",
                            "args": []})["value"] for s in sessions]
        print(f"pages (visibility, member rows): {state}")
        before = [served(ep) for ep in ENDPOINTS]
        looking = measure(members, SECONDS)
        after = [served(ep) for ep in ENDPOINTS]
        calls = [(b - a) / SECONDS for a, b in zip(before, after)]
        for session in sessions:
            webdriver(addr, "DELETE", f"/session/{session}")
    finally:
        driver.kill()
    print(f"{'member':>15} {'idle CPU %':>11} {'console open %':>15} {'difference':>11} {'console calls/s':>16}")
    for ep, a, b, n in zip(ENDPOINTS, idle, looking, calls):
        print(f"{ep:>15} {a:11.2f} {b:15.2f} {b - a:11.2f} {n:16.2f}")
    print(f"{'all':>15} {sum(idle):11.2f} {sum(looking):15.2f} {sum(looking) - sum(idle):11.2f}")


if __name__ == "__main__":
    main()
