"""The table and the verdicts of scripts/soak, from the rows it recorded after each interval.

    python3 scripts/soak.d/report.py ROWS WARMUP DECIDES USERS SENT OUTBOX QUEUE [INTERVAL [RETRY DEAD]]

ROWS is the tab-separated file of samples (one line per interval, the columns of COLUMNS);
WARMUP the number of leading intervals left out of the comparison; DECIDES 1 when the RSS and
p99 criteria decide the exit status (runs of 10 minutes or more), 0 when they are only printed;
USERS, SENT, OUTBOX and QUEUE the end state once the pipeline drained: users in the database,
emails the stand-in received, outbox rows and jobs left in the work queue; INTERVAL the
seconds of one interval (60 unless given); RETRY and DEAD the jobs in the run's delay queues and
its dead-letter queue once drained.

Prints the markdown table, the rule and a verdict per criterion; exits 1 when a criterion that
decides failed.
"""
import statistics
import sys

COLUMNS = (
    "i end target rate requests p50 p99 non2xx sockerr rss_ingest rss_dispatcher rss_standin "
    "fd_ingest fd_dispatcher tcp_ingest tcp_dispatcher pg queue sent concurrency busy others"
).split()

# The thresholds. Leaks are bugs at any length, so fds, connections and errors always decide;
# RSS and p99 decide only runs long enough for a warm-up not to dominate them.
RSS_RATIO = 1.10
P99_RATIO = 1.5
COUNT_SLACK = 4
# ...or this share of the count, whichever is more: the dispatcher keeps a connection per send
# in flight, and its automatic concurrency moves a few percent with the machine's load (CI saw
# 263 → 271 with other work on the machine). A leak grows without end, far past either.
COUNT_SLACK_SHARE = 0.05
# The work queue's depth at the end of an interval: at half the capacity the dispatcher keeps
# up, so the deepest of the last third may exceed the deepest of the first by at most this
# share of one interval's signups (a backlog that grows is the pipeline falling behind).
BACKLOG_SHARE = 0.10

rows_file, warmup, decides, users, sent, outbox, queue = sys.argv[1:8]
warmup, decides = int(warmup), decides == "1"
users, sent, outbox, queue = int(users), int(sent), int(outbox), int(queue)
interval = float(sys.argv[8]) if len(sys.argv) > 8 else 60.0
retry = int(sys.argv[9]) if len(sys.argv) > 9 else 0
dead = int(sys.argv[10]) if len(sys.argv) > 10 else 0

rows = []
with open(rows_file) as f:
    for line in f:
        values = line.split()
        if len(values) != len(COLUMNS):
            continue
        rows.append({k: float(v) for k, v in zip(COLUMNS, values)})
if len(rows) <= warmup:
    print(f"only {len(rows)} intervals recorded: nothing to compare after a warm-up of {warmup}")
    sys.exit(1)

steady = rows[warmup:]
k = max(1, round(len(steady) / 3))
first, last = steady[:k], steady[-k:]


def span(rs):
    a, b = int(rs[0]["i"]), int(rs[-1]["i"])
    return f"interval {a}" if a == b else f"intervals {a}–{b}"


def mb(kb):
    return f"{kb / 1024:.1f}"


def ms(v):
    return f"{v:.2f}"


