#!/usr/bin/env python3
"""Runs a command the way systemd runs a Type=notify service, without systemd.

    contrib/systemd/notify-check.py [--user USER] [--endpoint HOST:PORT] -- COMMAND...

Creates a datagram socket, starts COMMAND (as USER when given) with
NOTIFY_SOCKET pointing at it, and requires READY=1 within 60 s. Then it checks
the node with ferriumctl (from COMMAND's directory): health, a leader, a
put and a get. Finally it sends SIGTERM and requires STOPPING=1 and exit
status 0. Exit status 0 when all of that happened, 1 otherwise.

This is the equivalent of `systemd-run -p Type=notify ...` on hosts where
systemd is not PID 1 (containers, CI).
"""
import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--user")
    ap.add_argument("--endpoint", default="127.0.0.1:8001")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("no command given")
    ctl = os.path.join(os.path.dirname(cmd[0]), "ferriumctl")
    if not os.access(ctl, os.X_OK):
        ctl = shutil.which("ferriumctl") or ctl

    tmp = tempfile.mkdtemp(prefix="ferrium-notify-")
    os.chmod(tmp, 0o755)
    path = os.path.join(tmp, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o666)  # the service user must be able to send to it

    kwargs = {}
    if args.user:
        pw = pwd.getpwnam(args.user)
        kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    env = dict(os.environ, NOTIFY_SOCKET=path)
    env.pop("RUST_LOG", None)
    print("starting:", " ".join(cmd), f"(NOTIFY_SOCKET={path})", flush=True)
    child = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, cwd="/", **kwargs)
    ok = True
    try:
        ok = expect(sock, "READY=1", 60) and ok
        if ok:
            ok = ferriumctl_checks(ctl, args.endpoint) and ok
        child.send_signal(signal.SIGTERM)
        ok = expect(sock, "STOPPING=1", 30) and ok
        code = child.wait(timeout=60)
        print(f"exit status {code}", flush=True)
        ok = ok and code == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        sock.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print("notify check:", "passed" if ok else "FAILED", flush=True)
    return 0 if ok else 1


def expect(sock, want, timeout):
    sock.settimeout(timeout)
    start = time.monotonic()
    try:
        got = sock.recv(4096).decode()
    except socket.timeout:
        print(f"no notification within {timeout}s (wanted {want})", flush=True)
        return False
    print(f"received {got!r} after {time.monotonic() - start:.2f}s", flush=True)
    return want in got.split("\n")


def ferriumctl_checks(ctl, endpoint):
    def run(*a):
        r = subprocess.run([ctl, "--endpoints", endpoint, *a], capture_output=True, text=True)
        return r.returncode, r.stdout.strip(), r.stderr.strip()

    code, out, err = run("health")
    print("ferriumctl health ->", code, out, err, flush=True)
    if code != 0:
        return False
    deadline = time.monotonic() + 30
    while run("leader")[0] != 0:
        if time.monotonic() > deadline:
            print("no leader within 30s", flush=True)
            return False
        time.sleep(0.2)
    code, out, err = run("put", "notify-check", "ok")
    print("ferriumctl put ->", code, out, err, flush=True)
    code2, out2, err2 = run("get", "notify-check")
    print("ferriumctl get ->", code2, out2, err2, flush=True)
    return code == 0 and code2 == 0 and out2 == "ok"


if __name__ == "__main__":
    sys.exit(main())
