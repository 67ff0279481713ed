"""Reads the SES stand-in's /stats (JSON on stdin) and prints what the benchmark reports:
sends in all, the mean, lowest and highest of the full seconds, and the most sends in flight.

A full second is one the run covered entirely: the first and the last second with sends are
partial (the run started and stopped inside them), so they are left out of the mean and the
lowest, but never out of the highest (a burst at the edge would still exceed the rate).

    curl -s http://STANDIN/stats | python3 scripts/bench.d/persecond.py
    -> "sent mean min max max_in_flight full_seconds"
"""
import json
import sys

stats = json.load(sys.stdin)
seconds = stats["per_second"]
counts = [n for _, n in seconds]
full = counts[1:-1]
if full:
    mean = sum(full) / len(full)
    low = min(full)
else:
    mean = low = 0
high = max(counts) if counts else 0
print(f"{stats['sent']} {mean:.0f} {low} {high} {stats['max_in_flight']} {len(full)}")