table = [
    "| # | end | signups/s (of target) | p50 ms | p99 ms | non-2xx | RSS MB ingest / dispatcher / stand-in "
    "| fds ingest / dispatcher | TCP ingest / dispatcher | PG backends | queue | emails | in flight allowed "
    "| machine busy / others |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]
prev_sent = None
for r in rows:
    mark = " (warm-up)" if r["i"] <= warmup else ""
    bad = int(r["non2xx"] + r["sockerr"])
    table.append(
        f"| {int(r['i'])}{mark} | {int(r['end'])} s | {int(r['rate'])} ({100 * r['rate'] / r['target']:.0f} %) "
        f"| {ms(r['p50'])} | {ms(r['p99'])} | {bad} "
        f"| {mb(r['rss_ingest'])} / {mb(r['rss_dispatcher'])} / {mb(r['rss_standin'])} "
        f"| {int(r['fd_ingest'])} / {int(r['fd_dispatcher'])} | {int(r['tcp_ingest'])} / {int(r['tcp_dispatcher'])} "
        f"| {int(r['pg'])} | {int(r['queue'])} | {int(r['sent'])} | {int(r['concurrency'])} "
        f"| {int(r['busy'])} % / {'?' if r['others'] < 0 else str(int(r['others'])) + ' %'} |"
    )

out = ["\n".join(table), ""]
out.append(
    f"Flat, as measured: the first {warmup} interval(s) are warm-up and left out; of the "
    f"{len(steady)} after it, the first third ({span(first)}) is compared with the last third "
    f"({span(last)}). RSS: mean of the last third / mean of the first ≤ {RSS_RATIO:.2f}× per process; "
    f"p99: median of the last third / median of the first ≤ {P99_RATIO}×; the work queue's depth: the "
    f"deepest of the last third at most {100 * BACKLOG_SHARE:.0f} % of one interval's signups above the deepest "
    f"of the first; open fds, established TCP "
    f"connections and PostgreSQL backends: the highest of the last third at most {COUNT_SLACK} (or "
    f"{100 * COUNT_SLACK_SHARE:.0f} % of the count, whichever is more) above the highest of the first; no non-2xx answer or socket error in any interval; once drained, one email "
    f"per user and nothing left in the outbox or any of the run's queues (work, delay, dead). "
    + ("RSS, p99 and the backlog decide the exit status (a run of 10 minutes or more)."
       if decides else "RSS, p99 and the backlog are printed only (a run under 10 minutes is dominated by its warm-up); "
       "fds, connections, errors and delivery decide.")
)
out.append("")

failed = False
verdicts = []


def verdict(name, ok, detail, decisive):
    global failed
    if not ok and decisive:
        failed = True
    word = "flat" if ok else "GROWS"
    if not decisive and not ok:
        word += " (not deciding)"
    verdicts.append(f"- {name}: **{word}** — {detail}")


def mean(rs, key):
    return statistics.mean(r[key] for r in rs)


for proc in ("ingest", "dispatcher", "standin"):
    a, b = mean(first, f"rss_{proc}"), mean(last, f"rss_{proc}")
    ratio = b / a if a else float("inf")
    label = "stand-in" if proc == "standin" else proc
    verdict(f"RSS {label}", ratio <= RSS_RATIO,
            f"{mb(a)} → {mb(b)} MB, {ratio:.3f}× (≤ {RSS_RATIO:.2f}×)", decides)

a = statistics.median(r["p99"] for r in first)
b = statistics.median(r["p99"] for r in last)
ratio = b / a if a else float("inf")
verdict("p99 latency", ratio <= P99_RATIO, f"{ms(a)} → {ms(b)} ms, {ratio:.2f}× (≤ {P99_RATIO}×)", decides)

a = max(r["queue"] for r in first)
b = max(r["queue"] for r in last)
allowed = BACKLOG_SHARE * statistics.mean(r["target"] for r in steady) * interval
verdict("work queue backlog", b - a <= allowed,
        f"deepest {int(a)} → {int(b)} jobs ({int(b - a):+d}, at most +{int(allowed)})", decides)

for key, name in (("fd_ingest", "open fds ingest"), ("fd_dispatcher", "open fds dispatcher"),
                  ("tcp_ingest", "TCP connections ingest"), ("tcp_dispatcher", "TCP connections dispatcher"),
                  ("pg", "PostgreSQL backends")):
    a = max(r[key] for r in first)
    b = max(r[key] for r in last)
    lo, hi = min(r[key] for r in steady), max(r[key] for r in steady)
    slack = max(COUNT_SLACK, int(a * COUNT_SLACK_SHARE))
    verdict(name, b - a <= slack,
            f"highest {int(a)} → {int(b)} ({int(b - a):+d}, at most +{slack}); {int(lo)}–{int(hi)} after the warm-up",
            True)

bad = sum(int(r["non2xx"] + r["sockerr"]) for r in rows)
requests = sum(int(r["requests"]) for r in rows)
verdicts.append(f"- errors: **{'none' if bad == 0 else 'FAIL'}** — {bad} non-2xx answers or socket errors "
                f"in {requests} requests")
failed |= bad != 0

delivered = users == sent and outbox == 0 and queue == 0 and retry == 0 and dead == 0
verdicts.append(f"- delivery: **{'complete' if delivered else 'FAIL'}** — {users} users, {sent} emails at the "
                f"stand-in; once drained {outbox} in the outbox, {queue} in the work queue, {retry} waiting in "
                f"delay queues, {dead} dead-lettered")
failed |= not delivered

# Informational: how close the pacing came, and whether the dispatcher kept up.
pct = [100 * r["rate"] / r["target"] for r in steady]
verdicts.append(f"- pacing (information): {statistics.mean(pct):.1f} % of the target rate on average after the "
                f"warm-up, lowest interval {min(pct):.1f} %, highest {max(pct):.1f} %")
# Emails per signup accepted between consecutive samples (both over the same wall time, the
# pauses for sampling included): below 1 while the dispatcher falls behind.
sends = [(b["sent"] - a["sent"]) / max(b["requests"] - b["non2xx"], 1) for a, b in zip(rows, rows[1:])]
if sends:
    verdicts.append(f"- sending (information): emails the stand-in took per signup accepted, between consecutive "
                    f"samples: {sends[0]:.2f} at the start, {sends[-1]:.2f} at the end, lowest {min(sends):.2f}, "
                    f"highest {max(sends):.2f} (1.00: the dispatcher keeps up)")
known = [r["others"] for r in rows if r["others"] >= 0]
verdicts.append(f"- the machine (information): {statistics.mean(r['busy'] for r in rows):.0f} % busy on "
                f"average during the intervals; "
                + (f"{statistics.mean(known):.0f} % of the machine went to work outside this run (not its "
                   f"processes, PostgreSQL, RabbitMQ or wrk), at most {int(max(known))} % in one interval"
                   if known else "what went to work outside this run is unknown")
                + (f" ({len(rows) - len(known)} interval(s) unknown: a counted process restarted)"
                   if len(known) < len(rows) else ""))

out.extend(verdicts)
print("\n".join(out))
sys.exit(1 if failed else 0)
