#!/usr/bin/env python3
"""Judges a soak run of scripts/soak.sh from its output directory.

Flatness: over the measured part of the soak (after the warm-up), each figure's mean over the
last third of the samples may exceed its mean over the first third by at most the figure's
tolerance (an absolute floor plus a fraction of the first third's mean, see TOLERANCE); the
least-squares slope per minute is reported next to it. Integrity: the perf reports of the
steady run and of every churn run must show no silent drop, missing or unexpected ack,
duplicate, reordering, loss, unsent send, failed ack, error frame or failed connection, and
where perf kept its exact ledger (--ledger), no violation and no unexplained ack.
Return to idle: once the clients are gone, connections, send queues and pending sends must be
zero and Redis must hold as many keys as before the first client. Shutdown: every server exits
0 after SIGTERM, without a panic in its log.

Writes summary.txt (printed too), summary.json and soak.svg into the directory; exits 1 if any
check fails.
"""

import argparse
import csv
import glob
import json
import os
import sys

# Figure -> (absolute floor, fraction of the first third's mean): the growth allowed from the
# first third to the last. Memory must stay within a few MiB; counts of connections and files
# vary with the churn (up to SOAK_CHURN_CLIENTS / 2 per gateway at a given instant), so they
# get a floor of a fraction of the churn; queues are small and bursty, so they may vary by half
# their level plus a fixed amount, but not keep growing.
def tolerance(col, churn):
    if col.endswith("_rss_kb"):
        return (4096, 0.05)
    if col == "redis_used_memory":
        return (1 << 20, 0.05)
    if col.endswith("_fds") or col.endswith("_connections") or col.endswith("_client_queues"):
        return (max(20, churn // 4), 0.05)
    if col in ("router_gateway_links", "router_link_queues", "redis_clients"):
        return (2, 0.0)
    if col == "redis_keys":
        return (max(20, churn // 2), 0.05)
    if col.endswith("_bytes"):
        return (64 << 10, 0.5)
    # pending sends, forwards pending, Redis requests in flight
    return (100, 0.5)


UNITS = {"_rss_kb": "kB", "_bytes": "B", "redis_used_memory": "B"}


def unit(col):
    for k, u in UNITS.items():
        if col.endswith(k):
            return u
    return ""


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def slope_per_min(ts, ys):
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = mean(ts), mean(ys)
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return 0.0
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var * 60.0


def num(v):
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        return None


def fmt(v, col=""):
    if v is None or v != v:
        return "-"
    if col.endswith("_rss_kb"):
        return "%.1f MiB" % (v / 1024)
    if col == "redis_used_memory":
        return "%.1f MiB" % (v / (1 << 20))
    if abs(v) >= 100 or v == int(v):
        return "%.0f" % v
    return "%.1f" % v


INTEGRITY_FAIL = [
    ("messages", "silent_drops"),
    ("messages", "missing_acks"),
    ("messages", "unexpected_acks"),
    ("messages", "duplicates"),
    ("messages", "order_violations"),
    ("messages", "lost"),
    ("messages", "silent_receivers"),
    ("messages", "unsent"),
    ("messages", "failed"),
    ("connections", "failed"),
    ("connections", "dropped"),
    ("errors", "error_frames"),
    ("errors", "bad_frames"),
]
INTEGRITY_SUM = [("messages", "scheduled"), ("messages", "sent"), ("messages", "acked"),
                 ("messages", "delivered"), ("messages", "offline"), ("messages", "received"),
                 ("connections", "connected")] + INTEGRITY_FAIL


def ledger(reports):
    tot = {f"{a}.{b}": 0 for a, b in INTEGRITY_SUM}
    for r in reports:
        for a, b in INTEGRITY_SUM:
            tot[f"{a}.{b}"] += int(r[a][b])
    return tot


def svg_plot(path, rows, t0, cols_rss, cols_fds, title):
    """Two panels (RSS MiB, open files) over minutes since the soak started."""
    W, H, L, R, T, B, GAP = 900, 560, 70, 150, 40, 40, 50
    ph = (H - T - B - GAP) / 2
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    pts = [(num(r["t_s"]), r) for r in rows if num(r["t_s"]) is not None]
    xs = [(t - t0) / 60 for t, _ in pts]
    if not xs:
        return
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for p, (cols, label, scale) in enumerate([(cols_rss, "RSS (MiB)", 1 / 1024),
                                              (cols_fds, "open files", 1)]):
        top = T + p * (ph + GAP)
        vals = [num(r[c]) * scale for _, r in pts for c in cols if num(r[c]) is not None]
        if not vals:
            continue
        y0, y1 = 0, max(vals) * 1.1 or 1
        sx = lambda x: L + (x - x0) / (x1 - x0) * (W - L - R)
        sy = lambda y: top + ph - (y - y0) / (y1 - y0) * ph
        out.append(f'<rect x="{L}" y="{top}" width="{W-L-R}" height="{ph}" fill="none" stroke="#888"/>')
        out.append(f'<text x="15" y="{top + ph/2}" transform="rotate(-90 15 {top + ph/2})" '
                   f'text-anchor="middle">{label}</text>')
        for k in range(5):
            yv = y0 + (y1 - y0) * k / 4
            out.append(f'<text x="{L-5}" y="{sy(yv)+4:.1f}" text-anchor="end">{yv:.0f}</text>')
            out.append(f'<line x1="{L}" x2="{W-R}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" stroke="#eee"/>')
        for k in range(6):
            xv = x0 + (x1 - x0) * k / 5
            out.append(f'<text x="{sx(xv):.1f}" y="{top+ph+15}" text-anchor="middle">{xv:.1f}</text>')
        for i, c in enumerate(cols):
            line = " ".join(f"{sx(x):.1f},{sy(num(r[c])*scale):.1f}"
                            for x, (_, r) in zip(xs, pts) if num(r[c]) is not None)
            out.append(f'<polyline fill="none" stroke="{colors[i % 4]}" stroke-width="1.5" points="{line}"/>')
            out.append(f'<text x="{W-R+10}" y="{top+15+15*i}" fill="{colors[i % 4]}">{c.split("_")[0]}</text>')
    out.append(f'<text x="{L + (W-L-R)/2}" y="{H-5}" text-anchor="middle">minutes since the soak load started</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--soak-start", type=float, required=True)
    ap.add_argument("--warmup", type=float, required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--max-rate", type=float, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--steady-rate", type=float, required=True)
    ap.add_argument("--steady-exit", type=int, default=0)
    ap.add_argument("--churn-clients", type=int, default=400)
    a = ap.parse_args()
    out = a.out
    rows = list(csv.DictReader(open(os.path.join(out, "samples.csv"))))
    cols = [c for c in rows[0].keys() if c not in ("t_s", "phase", "load1")]
    soak_rows = [r for r in rows if r["phase"] == "soak"]
    # From the end of the warm-up to the end of the steady run's schedule (which starts once
    # its clients are up, so slightly after soak_start): its grace period and disconnects are
    # not part of the steady state.
    meas = [r for r in soak_rows
            if a.soak_start + a.warmup <= num(r["t_s"]) <= a.soak_start + a.duration]
    idle = [r for r in rows if r["phase"] == "idle"]
    after = [r for r in rows if r["phase"] == "after"]
    lines, failures, figures = [], [], {}

    lines.append(f"soak in {out}")
    lines.append(f"rate: maximum sustained {a.max_rate:.0f} msg/s; soak at {a.rate:.0f} msg/s "
                 f"(steady {a.steady_rate:.0f} + churn {a.rate - a.steady_rate:.0f})")
    loads = [num(r["load1"]) for r in soak_rows if num(r["load1"]) is not None]
    if loads:
        lines.append(f"load average (1 min) during the soak: min {min(loads):.2f}, "
                     f"mean {mean(loads):.2f}, max {max(loads):.2f}")
    if len(meas) < 6:
        failures.append(f"only {len(meas)} samples after the warm-up: too short to judge")
    else:
        t_first, t_last = num(meas[0]["t_s"]), num(meas[-1]["t_s"])
        lines.append(f"measured: {len(meas)} samples from t={t_first:.0f} s to {t_last:.0f} s "
                     f"(soak started at t={a.soak_start:.0f} s, warm-up {a.warmup:.0f} s)")
        n3 = len(meas) // 3
        first, last = meas[:n3], meas[-n3:]
        lines.append("")
        lines.append(f"{'figure':32} {'start':>11} {'end':>11} {'1st third':>11} {'last third':>11} "
                     f"{'slope/min':>11} {'allowed':>11}  verdict")
        for c in cols:
            pts = [(num(r["t_s"]), num(r[c])) for r in meas]
            missing = [t for t, v in pts if v is None]
            if missing:
                failures.append(f"{c}: no value at t={missing[0]:.0f} s (process gone or "
                                f"metrics endpoint silent)")
                continue
            ts, ys = zip(*pts)
            m1 = mean([num(r[c]) for r in first])
            m3 = mean([num(r[c]) for r in last])
            sl = slope_per_min(ts, ys)
            floor, frac = tolerance(c, a.churn_clients)
            allowed = floor + frac * abs(m1)
            grew = m3 - m1 > allowed
            verdict = "GROWS" if grew else "flat"
            if grew:
                failures.append(f"{c} grows: first third {fmt(m1, c)}, last third {fmt(m3, c)} "
                                f"(allowed +{fmt(allowed, c)}), slope {sl:.1f} {unit(c)}/min")
            figures[c] = {"start": ys[0], "end": ys[-1], "first_third_mean": m1,
                          "last_third_mean": m3, "slope_per_min": sl, "allowed_growth": allowed,
                          "grows": grew}
            lines.append(f"{c:32} {fmt(ys[0], c):>11} {fmt(ys[-1], c):>11} {fmt(m1, c):>11} "
                         f"{fmt(m3, c):>11} {sl:>11.1f} {fmt(allowed, c):>11}  {verdict}")

    # Back to idle once every client is gone.
    lines.append("")
    if idle and after:
        # The first sample, before any client; the last, after they all left.
        b, e = idle[0], after[-1]
        checks = []
        for g in ("gw0", "gw1"):
            for k in ("connections", "client_queues", "pending_sends", "client_queue_bytes"):
                checks.append((f"{g}_{k}", 0))
        checks += [("router_forwards_pending", 0), ("redis_keys", num(b["redis_keys"]))]
        lines.append(f"after the load (t={num(e['t_s']):.0f} s) against idle before it "
                     f"(t={num(b['t_s']):.0f} s):")
        for c, want in checks:
            got = num(e[c])
            ok = got is not None and want is not None and got <= want
            lines.append(f"  {c:30} {fmt(got, c):>10}  (want {fmt(want, c)})  {'ok' if ok else 'NOT BACK'}")
            if not ok:
                failures.append(f"{c} is {fmt(got, c)} after the load, not {fmt(want, c)}")
        for c in [c for c in cols if c.endswith("_rss_kb") or c.endswith("_fds")]:
            lines.append(f"  {c:30} idle {fmt(num(b[c]), c):>10} -> after {fmt(num(e[c]), c):>10}")
    else:
        failures.append("no idle or after-load sample")

    # The harness' own ledger.
    lines.append("")
    reports = {}
    steady_path = os.path.join(out, "soak.json")
    if os.path.exists(steady_path):
        reports["steady"] = [json.load(open(steady_path))]
    else:
        failures.append("the steady run wrote no report")
    churn_files = sorted(glob.glob(os.path.join(out, "churn", "*.json")))
    churn_logs = sorted(glob.glob(os.path.join(out, "churn", "*.log")))
    reports["churn"] = [json.load(open(p)) for p in churn_files]
    if len(churn_files) < len(churn_logs) - 1:
        # The last churn run may have been cut short by the end of the soak.
        failures.append(f"{len(churn_logs) - len(churn_files)} churn runs wrote no report")
    if a.steady_exit:
        failures.append(f"the steady perf run exited {a.steady_exit}")
    figures["ledger"] = {}
    for name, rs in reports.items():
        if not rs:
            continue
        t = ledger(rs)
        figures["ledger"][name] = t
        conns = t["connections.connected"]
        lines.append(f"{name} ({len(rs)} run{'s' if len(rs) > 1 else ''}, {conns} connections): "
                     f"scheduled {t['messages.scheduled']} sent {t['messages.sent']} acked "
                     f"{t['messages.acked']} (delivered {t['messages.delivered']}, offline "
                     f"{t['messages.offline']}, failed {t['messages.failed']}) received "
                     f"{t['messages.received']}")
        bad = {k: v for k, v in t.items() if v and (k.split(".")[0], k.split(".")[1]) in INTEGRITY_FAIL}
        # perf's exact ledger (--ledger): every send and receipt checked by message id.
        books = [r["ledger"] for r in rs if r.get("ledger")]
        if books:
            viol = {}
            for b in books:
                for k, v in b["violations"].items():
                    viol[k] = viol.get(k, 0) + v
            unexplained = sum(b["unexplained"] for b in books)
            figures["ledger"][name + "_books"] = {"runs": len(books), "violations": viol,
                                                  "unexplained": unexplained}
            lines.append(f"  exact ledger of {len(books)} run(s): "
                         f"{sum(b['sends'] for b in books)} sends, "
                         f"{sum(b['receipts'] for b in books)} receipts checked by id; "
                         f"violations {viol or 0}, unexplained acks {unexplained}")
            if viol or unexplained:
                bad["ledger"] = {"violations": viol, "unexplained": unexplained}
        lines.append("  " + (", ".join(f"{k} {v}" for k, v in bad.items()) if bad else
                             "silent drops 0, missing acks 0, duplicates 0, lost 0, reordered 0, "
                             "failed 0, connection failures 0"))
        if bad:
            failures.append(f"{name} runs: {bad}")
        if t["messages.offline"]:
            # Every recipient stays connected for its run, so these are wrong answers, but
            # answers: a gateway whose liveness record lapsed (a stall past its TTL) makes the
            # router judge its sessions dead. Reported, not judged.
            lines.append(f"  NOTE: {t['messages.offline']} sends acked offline although every "
                         f"recipient was connected (see the gateways' 'liveness record was "
                         f"missing' warnings)")
    if "steady" in reports:
        r = reports["steady"][0]
        lat = r["latency_us"]
        lines.append(f"steady: sent {r['messages']['send_rate']:.0f}/s over {r['window_s']:.0f} s; "
                     f"delivery p50/p99/p99.9 {lat['delivery']['p50']/1000:.1f}/"
                     f"{lat['delivery']['p99']/1000:.1f}/{lat['delivery']['p999']/1000:.1f} ms, "
                     f"max {lat['delivery']['max']/1000:.0f} ms")
    errs = os.path.join(out, "churn", "errors.txt")
    if os.path.exists(errs):
        failures.append("churn: " + open(errs).read().strip().replace("\n", "; "))

    stop = os.path.join(out, "stop.txt")
    if os.path.exists(stop):
        text = open(stop).read().strip().splitlines()
        lines.append("")
        lines.extend(text)
        rcs = text[0].split(":")[-1].split() if text else []
        if any(rc != "0" for rc in rcs):
            failures.append(f"a server did not exit 0 after SIGTERM: {rcs}")
        if len(text) > 1:
            failures.append("panic in " + ", ".join(text[1:]))

    svg_plot(os.path.join(out, "soak.svg"), [r for r in rows if r["phase"] in ("soak", "after")],
             a.soak_start, ["gw0_rss_kb", "gw1_rss_kb", "router_rss_kb", "redis_rss_kb"],
             ["gw0_fds", "gw1_fds", "router_fds", "redis_fds"],
             f"soak at {a.rate:.0f} msg/s with churn: RSS and open files")

    lines.append("")
    lines.append("RESULT: " + ("FAIL" if failures else "PASS: flat after the warm-up, nothing lost"))
    lines.extend("  - " + f for f in failures)
    text = "\n".join(lines) + "\n"
    open(os.path.join(out, "summary.txt"), "w").write(text)
    json.dump({"max_rate": a.max_rate, "rate": a.rate, "figures": figures, "failures": failures},
              open(os.path.join(out, "summary.json"), "w"), indent=2)
    sys.stdout.write(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
