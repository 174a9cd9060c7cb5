#!/usr/bin/env python3
"""Summarise bench/run.sh's results.tsv as Markdown tables.

Each figure is the median over rounds; each ratio is the median of the per-round ratios (both
sides measured in the same round), which is steadier on a shared machine than a ratio of medians.
Usage: summarize.py results.tsv
"""
import statistics, sys
from collections import defaultdict

TARGETS = ["direct", "haproxy", "nginx", "tether", "before"]


def num(s):
    try:
        return float(s)
    except ValueError:
        return None


rows, notes = [], []
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    if f[0] == "#":
        notes.append(f"{f[1]}: {f[2]}")
        continue
    run, fig, target, conns, rps, p50, p99, cpu, bad = f
    rows.append(dict(run=int(run), fig=fig, target=target, conns=conns, rps=num(rps), p50=num(p50),
                     p99=num(p99), cpu=num(cpu), bad=int(float(bad))))

# data[(fig, conns)][target][run] = row
data = defaultdict(lambda: defaultdict(dict))
for r in rows:
    data[(r["fig"], r["conns"])][r["target"]][r["run"]] = r


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def ratio(group, target, other, key):
    """Median over rounds of target/other for `key`."""
    rs = []
    for run, row in group.get(target, {}).items():
        o = group.get(other, {}).get(run)
        if o and row[key] is not None and o[key]:
            rs.append(row[key] / o[key])
    return med(rs)


def http_table(fig, title):
    keys = sorted((k for k in data if k[0] == fig), key=lambda k: int(k[1]))
    if not keys:
        return
    print(f"\n### {title}\n")
    print("| conns | target | rps | p50 us | p99 us | proxy CPU us/req | rps / direct | rps / HAProxy | rps / nginx | CPU / HAProxy | CPU / nginx | non-2xx |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in keys:
        g = data[key]
        for t in TARGETS:
            if t not in g:
                continue
            runs = g[t].values()
            cells = [key[1], t, fmt(med(r["rps"] for r in runs), 0), fmt(med(r["p50"] for r in runs)),
                     fmt(med(r["p99"] for r in runs)), fmt(med(r["cpu"] for r in runs), 2)]
            cells += [fmt(ratio(g, t, o, "rps"), 2) if t != o else "-" for o in ("direct", "haproxy", "nginx")]
            cells += [fmt(ratio(g, t, o, "cpu"), 2) if t not in ("direct", o) else "-" for o in ("haproxy", "nginx")]
            cells.append(str(sum(r["bad"] for r in runs)))
            print("| " + " | ".join(cells) + " |")


rounds = len({r["run"] for r in rows})
print(f"{rounds} round(s); medians over rounds. " + "; ".join(notes))
http_table("sticky", "Sticky tools/call POSTs inside one session (wrk, 1 thread)")
http_table("modern", "2026-07-28 tools/call POSTs routed by Mcp-Name, no session (wrk, 1 thread; Tether validating the headers, HAProxy by an ACL)")
http_table("initialize", "New sessions: initialize through the proxy (wrk, 1 thread)")

mem = data.get(("sse_mem", next((k[1] for k in data if k[0] == "sse_mem"), "")), {})
lat = data.get(("sse_lat", "20"), {})
if mem or lat:
    print("\n### Legacy SSE: held streams and events\n")
    print("| target | RSS KiB per held stream | / HAProxy | / nginx | event latency p50 us | p99 us | added p50 us (vs direct) |")
    print("|---|---|---|---|---|---|---|")
    for t in TARGETS:
        m = med(r["cpu"] for r in mem.get(t, {}).values())  # run.sh keeps KiB/stream in this column
        l50 = med(r["p50"] for r in lat.get(t, {}).values())
        l99 = med(r["p99"] for r in lat.get(t, {}).values())
        added = []
        for run, r in lat.get(t, {}).items():
            d = lat.get("direct", {}).get(run)
            if d and r["p50"] is not None and d["p50"] is not None:
                added.append(r["p50"] - d["p50"])
        cells = [t, fmt(m, 2),
                 fmt(ratio(mem, t, "haproxy", "cpu"), 2) if t in mem and t != "haproxy" else "-",
                 fmt(ratio(mem, t, "nginx", "cpu"), 2) if t in mem and t != "nginx" else "-",
                 fmt(l50), fmt(l99), fmt(med(added)) if t != "direct" else "-"]
        print("| " + " | ".join(cells) + " |")
