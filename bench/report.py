"""BENCHMARKS.md and the console summary, from the runs bench.py recorded.

Re-render from a finished run (e.g. after editing bench/observations.md):
    python3 bench/report.py bench/results/latest/summary.json > BENCHMARKS.md
"""

import difflib
import json
import os
import statistics
import sys

PEERS = ["nginx", "haproxy"]
SERVERS = ["certgate"] + PEERS
LABEL = {"certgate": "certgate", "nginx": "nginx", "haproxy": "HAProxy"}


def rows(data, case, variant=None, server=None):
    """The runs of a case; of a stream, only the transfers that completed."""
    return [r for r in data["runs"] if r.get("case") == case
            and (variant is None or r.get("variant") == variant)
            and (server is None or r.get("server") == server)
            and (not str(r.get("variant")).startswith("stream") or r.get("complete"))]


def incomplete(data, variant, server):
    return [r for r in data["runs"] if r.get("case") == "4" and r.get("variant") == variant
            and r.get("server") == server and not r.get("complete")]


def med(data, case, variant, server, key):
    vals = [r[key] for r in rows(data, case, variant, server) if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def each(data, case, variant, server, key, fmt):
    rs = sorted(rows(data, case, variant, server), key=lambda r: r["round"])
    return " / ".join(fmt % r[key] if r.get(key) is not None else "–" for r in rs)


def f(v, fmt="%.0f"):
    return "–" if v is None else fmt % v


def ms(v):
    """µs as µs or ms, for latencies."""
    if v is None:
        return "–"
    return "%.0f µs" % v if v < 1000 else "%.2f ms" % (v / 1000) if v < 100000 else \
        "%.0f ms" % (v / 1000)


def ratio(data, case, variant, peer, key="cpu_us_per_op"):
    """certgate's operations per server-CPU-second over the peer's (peer µs/op over
    certgate's): >= 1.0 means certgate spends less."""
    cg, p = med(data, case, variant, "certgate", key), med(data, case, variant, peer, key)
    return p / cg if cg and p else None


def best_ratio(data, case, variant, key="cpu_us_per_op"):
    rs = [ratio(data, case, variant, p, key) for p in PEERS]
    rs = [r for r in rs if r is not None]
    return min(rs) if rs else None


def best_peer(data, case, variant, key="cpu_us_per_op"):
    vals = [(med(data, case, variant, p, key), p) for p in PEERS]
    vals = [v for v in vals if v[0] is not None]
    return min(vals)[1] if vals else None


def overlap_note(data, case, variant, key="cpu_us_per_op"):
    """A sentence when certgate's per-round values and the better peer's overlap."""
    peer = best_peer(data, case, variant, key)
    a = [r[key] for r in rows(data, case, variant, "certgate") if r.get(key) is not None]
    b = [r[key] for r in rows(data, case, variant, peer) if r.get(key) is not None]
    if len(a) < 2 or len(b) < 2 or max(a) < min(b) or max(b) < min(a):
        return ""
    stream = case == "4" and variant.startswith("stream")
    scale, unit, fmt = (1000, "ms per GiB", "%.0f") if stream else (1, "µs per operation",
                                                                    "%.1f")
    rng = fmt + "–" + fmt
    return ("per-round values overlap (certgate %s, %s %s %s): a difference within this "
            "machine's noise" % (rng % (min(a) / scale, max(a) / scale), LABEL[peer],
                                 rng % (min(b) / scale, max(b) / scale), unit))


def table(head, body):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(out)


def variants(data, case):
    seen = []
    for r in data["runs"]:
        if r.get("case") == case and r["variant"] not in seen:
            seen.append(r["variant"])
    return seen


def ratio_cells(data, case, variant, server, key="cpu_us_per_op"):
    if server == "certgate":
        return "—"
    return f(ratio(data, case, variant, server, key), "%.2f")


def others(data, case, variant, server):
    v = med(data, case, variant, server, "others_cpu0")
    return f(None if v is None else 100 * v, "%.0f %%")


# ----- per case -----

def variant_table(data, case, v, heads, cells):
    """One table of a case's variant: per server its rate, CPU per operation (median and per
    round), CPU 0 use, the columns of cells (cells(None) gives their headings), latencies,
    errors and the ratio."""
    rate, cpu, per_round, fmt = heads
    body = []
    for s in SERVERS:
        if not rows(data, case, v, s):
            continue
        body.append([
            LABEL[s], f(med(data, case, v, s, "ops_per_s")),
            "**%s**" % f(med(data, case, v, s, "cpu_us_per_op"), fmt),
            each(data, case, v, s, "cpu_us_per_op", fmt),
            f(med(data, case, v, s, "server_cpu_util"), "%.2f")] + cells(s) + [
            ms(med(data, case, v, s, "p50_us")), ms(med(data, case, v, s, "p99_us")),
            f(med(data, case, v, s, "errors")), others(data, case, v, s),
            ratio_cells(data, case, v, s)])
    return "*%s*\n\n" % v + table(
        ["server", rate, cpu, per_round, "CPU 0 busy (server)"] + cells(None)
        + ["p50", "p99", "errors", "others on CPU 0", "certgate's ratio"], body)


def case_requests(data, case, unit):
    heads = (unit + "/s", "server CPU µs/" + unit, "µs/%s per round" % unit, "%.2f")
    return "\n\n".join(variant_table(data, case, v, heads, lambda s: [])
                       for v in variants(data, case) if not v.startswith("stream"))


def case_handshakes(data, case):
    heads = ("handshakes/s", "server CPU µs/handshake", "µs per round", "%.1f")

    def resumption(v):
        def cells(s):
            if s is None:
                return ["resumed (client / header)", "tickets received per handshake"]
            return ["%s / %s" % (f(med(data, case, v, s, "resumed_fraction"), "%.3f"),
                                 f(med(data, case, v, s, "hdr_resumed_fraction"), "%.3f")),
                    f(med(data, case, v, s, "tickets_per_handshake"), "%.2f")]
        return cells
    return "\n\n".join(variant_table(data, case, v, heads, resumption(v))
                       for v in variants(data, case))


def case_stream(data):
    out = []
    for v in variants(data, "4"):
        if not v.startswith("stream"):
            continue
        body = []
        for s in SERVERS:
            bad = incomplete(data, v, s)
            body.append([LABEL[s], f(med(data, "4", v, s, "mib_per_s")),
                         "**%s**" % f(none_div(med(data, "4", v, s, "cpu_us_per_op"), 1000)),
                         each(data, "4", v, s, "server_cpu_s", "%.2f s"),
                         "%d of %d" % (len(rows(data, "4", v, s)),
                                       len(rows(data, "4", v, s)) + len(bad)),
                         "; ".join("%.0f MiB arrived (%s)" % (
                             r["lg"]["bytes_body"] / 2**20,
                             ", ".join("%s %d" % kv for kv in r["error_kinds"].items()))
                             for r in bad) or "–",
                         others(data, "4", v, s), ratio_cells(data, "4", v, s)])
        out.append("*%s, one connection* (medians over the transfers that completed)\n\n" % v
                   + table(["server", "MiB/s", "server CPU ms/GiB", "server CPU per complete "
                            "transfer", "complete transfers", "incomplete transfers",
                            "others on CPU 0", "certgate's ratio"], body))
    return "\n\n".join(out)


def none_div(v, d):
    return None if v is None else v / d


def case_memory(data):
    body = []
    for s in SERVERS:
        rs = rows(data, "5", None, s)
        if not rs:
            continue
        body.append([
            LABEL[s], f(none_div(med(data, "5", None, s, "rss_idle_kb"), 1024), "%.1f"),
            f(none_div(med(data, "5", None, s, "rss_open_kb"), 1024), "%.1f"),
            "**%s**" % f(med(data, "5", None, s, "bytes_per_conn")),
            each(data, "5", None, s, "bytes_per_conn", "%.0f"),
            "%s / %s" % (f(med(data, "5", None, s, "held")), f(med(data, "5", None, s,
                                                                    "still_open"))),
            f(med(data, "5", None, s, "fds_open")),
            "—" if s == "certgate" else f(ratio(data, "5", None, s, "bytes_per_conn"), "%.2f")])
    return table(["server", "RSS idle MiB", "RSS with the connections open MiB",
                  "bytes per connection", "per round", "connections held / still open at the "
                  "end", "server fds open", "certgate's ratio"], body)


def case_switch(data):
    body = []
    for s in SERVERS:
        if not rows(data, "6", "switching", s):
            continue
        base, sw = med(data, "6", "no switch", s, "p99_us"), med(data, "6", "switching", s,
                                                                  "p99_us")
        kinds = {}
        for r in rows(data, "6", "switching", s):
            for k, v in r.get("error_kinds", {}).items():
                kinds[k] = kinds.get(k, 0) + v
        failed = sum(r["errors"] for r in rows(data, "6", "switching", s))
        body.append([
            LABEL[s], f(med(data, "6", "no switch", s, "ops_per_s")), ms(base),
            f(med(data, "6", "switching", s, "ops_per_s")), ms(sw),
            f(sw / base if sw and base else None, "%.2f"),
            "**%d**%s" % (failed, " (%s)" % ", ".join("%s %d" % kv for kv in kinds.items())
                          if kinds else ""),
            each(data, "6", "switching", s, "switches_ok", "%d"),
            each(data, "6", "switching", s, "lg_cert_changes", "%d"),
            "%s / %s" % (f(med(data, "6", "switching", s, "switch_ms_median"), "%.1f"),
                         f(med(data, "6", "switching", s, "switch_ms_max"), "%.0f"))])
    return table(["server", "req/s without switching", "p99 without", "req/s while switching",
                  "p99 while switching", "p99 ratio", "failed requests (all rounds)",
                  "switches that succeeded, per round", "certificate changes seen by new "
                  "connections, per round", "switch time ms (median / max)"], body)


def floors(data):
    out = {}
    for v, key in (("RSA-2048", "rsa"), ("ECDSA P-256", "ec")):
        sign = med(data, "7", "sign " + v, "openssl", "sign_per_s")
        floor = med(data, "7", "handshake " + v, "in-process", "server_us")
        floor_med = med(data, "7", "handshake " + v, "in-process", "server_us_median")
        cg = med(data, "2", v, "certgate", "cpu_us_per_op")
        peers = [med(data, "2", v, p, "cpu_us_per_op") for p in PEERS]
        out[key] = (v, sign, floor, floor_med, cg, peers)
    return out


def case_floor(data):
    body = []
    for v, sign, floor, floor_med, cg, peers in floors(data).values():
        body.append([v, f(sign), f(1e6 / sign if sign else None, "%.1f"),
                     "%s (median %s)" % (f(floor, "%.1f"), f(floor_med, "%.1f")),
                     f(cg, "%.1f"), "**%s**" % f(cg / floor if cg and floor else None, "%.2f"),
                     f(cg / (1e6 / sign) if cg and sign else None, "%.1f")]
                    + [f(p / floor if p and floor else None, "%.2f") for p in peers])
    return table(["key", "openssl speed sign/s (CPU 0)", "µs per sign",
                  "in-process full handshake, server µs (mean)",
                  "certgate µs per full handshake (case 2)", "certgate / in-process floor",
                  "certgate / one sign", "nginx / floor", "HAProxy / floor"], body)


# ----- targets -----

def targets(data):
    out = []

    def add(name, value, ok, note=""):
        out.append((name, value, ok, note))
    cases = data["settings"]["cases"]
    for case, vs in (("1", ["keep-alive"]), ("2", ["RSA-2048", "ECDSA P-256"]),
                     ("3", ["newest ticket", "ticket reused"]), ("4", None)):
        if case not in cases:
            continue
        for v in vs or variants(data, "4"):
            b = best_ratio(data, case, v)
            notes, blocking = [], False
            if case == "3":
                fr = med(data, "3", v, "certgate", "resumed_fraction")
                if fr is not None and fr < 0.95:
                    blocking = True
                    notes.append(
                        "only %.0f %% of certgate's handshakes were resumptions (the peers: "
                        "%s): it is a mix, not a resumed-handshake figure"
                        % (100 * fr, ", ".join("%.0f %%" % (100 * (med(
                            data, "3", v, p, "resumed_fraction") or 0)) for p in PEERS)))
                t = med(data, "3", v, "certgate", "tickets_per_handshake")
                if v == "ticket reused" and t is not None and t < 0.5:
                    notes.append("certgate issues no ticket on a resumed connection (%.2f per "
                                 "handshake), the peers one: part of its lead is work it skips"
                                 % t)
            if case == "4" and v.startswith("stream") and incomplete(data, v, "certgate"):
                blocking = True
                notes.append("%d of certgate's transfers stalled and did not complete"
                             % len(incomplete(data, v, "certgate")))
            ov = overlap_note(data, case, v)
            if ov:
                notes.append(ov)
            add("case %s %s: certgate's CPU per operation ≤ the better peer's (ratio ≥ 1.0)"
                % (case, v), f(b, "%.2f"), b is not None and b >= 1.0 and not blocking,
                "; ".join(notes))
    if "2" in cases and "7" in cases:
        for v, sign, floor, floor_med, cg, _ in floors(data).values():
            r = cg / floor if cg and floor else None
            add("case 2 %s: certgate's µs per full handshake within 15 %% of the in-process "
                "floor" % v, "%s µs vs %s µs: %s" % (f(cg, "%.0f"), f(floor, "%.0f"),
                                                    f(r, "×%.2f")), r is not None and r <= 1.15)
    if "5" in cases:
        cg, ng = med(data, "5", None, "certgate", "bytes_per_conn"), med(data, "5", None,
                                                                          "nginx",
                                                                          "bytes_per_conn")
        complete = all(r.get("complete") for r in rows(data, "5"))
        add("case 5: certgate's memory per idle connection ≤ nginx's", "%s vs %s bytes"
            % (f(cg), f(ng)), cg is not None and ng is not None and cg <= ng and complete,
            "" if complete else "not every run held all its connections")
    if "6" in cases:
        failed = sum(r["errors"] for r in rows(data, "6", "switching", "certgate"))
        base = med(data, "6", "no switch", "certgate", "p99_us")
        sw = med(data, "6", "switching", "certgate", "p99_us")
        add("case 6: certgate, zero failed requests while switching", "%d failed" % failed,
            failed == 0)
        r = sw / base if sw and base else None
        add("case 6: certgate's p99 while switching ≤ 2 × without", "%s vs %s: %s"
            % (ms(sw), ms(base), f(r, "×%.2f")), r is not None and r <= 2.0)
    return out


# ----- perf -----

def perf_summary(text, top=18):
    """perf report --sort dso,symbol --stdio: the share of each shared object, then the
    top symbols (addresses a stripped library does not resolve are summed per object)."""
    import re
    by_dso, syms = {}, {}
    for line in text.splitlines():
        m = re.match(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(\S+)", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(4)
        dso = "kernel" if dso.startswith("[kernel") else dso
        by_dso[dso] = by_dso.get(dso, 0) + pct
        if re.match(r"^0x[0-9a-f]+$", sym):
            sym = "(symbols not resolved)"
        syms[(dso, sym)] = syms.get((dso, sym), 0) + pct
    out = ["by object: " + ", ".join("%s %.1f %%" % kv for kv in sorted(
        by_dso.items(), key=lambda kv: -kv[1]) if kv[1] >= 0.5), "", "top symbols (self):"]
    for (dso, sym), pct in sorted(syms.items(), key=lambda kv: -kv[1])[:top]:
        out.append("  %5.1f %%  %-16s %s" % (pct, dso, sym))
    return "\n".join(out)


# ----- the document -----

def diff(base, other):
    lines = list(difflib.unified_diff(base.splitlines(), other.splitlines(), lineterm="", n=0))
    return "\n".join(l for l in lines[2:] if not l.startswith("@@"))


def configs(data):
    out = []
    base = data["configs"].get("1", {})
    for name, text in base.items():
        out.append("<details><summary>%s (case 1)</summary>\n\n```\n%s```\n</details>"
                   % (name, text))
    for case in ("2", "3", "4", "5", "6"):
        for name, text in data["configs"].get(case, {}).items():
            if name in base:
                d = diff(base[name], text)
                if d.strip():
                    out.append("<details><summary>%s, case %s: lines that differ from case 1"
                               "</summary>\n\n```diff\n%s\n```\n</details>" % (name, case, d))
            elif name not in base:
                out.append("<details><summary>%s (case %s)</summary>\n\n```\n%s```\n</details>"
                           % (name, case, text))
    # the variants of a case (e.g. case 2's two certificates) differ only in file names
    return "\n\n".join(out)


def commands(data, case):
    lines = data["commands"].get(case, [])
    return "```\n" + "\n".join(lines) + "\n```" if lines else ""


def probes(data):
    p = data["probes"].get("1", {})
    if not p:
        return ""
    out = []
    for s in SERVERS:
        if s in p:
            out.append("%s (%s):\n%s" % (LABEL[s], p[s]["tls"], p[s]["head"]))
    return "```\n" + "\n\n".join(out) + "\n```"


def render(data):
    m, st = data["machine"], data["settings"]
    # case 6 keeps the load generator's certificate count under lg; lift it for the table
    for r in data["runs"]:
        if r.get("case") == "6" and "lg" in r:
            r["lg_cert_changes"] = r["lg"]["cert_changes"]
    cases = st["cases"]
    out = []
    out.append("# Benchmarks\n")
    out.append(
        "certgate beside nginx and HAProxy on the same machine, as issue #5 asks. "
        "Everything here is produced by `make bench` (`bench/run.sh`, which starts "
        "`bench/bench.py`); this file is rewritten by each run.%s\n"
        % (" **This run used BENCH_QUICK=1 (short runs): a smoke test, not figures to "
           "quote.**" if m["quick"] else ""))
    out.append("## Machine and run\n")
    out.append(table(["", ""], [
        ["date", m["date"]], ["CPU", "%s, nproc %s (%s)" % (m["cpu"], m["nproc"],
                                                          m["virtualization"])],
        ["kernel", m["kernel"]], ["OpenSSL", m["openssl"]], ["nginx", m["nginx"]],
        ["HAProxy", m["haproxy"]], ["wrk", m["wrk"]],
        ["certgate", "%s, commit %s" % (m["certgate"], m["commit"])],
        ["rounds", "%d, interleaved (certgate, nginx, HAProxy; the order rotates each round)"
         % m["rounds"]],
        ["run length", "%g s per load run" % m["duration_s"]],
        ["command", "`make bench` (or `bench/run.sh` after a build)"]]
        + ([["rendered", "again after the run, from `%s`, by `python3 bench/report.py` "
             "(same figures; report text and notes updated)" % data["rerendered_from"]]]
           if data.get("rerendered_from") else [])))
    out.append("""
## How to read the tables

- **Server CPU per operation** is the primary figure: the server's utime+stime from
  `/proc/PID/stat` (all its threads; for nginx the master and its worker) read before and
  after the run, over the operations completed in it. Lower is better. Requests/s are shown
  beside it, but on 2 cores the load generator saturates CPU 1 first, so rates partly
  measure the client.
- **certgate's ratio** to a peer is certgate's operations per server-CPU-second over the
  peer's (the peer's µs/op over certgate's): **≥ 1.0 means certgate spends less CPU** per
  operation than that peer.
- Every figure is the **median of the rounds**; the per-round values of the primary figure
  are shown beside it, and every run is in `bench/results/<date>/runs.jsonl` (git-ignored).
- Servers run on CPU 0 (`taskset -c 0`), load generators and the case-4 upstream on CPU 1
  (`taskset -c 1`). All loads go to 127.0.0.1 and are bounded in time.
- **Others on CPU 0**: CPU 0 time used by other programs during the run (the machine may
  be shared). Before each run the harness waits up to %d s for both CPUs to be nearly idle
  (%d s when the previous wait was in vain); a run during which others used more than %d %%
  of CPU 0 is repeated once (at most %d repeats per bench; this one made %d). "CPU 0 busy
  (server)" is the server's CPU time over the run's wall time: below 1.0 the server was
  waiting for the client.
- Loopback packet processing that the kernel accounts as softirq time is not in any
  server's utime+stime; it is the same kind of work for all three.
""" % (st["gate_max"], st["gate_busy"], round(100 * st["disturbed"]), st["max_repeats"],
       st["repeats"]))

    out.append("## Targets\n")
    tg = targets(data)
    out.append(table(["target", "measured", "", "note"], [
        [name, value, "met" if ok else "**missed**", note] for name, value, ok, note in tg]))

    if "1" in cases:
        out.append("\n## Case 1: keep-alive HTTPS requests\n")
        out.append(
            "`GET /rest/health` (certgate's own answer; the peers return the same 7-byte "
            "body with similar headers, below) over %d keep-alive connections with wrk "
            "(1 thread), RSA-2048 certificate, TLS 1.3.\n" % st["conc"])
        out.append(case_requests(data, "1", "request"))
        out.append("\nThe three answers (the first response of the probe before the case; "
                   "client TLS parameters in brackets):\n")
        out.append(probes(data))
        out.append("\n" + commands(data, "1"))
    if "2" in cases:
        out.append("\n## Case 2: full TLS handshakes\n")
        out.append(
            "bench/loadgen, %d connection slots, each cycling connect → handshake → "
            "`GET /rest/health` with `Connection: close` → close; one operation is one "
            "cycle. Session cache and tickets are off on all three servers (nginx also "
            "`ssl_conf_command NumTickets 0`). The client offers the newest session it "
            "received (`-r`), so a resumption would show: **resumed** is what the client saw "
            "(`SSL_session_reused`) / what the server said (`X-Session-Reused`), and must "
            "be 0. HAProxy 2.6 cannot switch TLS 1.3 tickets off (`no-tls-tickets` makes "
            "OpenSSL send stateful tickets that, with `tune.ssl.cachesize 0`, can never be "
            "used; haproxy/haproxy#1103): its 2 tickets per handshake are part of its cost.\n"
            % st["conc"])
        out.append(case_handshakes(data, "2"))
        out.append("\n" + commands(data, "2"))
    if "3" in cases:
        out.append("\n## Case 3: resumed handshakes (session tickets)\n")
        out.append(
            "Same cycles with tickets on (session cache off; one ticket per full handshake "
            "on certgate and nginx, OpenSSL's default of two on HAProxy). *newest ticket* "
            "(`-r`): each slot offers the newest ticket it received, as TLS 1.3 clients do — "
            "OpenSSL's client uses a TLS 1.3 ticket only once. *ticket reused* (`-R`): each "
            "slot offers a copy of its first ticket every time, so every handshake after the "
            "first can resume even where the server issues no new ticket.\n")
        out.append(case_handshakes(data, "3"))
        out.append("\n" + commands(data, "3"))
    if "4" in cases:
        out.append("\n## Case 4: proxying to one shared upstream\n")
        out.append(
            "The upstream is nginx over plain HTTP on CPU 1 (with the load generator, apart "
            "from the server under test), serving a 1 KiB file and a %d MiB one. Each "
            "server keeps at most %d idle upstream connections (certgate's default "
            "`max-connections`; nginx `keepalive 32`; HAProxy `pool-max-conn 32`, "
            "`http-reuse always`) and adds X-Forwarded-For/-Proto/-Host. nginx buffers "
            "in memory only (`proxy_buffers 8 32k`, `proxy_max_temp_file_size 0`), as "
            "certgate streams with bounded buffers. Keep-alive requests with wrk (%d "
            "connections); the large transfer with bench/loadgen over one connection (one "
            "operation = one GiB).\n" % (st["big_mib"], 32, st["conc"]))
        out.append(case_requests(data, "4", "request"))
        out.append("\n" + case_stream(data))
        out.append("\n" + commands(data, "4"))
    if "5" in cases:
        out.append("\n## Case 5: memory per idle TLS connection\n")
        out.append(
            "Each round starts each server afresh, sends one request, waits 1 s and reads "
            "VmRSS (nginx: the worker); then bench/loadgen opens %d TLS connections (at most "
            "64 handshaking at once), makes one request on each and keeps them all open and "
            "idle; 2 s later VmRSS is read again. Bytes per connection = (RSS with them open "
            "− RSS idle) / connections. nginx preallocates its `worker_connections` (9000) "
            "connection structures at start, so part of its per-connection memory is in its "
            "idle RSS.\n" % st["hold"])
        out.append(case_memory(data))
        out.append("\n" + commands(data, "5"))
    if "6" in cases:
        out.append("\n## Case 6: certificate switch under load\n")
        out.append(
            "bench/loadgen keeps %d keep-alive connections busy; each makes a new connection "
            "(a full handshake, which meets the certificate then in force) after %d requests. "
            "One run without switching, then one in which the certificate is switched %d "
            "times between two RSA-2048 certificates, evenly over about %g s. Failed "
            "requests are the load generator's errors: connect, handshake, read/write, a "
            "keep-alive connection closed before its answer (`keepalive_closed`), a status "
            "other than 2xx. *Certificate changes seen* counts how often a new connection "
            "got a different certificate from the one before (proof that the switches took "
            "effect).\n" % (st["switch_conc"], st["switch_reqs"], st["switches"],
                            m["duration_s"] - 1))
        sw = data["extra"].get("6", {}).get("switch", {})
        out.append("\n".join("- %s: %s" % (LABEL[s], sw[s]) for s in SERVERS if s in sw) + "\n")
        out.append(case_switch(data))
        out.append("\n" + commands(data, "6"))
    if "7" in cases:
        out.append("\n## Case 7: the floors\n")
        out.append(
            "`openssl speed` on CPU 0 gives the signatures per second that bound a full "
            "handshake. bench/hsfloor runs full handshakes in one process between a server "
            "and a client SSL object over a memory BIO pair (no socket, no HTTP), the server "
            "context built as certgate builds its own, and times only the server side (thread "
            "CPU clock around SSL_new, each SSL_do_handshake and SSL_free): the least any "
            "server on this OpenSSL can spend on a full handshake. The mean is the figure "
            "comparable to case 2 (which is total CPU over handshakes).\n")
        out.append(case_floor(data))
        out.append("\n" + commands(data, "7"))
    perf = data["extra"].get("perf")
    if perf:
        out.append("\n## Where certgate's CPU goes\n")
        out.append("`perf record -g` on the certgate process during a keep-alive and a "
                   "full-handshake load (after the measured runs; the profile is not part of "
                   "any figure above). Self time by shared object and by symbol; Debian's "
                   "libcrypto is stripped, so its internal functions show as unresolved:\n")
        for label, p in perf.items():
            out.append("*%s* — `%s`\n\n```\n%s\n```" % (label, p["cmd"], p["top"]))
    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "observations.md")
    if os.path.exists(notes):
        out.append("\n## Observations\n")
        out.append("Written by hand from investigations beside the runs (not produced by "
                   "the harness; bench/observations.md).\n")
        with open(notes) as fh:
            out.append(fh.read().strip())
    out.append("\n## Configurations\n")
    out.append("Generated by bench/servers.py for each case (ports and folders are those "
               "of this run).\n")
    out.append(configs(data))
    return "\n".join(out) + "\n"


def console(data):
    out = ["", "Targets:"]
    for name, value, ok, note in targets(data):
        out.append("  [%s] %s: %s%s" % ("met" if ok else "MISSED", name, value,
                                         " (%s)" % note if note else ""))
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        d = json.load(fh)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    d["rerendered_from"] = os.path.relpath(os.path.realpath(sys.argv[1]), root)
    sys.stdout.write(render(d))
