#!/usr/bin/env python3
"""Turns one workload's `ringkv-bench run --output json` and its
`perf report --stdio --no-children --sort dso,sym` into a markdown
breakdown: server CPU per request, then the share of samples by component
and the hottest symbols. Used by scripts/profile.sh."""

import json
import re
import sys

# First match wins: the order puts specific crates before the generic ones.
COMPONENTS = [
    ("kernel: context switches and wake-ups",
     lambda dso, sym: "kernel" in dso and re.search(r"(task_switch|schedule|wake|futex|spin_unlock|spin_lock|select_task|enqueue|dequeue|update_curr|pick_next|ttwu|idle)", sym)),
    ("kernel: loopback TCP",
     lambda dso, sym: "kernel" in dso and re.search(r"(tcp|inet|ip_|skb|sock|net_|netif|softirq|loopback|xmit|dev_queue|napi|copy_user|copyout|copyin|_copy_to_iter|_copy_from_iter)", sym)),
    ("kernel: disk and fsync",
     lambda dso, sym: "kernel" in dso and re.search(r"(iowrite|ioread|virtio|vring|ext4|jbd2|blk_|bio_|nvme|fsync|filemap|writeback|page_cache|folio)", sym)),
    ("kernel: syscall entry, exit and other", lambda dso, sym: "kernel" in dso),
    ("RocksDB", lambda dso, sym: "rocksdb" in sym.lower() or "rocksdb" in dso
     or sym.startswith(("crc32c", "ZSTD", "LZ4", "XXH", "snappy"))),
    ("HTTP/2 and gRPC (h2, hyper, tonic, tower, http)",
     lambda dso, sym: re.search(r"\b(h2|hyper|hyper_util|tonic|tower|tower_http|http|http_body|axum)::", sym)),
    ("protobuf (prost)", lambda dso, sym: "prost::" in sym or "ringkv_proto::" in sym),
    ("peer signing and TLS (hmac, sha2, rustls, ring)",
     lambda dso, sym: re.search(r"\b(hmac|sha2|rustls|ring|aws_lc_rs|digest)::", sym) or "sha256" in sym.lower()),
    ("tokio runtime", lambda dso, sym: "tokio::" in sym or "tokio_util::" in sym),
    ("gossip (chitchat)", lambda dso, sym: "chitchat::" in sym),
    ("metrics and tracing", lambda dso, sym: re.search(r"\b(prometheus_client|tracing|tracing_core|tracing_subscriber)::", sym)),
    ("ringkv: versions (records, siblings, contexts)", lambda dso, sym: "ringkv_node::versions" in sym),
    ("ringkv: coordinator", lambda dso, sym: "ringkv_node::coordinator" in sym),
    ("ringkv: replica and storage", lambda dso, sym: re.search(r"ringkv_node::(replica|storage)", sym)),
    ("ringkv: membership, ring and RPC", lambda dso, sym: re.search(r"ringkv_node::(cluster|ring)", sym)),
    ("ringkv: API and server", lambda dso, sym: re.search(r"ringkv_node::(api|server)", sym)),
    ("ringkv: other", lambda dso, sym: "ringkv" in sym),
    ("allocation (malloc, free)", lambda dso, sym: re.search(r"(malloc|free|realloc|calloc|_int_|tcache|arena|cfree)", sym)),
    ("memory copies (memcpy, memmove, memset)", lambda dso, sym: re.search(r"mem(cpy|move|set|cmp)", sym)),
    ("Rust std, alloc and core", lambda dso, sym: re.search(r"\b(std|alloc|core|hashbrown|bytes)::", sym)),
    ("libc and pthread", lambda dso, sym: "libc" in dso or "pthread" in sym),
]

LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$")


def parse(report):
    rows = []
    with open(report) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                rows.append((float(m.group(1)), m.group(2), m.group(4).strip()))
    return rows


def component(dso, sym):
    for name, test in COMPONENTS:
        if test(dso, sym):
            return name
    return "other"


def main():
    workload, measurement_path, report = sys.argv[1:4]
    with open(measurement_path) as f:
        m = json.load(f)
    rows = parse(report)
    total = sum(p for p, _, _ in rows) or 1.0
    shares = {}
    for percent, dso, sym in rows:
        name = component(dso, sym)
        shares[name] = shares.get(name, 0.0) + percent
    requests = m["requests"]
    per_second = requests / m["elapsed_seconds"]
    cpu = m.get("server_cpu_seconds") or 0.0
    us_per_request = cpu / requests * 1e6 if requests else 0.0
    print(f"## {workload}")
    print()
    print(f"{per_second:,.0f} requests/s ({m['keys']:,} keys in {requests:,} requests), "
          f"p50 {m['latency']['p50_us'] / 1000:.2f} ms, p99 {m['latency']['p99_us'] / 1000:.2f} ms, "
          f"{m['errors']} errors; server CPU {us_per_request:,.0f} µs a request.")
    if m.get("first_error"):
        print()
        print(f"First error: `{m['first_error']}`")
    print()
    print("| component | share of server CPU | µs a request |")
    print("|---|---:|---:|")
    for name, percent in sorted(shares.items(), key=lambda kv: -kv[1]):
        share = percent / total
        if share < 0.005:
            continue
        print(f"| {name} | {share:.1%} | {share * us_per_request:,.0f} |")
    print()
    print("Hottest symbols (self time):")
    print()
    for percent, dso, sym in sorted(rows, key=lambda r: -r[0])[:12]:
        short = sym if len(sym) <= 110 else sym[:107] + "..."
        print(f"- {percent / total:.1%} `{short}` ({dso})")
    print()


if __name__ == "__main__":
    main()
