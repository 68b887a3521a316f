#!/usr/bin/env python3
"""Streaming handoff speed: one node hands half its partitions to a joining
node over one stream, on loopback.

Baseline, measured in the same run: how fast the source scans the same data
locally (its anti-entropy tree build, unthrottled). The ratio says how close
streaming comes to reading the data at all. Riak's handoff, about 8.6 MB/s,
is the outside anchor.

Usage: scripts/bench_handoff.py [KEYS] (default 200000 keys of 1 KiB)
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/ringkv/target"))
BIN = os.path.join(TARGET, "debug")
KEYS = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
VALUE = 1024


def metric(ip, name):
    try:
        text = urllib.request.urlopen(f"http://{ip}:9379/metrics", timeout=5).read().decode()
    except OSError:
        return None
    total = 0.0
    found = False
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if m:
            total += float(m.group(2))
            found = True
    return total if found else None


def wait(what, check, timeout=600, every=0.1):
    print(f"waiting for {what}", file=sys.stderr, flush=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def node(ip, data, *extra):
    return subprocess.Popen(
        [f"{BIN}/ringkv-node", "--listen", f"{ip}:7379", "--metrics-listen", f"{ip}:9379",
         "--data-dir", data, "--node-id", ip, "--replication-factor", "1",
         "--read-quorum", "1", "--write-quorum", "1",
         "--gossip-interval-ms", "100", "--durability", "periodic",
         "--anti-entropy-interval-secs", "5", "--anti-entropy-bytes-per-sec", "0",
         "--log", "warn", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def serving(ip):
    out = subprocess.run([f"{BIN}/ringkv", "-e", f"{ip}:7379", "get", "__probe"],
                         capture_output=True, text=True)
    return "not found" in out.stderr


def main():
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET)
    subprocess.run(["cargo", "build", "--workspace", "--bins", "--quiet"], check=True, env=env)
    work = tempfile.mkdtemp()
    procs = []
    try:
        a, b = "127.0.11.1", "127.0.11.2"
        # The founding node makes the first layout at once; the joining one
        # waits the default settle time, which lets gossip find the cluster.
        procs.append(node(a, f"{work}/a", "--layout-settle-ms", "0"))
        wait("the source to serve", lambda: serving(a), 60)
        subprocess.run([f"{BIN}/ringkv", "-e", f"{a}:7379", "bench", "--phases", "put",
                        "--requests", str(KEYS), "--keys", str(KEYS), "--value-size", str(VALUE),
                        "--concurrency", "32", "--json"], check=True, capture_output=True)
        # Baseline: a full tree build after the load, i.e. a scan of all data.
        builds = metric(a, "ringkv_anti_entropy_tree_build_seconds_count") or 0
        wait("a tree build after the load",
             lambda: (metric(a, "ringkv_anti_entropy_tree_build_seconds_count") or 0) >= builds + 2, 120)
        scan_seconds = (metric(a, "ringkv_anti_entropy_tree_build_seconds_sum") /
                        metric(a, "ringkv_anti_entropy_tree_build_seconds_count"))
        data_bytes = KEYS * VALUE
        scan_rate = data_bytes / scan_seconds / 1e6

        procs.append(node(b, f"{work}/b", "--seeds", f"{a}:7946"))
        first = wait("the first streamed byte",
                     lambda: (metric(b, "ringkv_handoff_bytes_received_total") or 0) > 0 and time.time(),
                     120, 0.02)
        last_value, last_change = 0, first
        while True:
            value = metric(b, "ringkv_handoff_bytes_received_total") or 0
            now = time.time()
            if value != last_value:
                last_value, last_change = value, now
            elif now - last_change > 3:
                break
            time.sleep(0.02)
        seconds = last_change - first
        rate = last_value / seconds / 1e6
        keys = metric(b, "ringkv_handoff_keys_received_total")
        print(f"| keys streamed | MB streamed | seconds | stream MB/s | source scan MB/s (baseline) | vs baseline | vs Riak 8.6 MB/s |")
        print(f"|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {keys:,.0f} | {last_value / 1e6:,.1f} | {seconds:.2f} | {rate:,.1f} | {scan_rate:,.1f} | {rate / scan_rate:.2f} | {rate / 8.6:.1f}x |")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
