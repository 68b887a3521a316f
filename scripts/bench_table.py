"""Turns `ringkv bench --json` lines (with an added "mode") into a Markdown table."""
import json
import sys

rows = [json.loads(line) for line in sys.stdin if line.strip()]
print("| durability | phase | ops/s | p50 µs | p99 µs | p999 µs | vs baseline |")
print("|---|---|---:|---:|---:|---:|---:|")
for r in rows:
    print(
        f"| {r['mode']} | {r['phase']} | {r['ops_per_sec']:,.0f} | {r['p50_us']} "
        f"| {r['p99_us']} | {r['p999_us']} | {r['vs_baseline']:.2f} |"
    )
