#!/usr/bin/env python3
"""Hostile-input probe: malformed HTTP/1.1, HTTP/2 and TLS, JSON of the wrong
kind, and forged peer requests, sent to running Ferrium nodes; then checks
that every node is healthy, serves a write and a linearizable read, and that
no node log mentions a panic.

  contrib/hostile-probe.py --nodes 127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003 \
      [--tls] [--count 100000] [--threads 8] [--seed 1] [--logs 'data/*.log'] \
      [--token TOKEN]

--tls sends everything inside TLS (no certificate check: the probe is a
hostile client) and adds TLS-level garbage. Only loopback addresses are
accepted. Prints a table of counts per kind of input and per outcome, and
exits 1 when a node ends unhealthy, a node log has a panic, or any answer was
a 500 (bad input must never be an internal error).
"""

import argparse
import glob
import json
import os
import random
import socket
import ssl
import struct
import sys
import threading
import time
from collections import Counter

NOW_MS = lambda: int(time.time() * 1000)  # noqa: E731

REST_ROUTES = ["/write", "/read", "/list", "/init", "/add-learner", "/change-membership",
               "/cluster/status", "/ui", "/ui/app.js"]
PEER_ROUTES = ["/raft/append", "/raft/vote", "/raft/pre-vote", "/raft/write",
               "/raft/read-index", "/raft/add-learner", "/raft/change-membership",
               "/raft/snapshot", "/raft/status"]


def connect(addr, tls, timeout=3.0):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        s = ctx.wrap_socket(s, server_hostname=host)
    return s


def exchange(addr, tls, data, wait=0.3):
    """Sends bytes, returns the outcome: the status class of the first answer,
    'closed' (the server closed without an answer), or 'waiting' (no answer
    yet after `wait` seconds: the request was incomplete, and the server
    waits for the rest until its header or body deadline)."""
    try:
        s = connect(addr, tls)
    except (OSError, ssl.SSLError) as e:
        return "connect-failed:" + type(e).__name__
    try:
        s.settimeout(wait)
        try:
            s.sendall(data)
        except (OSError, ssl.SSLError):
            pass  # the server may close before reading everything
        buf = b""
        try:
            while b"\r\n" not in buf and len(buf) < 64:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except socket.timeout:
            return "waiting" if not buf else classify(buf)
        except (OSError, ssl.SSLError):
            return "closed" if not buf else classify(buf)
        return classify(buf) if buf else "closed"
    finally:
        try:
            s.close()
        except OSError:
            pass


def classify(buf):
    if buf.startswith(b"HTTP/1."):
        parts = buf.split(b" ", 2)
        if len(parts) >= 2 and parts[1][:3].isdigit():
            code = int(parts[1][:3])
            return str(code) if code >= 500 else "%dxx" % (code // 100)
    if len(buf) >= 9 and buf[3] in (0x04, 0x07):  # an HTTP/2 SETTINGS or GOAWAY frame
        return "h2-frames"
    return "other-bytes"


# ---- HTTP/1.1 -------------------------------------------------------------

def h1_malformed(rng, host):
    templates = [
        b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n",
        b"POST /write HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /write HTTP/1.1\r\nHost: %s\r\nContent-Length: -1\r\n\r\n",
        b"POST /write HTTP/1.1\r\nHost: %s\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"POST /write HTTP/1.1\r\nHost: %s\r\nContent-Length: +5\r\n\r\nhello",
        b"POST /write HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"POST /write HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST /write HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n5;" + b"x" * 9000 + b"\r\nhello\r\n0\r\n\r\n",
        b"POST /write HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST /write HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
        b"GET /health HTTP/1.1\r\nHost: bad host\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: %s\r\nHost: other\r\n\r\n",
        b"GET /health HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: %s\r\n folded: header\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: %s\r\nBad Header: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: %s\r\n: empty-name\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: %s\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: %s\r\n\r\n",
        b"GET /health HTTP/9.9\r\nHost: %s\r\n\r\n",
        b"GET /health\r\n\r\n",
        b"G\x00T /health HTTP/1.1\r\nHost: %s\r\n\r\n",
        b"GET /health HTTP/1.1\nHost: %s\n\n",
        b"GET /health HTTP/1.1\rHost: %s\r\r",
        b"\r\n\r\n\r\n\r\n",
        b"GET http://evil.example/health HTTP/1.1\r\nHost: %s\r\n\r\n",
        b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n",
        b"GET /health?x=%%zz HTTP/1.1\r\nHost: %s\r\n\r\n",
        b"GET /%%2e%%2e/%%2e%%2e/etc/passwd HTTP/1.1\r\nHost: %s\r\n\r\n",
        b"POST /read HTTP/1.1\r\nHost: %s\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: %s\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: %s\r\n\r\nGET /health HTTP/1.1\r\nHost: %s\r\n\r\nGARBAGE\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00",
    ]
    t = rng.choice(templates)
    data = t.replace(b"%s", host.encode()).replace(b"%%", b"%")
    r = rng.random()
    if r < 0.25:  # flip bytes
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data)
    elif r < 0.35:  # truncate
        data = data[: rng.randrange(1, len(data) + 1)]
    elif r < 0.45:  # insert random bytes
        at = rng.randrange(len(data) + 1)
        data = data[:at] + os.urandom(rng.randint(1, 16)) + data[at:]
    elif r < 0.5:
        data = os.urandom(rng.randint(1, 512))
    return data


def h1_request(host, method, path, body, headers=()):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + host, "Connection: close"]
    lines += ["%s: %s" % h for h in headers]
    if body is not None:
        lines += ["Content-Type: application/json", "Content-Length: %d" % len(body)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def random_json(rng, depth=0):
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice([None, True, False, 0, -1, 2**64, 1e308, -0.0, "", "k",
                           "\u0000", "\ud7ff\ue000", "x" * rng.randint(0, 300)])
    if r < 0.6:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["Set", "Delete", "BatchSet", "key", "value", "pairs", "prefix", "limit",
            "consistency", "start_after", "node_id", "rpc_addr", "api_addr", "1", "zz"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def json_wrong_kind(rng, host, token):
    route = rng.choice(REST_ROUTES)
    value = random_json(rng)
    if route in ("/add-learner", "/change-membership", "/init"):
        # Never a well-formed membership change: the probe must not reshape
        # the cluster it is probing.
        value = rng.choice([["a", "b"], {"x": [1]}, "str", [[1]], {"node_id": "x"}, None, 1.5])
    if route in ("/read", "/list") and rng.random() < 0.3:
        value = [random_json(rng)]  # an array where an object belongs
    body = json.dumps(value).encode()
    if rng.random() < 0.1:
        body = body[: rng.randrange(len(body) + 1)]
    headers = [("Authorization", "Bearer " + token)] if token else []
    return h1_request(host, "POST", route, body, headers)


# ---- peer routes ------------------------------------------------------------

def forged_peer(rng, host):
    route = rng.choice(PEER_ROUTES)
    headers = []
    if rng.random() < 0.8:
        headers.append(("x-ferrium-target", rng.choice(["1", "2", "3", "0", "99", "-1", "x", "18446744073709551616"])))
    if rng.random() < 0.8:
        headers.append(("x-ferrium-from", rng.choice(["1", "2", "3", "7"])))
    if rng.random() < 0.8:
        headers.append(("x-ferrium-cluster", rng.choice(["ferrium", "test", "probe", ""])))
    if rng.random() < 0.7:
        ts = rng.choice([NOW_MS(), NOW_MS() - 10**7, 0, 2**64 - 1])
        mac = os.urandom(32).hex() if rng.random() < 0.9 else "zz"
        headers.append(("x-ferrium-auth", "t=%d,mac=%s" % (ts, mac)))
    if route == "/raft/snapshot":
        headers.append(("x-ferrium-vote", rng.choice([
            '{"leader_id":{"term":18446744073709551615,"node_id":1},"committed":true}',
            "{", "null", '{"leader_id":{"term":1}}'])))
        headers.append(("x-ferrium-snapshot-meta", rng.choice([
            '{"last_log_id":{"leader_id":{"term":1,"node_id":1},"index":99999999},"last_membership":{"log_id":null,"membership":{"configs":[],"nodes":{}}},"snapshot_id":"x"}',
            "[]", "garbage"])))
        body = os.urandom(rng.randint(0, 4096))
        ctype = "application/octet-stream"
    elif route == "/raft/append" and rng.random() < 0.5:
        body = b"\xa1" + os.urandom(rng.randint(0, 256))
        ctype = "application/x-ferrium-append"
    else:
        body = rng.choice([
            json.dumps(random_json(rng)).encode(),
            b'{"vote":{"leader_id":{"term":18446744073709551615,"node_id":9},"committed":false},"last_log_id":null}',
            b'{"Set":{"key":"forged","value":"x"}}',
            os.urandom(rng.randint(0, 128)),
        ])
        ctype = "application/json"
    lines = ["POST %s HTTP/1.1" % route, "Host: " + host, "Connection: close",
             "Content-Type: " + ctype, "Content-Length: %d" % len(body)]
    lines += ["%s: %s" % h for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# ---- HTTP/2 -----------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def h2_malformed(rng):
    frames = [frame(4, 0, 0, b"")]  # SETTINGS
    for _ in range(rng.randint(1, 8)):
        k = rng.randrange(10)
        if k == 0:   # HEADERS with garbage HPACK
            frames.append(frame(1, 0x5, rng.choice([1, 3, 2, 0]), os.urandom(rng.randint(0, 64))))
        elif k == 1:  # DATA on stream 0 / unopened stream
            frames.append(frame(0, 1, rng.choice([0, 5, 7]), os.urandom(rng.randint(0, 64))))
        elif k == 2:  # bad SETTINGS
            frames.append(frame(4, 0, 0, struct.pack(">HI", rng.choice([2, 3, 4, 5, 6, 99]), rng.choice([0, 2**31, 2**32 - 1, 1]))))
        elif k == 3:  # WINDOW_UPDATE of 0 or huge
            frames.append(frame(8, 0, rng.choice([0, 1]), struct.pack(">I", rng.choice([0, 2**31 - 1]))))
        elif k == 4:  # a frame claiming 16 MB
            frames.append(b"\xff\xff\xff\x00\x00\x00\x00\x00\x01" + os.urandom(32))
        elif k == 5:  # RST_STREAM burst
            frames.extend(frame(3, 0, 2 * i + 1, struct.pack(">I", 8)) for i in range(rng.randint(1, 50)))
        elif k == 6:  # PING with bad length
            frames.append(frame(6, 0, 0, os.urandom(rng.choice([7, 8, 9]))))
        elif k == 7:  # CONTINUATION without HEADERS
            frames.append(frame(9, 4, 1, os.urandom(16)))
        elif k == 8:  # PRIORITY on itself
            frames.append(frame(2, 0, 1, struct.pack(">IB", 1, 255)))
        else:
            frames.append(os.urandom(rng.randint(1, 64)))
    data = PREFACE + b"".join(frames)
    if rng.random() < 0.2:
        data = PREFACE[: rng.randrange(1, len(PREFACE))] + os.urandom(8)
    return data


# ---- TLS ----------------------------------------------------------------------

def tls_garbage(rng):
    hello = bytearray(b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + os.urandom(32) + b"\x00\x00\x04\x13\x01\x13\x02\x01\x00\x00\x97")
    hello += os.urandom(rng.randint(0, 160))
    r = rng.random()
    if r < 0.3:
        return bytes(hello[: rng.randrange(1, len(hello))])
    if r < 0.6:
        for _ in range(rng.randint(1, 6)):
            hello[rng.randrange(len(hello))] = rng.randrange(256)
        return bytes(hello)
    if r < 0.8:
        return b"\x16\x03\x03\xff\xff" + os.urandom(rng.randint(0, 256))
    return os.urandom(rng.randint(1, 300))


def raw_exchange(addr, data, wait=0.3):
    """Like exchange, but on a plain TCP socket even with --tls (TLS-level garbage)."""
    host, port = addr.rsplit(":", 1)
    try:
        s = socket.create_connection((host, int(port)), timeout=3)
    except OSError as e:
        return "connect-failed:" + type(e).__name__
    try:
        s.settimeout(wait)
        try:
            s.sendall(data)
            buf = s.recv(64)
        except socket.timeout:
            return "waiting"
        except OSError:
            return "closed"
        if not buf:
            return "closed"
        if buf[0] == 0x15:
            return "tls-alert"
        return classify(buf)
    finally:
        s.close()


# ---- run ------------------------------------------------------------------

def check_node(addr, tls, token):
    headers = [("Authorization", "Bearer " + token)] if token else []
    out = {}
    for name, req in [
        ("health", h1_request(addr, "GET", "/health", None)),
        ("write", h1_request(addr, "POST", "/write", json.dumps({"Set": {"key": "probe/after", "value": addr}}).encode(), headers)),
        ("read", h1_request(addr, "POST", "/read", json.dumps({"key": "probe/after", "consistency": "linearizable"}).encode(), headers)),
    ]:
        try:
            s = connect(addr, tls, timeout=10)
            s.sendall(req)
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            s.close()
            out[name] = buf.split(b"\r\n", 1)[0].decode(errors="replace") + " " + buf.split(b"\r\n\r\n", 1)[-1][:200].decode(errors="replace")
        except (OSError, ssl.SSLError) as e:
            out[name] = "failed: %s" % e
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", required=True, help="comma-separated HTTP addresses (loopback only)")
    ap.add_argument("--grpc", default="", help="comma-separated gRPC addresses for HTTP/2 garbage")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--count", type=int, default=100000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--logs", default="", help="glob of node log files to search for panics")
    ap.add_argument("--token", default="", help="admin token for the final write and read")
    args = ap.parse_args()
    nodes = [n for n in args.nodes.split(",") if n]
    grpc = [n for n in args.grpc.split(",") if n]
    for a in nodes + grpc:
        if not (a.startswith("127.") or a.startswith("localhost:") or a.startswith("[::1]")):
            sys.exit("refusing %s: the probe only targets loopback addresses" % a)

    kinds = ["h1-malformed", "json-wrong-kind", "peer-forged", "h2-malformed"]
    if args.tls:
        kinds.append("tls-garbage")
    counts = Counter()
    lock = threading.Lock()
    next_i = [0]

    def worker(wid):
        rng = random.Random(args.seed * 1000 + wid)
        while True:
            with lock:
                if next_i[0] >= args.count:
                    return
                next_i[0] += 1
                i = next_i[0]
            kind = kinds[i % len(kinds)]
            addr = nodes[i % len(nodes)]
            if kind == "h1-malformed":
                outcome = exchange(addr, args.tls, h1_malformed(rng, addr))
            elif kind == "json-wrong-kind":
                outcome = exchange(addr, args.tls, json_wrong_kind(rng, addr, args.token), wait=5)
            elif kind == "peer-forged":
                outcome = exchange(addr, args.tls, forged_peer(rng, addr), wait=5)
            elif kind == "h2-malformed":
                target = grpc[i % len(grpc)] if grpc and rng.random() < 0.5 else addr
                if args.tls and target == addr:
                    outcome = raw_exchange(addr, tls_garbage(rng))
                else:
                    outcome = exchange(target, args.tls and target == addr, h2_malformed(rng))
            else:
                outcome = raw_exchange(addr, tls_garbage(rng))
            with lock:
                counts[(kind, outcome)] += 1

    started = time.time()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - started

    by_kind = Counter()
    for (k, _), n in counts.items():
        by_kind[k] += n
    print("%d requests in %.0f s (%d/s)" % (sum(by_kind.values()), elapsed, sum(by_kind.values()) / max(elapsed, 1e-9)))
    print("%-16s %8s  outcomes" % ("kind", "count"))
    for k in kinds:
        outs = ", ".join("%s %d" % (o, n) for (kk, o), n in sorted(counts.items()) if kk == k)
        print("%-16s %8d  %s" % (k, by_kind[k], outs))

    bad = False
    internal = sum(n for (k, o), n in counts.items() if o == "500")
    if internal:
        print("FAIL: %d answers were 500 internal errors" % internal)
        bad = True
    for addr in nodes:
        r = check_node(addr, args.tls, args.token)
        ok = all(v.startswith("HTTP/1.1 200") for v in r.values()) and addr in r.get("read", "")
        print("%s %s: %s" % ("ok  " if ok else "FAIL", addr, r))
        bad |= not ok
    if args.logs:
        for path in sorted(glob.glob(args.logs)):
            text = open(path, errors="replace").read()
            if "panicked" in text or "panic" in text.lower():
                print("FAIL: %s mentions a panic" % path)
                bad = True
            else:
                print("ok   %s: no panic" % path)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
