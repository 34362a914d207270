"""make bench: certgate beside nginx and HAProxy (issue #5). Started by bench/run.sh.

Every case runs against the three servers in turn, round after round (the order rotates
each round), and every figure in the report is a median over the rounds. The servers run
on CPU 0, the load generators (and the case-4 upstream) on CPU 1, and every load goes to
127.0.0.1 for a bounded time. The primary figure of a case is the server's CPU per
operation: utime+stime from /proc/PID/stat (all threads; for nginx master and workers)
over the run, divided by the operations completed.

Environment: BENCH_QUICK=1 (short runs), BENCH_ROUNDS (3), BENCH_DURATION (seconds per
run: 10, quick 3), BENCH_CASES (e.g. "1,2,7"), BENCH_PERF=0 (no perf profile),
BENCH_NO_WRITE=1 (do not rewrite BENCHMARKS.md).
"""

import datetime
import http.client
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import report  # noqa: E402
import servers as S  # noqa: E402

QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DUR = float(os.environ.get("BENCH_DURATION", "3" if QUICK else "10"))
CASES = [c.strip() for c in os.environ.get("BENCH_CASES", "1,2,3,4,5,6,7").split(",") if c.strip()]
PERF = os.environ.get("BENCH_PERF", "1") != "0"
HOLD = 1000 if QUICK else 5000
SWITCHES = 20 if QUICK else 100
BIG = (256 if QUICK else 1024) << 20
SPEED_S = 1 if QUICK else 3
CONC = 32        # connections of the load generator (cases 1-4)
SWITCH_CONC = 8  # case 6: keep-alive connections...
SWITCH_REQS = 100  # ...each making a new one (a new handshake) after this many requests
GATE_MAX = 2 if QUICK else 10  # seconds to wait for a quiet machine before a run...
GATE_BUSY = 2 if QUICK else 3  # ...or this long when the last wait was in vain
DISTURBED = 0.10  # other processes' share of CPU 0 above which a run is repeated once...
MAX_REPEATS = 12  # ...at most this many times in a whole bench (a busy machine stays busy)

CERTGATE = os.path.join(ROOT, "build", "certgate")
LOADGEN = os.path.join(ROOT, "build", "bench", "loadgen")
HSFLOOR = os.path.join(ROOT, "build", "bench", "hsfloor")
ON_SERVER = ["taskset", "-c", "0"]
ON_CLIENT = ["taskset", "-c", "1"]
ORDER = ["certgate", "nginx", "haproxy"]


def log(msg):
    print("bench: " + msg, flush=True)


def run(argv, timeout=600, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


# ----- the machine -----

def cpu_ticks():
    """Per-CPU (busy user+nice+system, all) jiffies, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:]]
                out[line.split()[0]] = (v[0] + v[1] + v[2], sum(v[:8]))
    return out


def busy_fraction(a, b, cpu):
    d_busy = b[cpu][0] - a[cpu][0]
    d_all = b[cpu][1] - a[cpu][1]
    return d_busy / d_all if d_all > 0 else 0.0


_gate = {"in_vain": False}


def quiet_gate():
    """Waits until other programs leave both CPUs nearly idle: at most GATE_MAX s, or
    GATE_BUSY s when the previous wait ended without quiet."""
    start = time.monotonic()
    limit = GATE_BUSY if _gate["in_vain"] else GATE_MAX
    while True:
        a = cpu_ticks()
        time.sleep(0.5)
        b = cpu_ticks()
        b0, b1 = busy_fraction(a, b, "cpu0"), busy_fraction(a, b, "cpu1")
        quiet = b0 < 0.05 and b1 < 0.15
        if quiet or time.monotonic() - start > limit:
            _gate["in_vain"] = not quiet
            return {"gate_wait_s": round(time.monotonic() - start - 0.5, 1),
                    "gate_busy_cpu0": round(b0, 3), "gate_busy_cpu1": round(b1, 3)}


def virtualization():
    parts = []
    try:
        for line in run(["lscpu"], timeout=20).stdout.splitlines():
            if line.startswith(("Hypervisor vendor:", "Virtualization type:")):
                parts.append(line.split(":", 1)[1].strip())
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        v = run(["systemd-detect-virt", "--container"], timeout=20).stdout.strip()
        if v and v != "none":
            parts.append("container: " + v)
    except (OSError, subprocess.SubprocessError):
        pass
    return ", ".join(parts) or "bare metal"


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def first_line(argv):
        try:
            p = run(argv, timeout=20)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"
    git = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).stdout.strip()
    dirty = run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": os.uname().release,
        "virtualization": virtualization(),
        "openssl": first_line(["openssl", "version"]),
        "nginx": first_line([S.which("nginx"), "-v"]),
        "haproxy": first_line([S.which("haproxy"), "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "certgate": first_line([CERTGATE, "--version"]),
        "commit": git + (" (with uncommitted changes)" if dirty else ""),
        "quick": QUICK, "rounds": ROUNDS, "duration_s": DUR,
    }


# ----- certificates -----

def make_pki(folder):
    """Self-signed CN=localhost: RSA-2048 (two, for case 6) and ECDSA P-256."""
    os.makedirs(folder, exist_ok=True)
    pki = {}
    for name, keyopt in (("rsa", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
                         ("rsa2", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
                         ("ec", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])):
        key, crt = os.path.join(folder, name + ".key"), os.path.join(folder, name + ".crt")
        p12, pem = os.path.join(folder, name + ".p12"), os.path.join(folder, name + ".pem")
        for argv in (["openssl", "genpkey"] + keyopt + ["-out", key],
                     ["openssl", "req", "-x509", "-new", "-key", key, "-out", crt, "-days", "30",
                      "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                     ["openssl", "pkcs12", "-export", "-inkey", key, "-in", crt, "-out", p12,
                      "-name", "bench", "-passout", "pass:" + S.P12_PASSWORD]):
            p = run(argv)
            if p.returncode != 0:
                raise SystemExit("bench: %s failed: %s" % (" ".join(argv), p.stderr))
        with open(pem, "w") as f:
            f.write(open(crt).read() + open(key).read())
        pki[name] = {"key": key, "crt": crt, "p12": p12, "pem": pem}
    return pki


# ----- parsing -----

def us(value, unit):
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[unit]


def parse_wrk(out):
    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    if not m:
        raise RuntimeError("wrk printed no result:\n" + out)
    r["ops"] = int(m.group(1))
    r["ops_per_s"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for pct, key in (("50", "p50_us"), ("90", "p90_us"), ("99", "p99_us")):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s|m)\s*$" % pct, out, re.M)
        if m:
            r[key] = us(m.group(1), m.group(2))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    r["errors"] = errors
    return r


def parse_loadgen(out):
    lines = [l for l in out.strip().splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError("loadgen printed no result:\n" + out)
    j = json.loads(lines[-1])
    r = {"ops": j["ops"], "ops_per_s": j["ops_per_s"], "errors": j["errors_total"],
         "error_kinds": {k: v for k, v in j["errors"].items() if v}, "lg": j}
    for k in ("p50", "p90", "p99", "max"):
        if k in j["lat_us"]:
            r[k + "_us"] = float(j["lat_us"][k])
    return r


# ----- the benchmark -----

class Bench:
    def __init__(self):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.results = os.path.join(HERE, "results", stamp)
        os.makedirs(self.results, exist_ok=True)
        latest = os.path.join(HERE, "results", "latest")
        if os.path.islink(latest) or os.path.exists(latest):
            os.remove(latest)
        os.symlink(stamp, latest)
        self.work = tempfile.mkdtemp(prefix="certgate-bench-")
        os.chmod(self.work, 0o755)
        self.live = []
        self.repeats = 0
        self.runs = []
        self.commands = {}   # case -> list of command lines (first round)
        self.configs = {}    # case -> {file: text}
        self.probes = {}     # case -> {server: first response head}
        self.checks = {}     # case -> list of sentences
        self.extra = {}      # case -> anything else for the report
        self.raw = open(os.path.join(self.results, "runs.jsonl"), "w")

    # servers

    def start(self, case, opts, only=None):
        made = []
        for name in only or ORDER:
            if name == "certgate":
                s = S.Certgate(self.work, self.pki, opts, CERTGATE)
            elif name == "nginx":
                s = S.Nginx(self.work, self.pki, opts)
            else:
                s = S.Haproxy(self.work, self.pki, opts)
            self.live.append(s)
            s.start()
            made.append(s)
            self.note_server(case, s)
        return made

    def note_server(self, case, s):
        """The report shows how the server was started and its configuration."""
        self.note_command(case, s.name, s.cmd)
        for fname, text in s.files().items():
            self.configs.setdefault(case, {})[s.name + ": " + fname] = text

    def stop(self, servers):
        for s in servers:
            s.stop()
            if s in self.live:
                self.live.remove(s)

    def stop_all(self):
        for s in list(self.live):
            try:
                s.stop()
            except Exception:  # noqa: BLE001 - cleaning up whatever is left
                pass
        self.live = []

    def note_command(self, case, who, argv):
        lines = self.commands.setdefault(case, [])
        text = "%s: %s" % (who, shlex.join(argv))
        if text not in lines:
            lines.append(text)

    # one run

    def measure(self, case, variant, rnd, server, argv, parse, post=None, timeout=600):
        """Runs the load argv against server; post(r) adds what the case derives. Returns
        and records the run; a run disturbed by other programs on CPU 0 is repeated once."""
        for attempt in (1, 2):
            gate = quiet_gate()
            t0 = time.monotonic()
            ticks0, cpu0 = cpu_ticks(), server.cpu_s()
            p = run(argv, timeout=timeout)
            time.sleep(0.2)  # the server finishes closing what the load left
            cpu1, ticks1 = server.cpu_s(), cpu_ticks()
            wall = time.monotonic() - t0
            if p.returncode != 0:
                raise RuntimeError("%s failed (%d): %s" % (shlex.join(argv), p.returncode,
                                                            p.stdout + p.stderr))
            r = parse(p.stdout + p.stderr)
            r.update(gate)
            r["server_cpu_s"] = round(cpu1 - cpu0, 3)
            busy0 = (ticks1["cpu0"][0] - ticks0["cpu0"][0]) / S.CLK_TCK
            r["others_cpu0"] = round(max(0.0, busy0 - r["server_cpu_s"]) / wall, 3)
            r["server_cpu_util"] = round(r["server_cpu_s"] / wall, 3)
            r["cpu_us_per_op"] = r["server_cpu_s"] / r["ops"] * 1e6 if r["ops"] else None
            r.update(case=case, variant=variant, round=rnd, server=server.name,
                     cmd=shlex.join(argv), attempt=attempt)
            if post:
                post(r)
            if r["others_cpu0"] > DISTURBED and attempt == 1 and self.repeats < MAX_REPEATS:
                self.repeats += 1
                r["discarded"] = True
            self.record(r)
            if not r.get("discarded"):
                break
            log("  %s: other programs used %.0f%% of CPU 0; repeating the run"
                % (server.name, 100 * r["others_cpu0"]))
        self.runs.append(r)
        if rnd == 1:
            self.note_command(case, "load → " + server.name, argv)
        return r

    def record(self, r):
        self.raw.write(json.dumps(r, sort_keys=True) + "\n")
        self.raw.flush()

    def probe(self, case, s, path="/rest/health", expect_header=True):
        """One request with a response head printed: the case is set up right."""
        argv = ON_CLIENT + [LOADGEN, "-p", str(s.port), "-m", "ka", "-c", "1", "-N", "1", "-v",
                            "-u", path] + (["-H"] if expect_header else [])
        p = run(argv, timeout=30)
        j = parse_loadgen(p.stdout)
        if j["errors"] or j["ops"] != 1:
            raise RuntimeError("%s: probe of %s failed: %s %s" % (s.name, path, p.stdout, p.stderr))
        self.probes.setdefault(case, {})[s.name] = {"head": p.stderr.strip(),
                                                     "tls": j["lg"]["tls"]}
        return j

    def rounds(self, servers):
        """(round, server) in the interleaved, rotating order."""
        for rnd in range(1, ROUNDS + 1):
            k = (rnd - 1) % len(servers)
            for s in servers[k:] + servers[:k]:
                yield rnd, s

    def warm(self, servers, argv_for):
        for s in servers:
            run(argv_for(s, 1), timeout=60)

    # ----- cases -----

    def case1(self):
        log("case 1: keep-alive requests on /rest/health (wrk, %d connections)" % CONC)
        servers = self.start("1", {"cert": "rsa", "tickets": False})
        for s in servers:
            self.probe("1", s)
        self.wrk_rounds("1", "keep-alive", servers, "/rest/health")
        self.stop(servers)

    def wrk_rounds(self, case, variant, servers, path):
        """Keep-alive requests for path with wrk: a warm-up, then every round."""
        def wrk(s, d):
            return ON_CLIENT + ["wrk", "-t1", "-c%d" % CONC, "-d%ds" % d, "--latency",
                                "https://127.0.0.1:%d%s" % (s.port, path)]
        self.warm(servers, wrk)
        for rnd, s in self.rounds(servers):
            r = self.measure(case, variant, rnd, s, wrk(s, DUR), parse_wrk)
            log("  round %d %-8s %9.0f req/s  %6.2f us CPU/req  p99 %.0f us"
                % (rnd, s.name, r["ops_per_s"], r["cpu_us_per_op"], r.get("p99_us", 0)))

    def handshake_case(self, case, variant, opts, flag):
        servers = self.start(case, opts)
        for s in servers:
            self.probe(case, s)

        def lg(s, d):
            return ON_CLIENT + [LOADGEN, "-p", str(s.port), "-m", "hs", "-c", str(CONC),
                                "-d", str(d), flag, "-H"]
        def post(r):
            j, n = r["lg"], max(1, r["ops"])
            r["resumed_fraction"] = j["resumed_client"] / n
            r["hdr_resumed_fraction"] = j["hdr_resumed"] / n
            r["tickets_per_handshake"] = j["sessions_received"] / n
            r["header_missing"] = j["errors"]["header_missing"]
        self.warm(servers, lg)
        for rnd, s in self.rounds(servers):
            r = self.measure(case, variant, rnd, s, lg(s, DUR), parse_loadgen, post)
            log("  round %d %-8s %7.0f hs/s  %7.1f us CPU/hs  resumed %.3f (header %.3f)"
                % (rnd, s.name, r["ops_per_s"], r["cpu_us_per_op"], r["resumed_fraction"],
                   r["hdr_resumed_fraction"]))
        self.stop(servers)

    def case2(self):
        for cert, label in (("rsa", "RSA-2048"), ("ec", "ECDSA P-256")):
            log("case 2: full handshakes, %s (session cache and tickets off)" % label)
            self.handshake_case("2", label, {"cert": cert, "tickets": False}, "-r")

    def case3(self):
        log("case 3: resumed handshakes (session tickets; the client uses each ticket once)")
        self.handshake_case("3", "newest ticket", {"cert": "rsa", "tickets": True}, "-r")
        log("case 3: resumed handshakes, one ticket reused by each client connection slot")
        self.handshake_case("3", "ticket reused", {"cert": "rsa", "tickets": True}, "-R")

    def case4(self):
        log("case 4: proxied keep-alive requests and a %d MiB transfer" % (BIG >> 20))
        up = S.Upstream(self.work, BIG)
        self.live.append(up)
        up.start()
        self.note_server("4", up)
        # page the large file in once, so that no run pays for it
        run(ON_CLIENT + ["curl", "-s", "-m", "120", "-o", "/dev/null",
                         "http://127.0.0.1:%d/big.bin" % up.port], timeout=300)
        servers = self.start("4", {"cert": "rsa", "tickets": False, "upstream": up.port})
        for s in servers:
            j = self.probe("4", s, "/small.txt", expect_header=False)
            if j["lg"]["bytes_body"] != 1024:
                raise RuntimeError("%s: /small.txt came back with %d bytes"
                                   % (s.name, j["lg"]["bytes_body"]))
        self.wrk_rounds("4", "proxied 1 KiB", servers, "/small.txt")

        def big(s):
            return ON_CLIENT + [LOADGEN, "-p", str(s.port), "-m", "ka", "-c", "1", "-N", "1",
                                "-u", "/big.bin", "-t", "30", "-d", "600"]
        def post(r):
            got, secs = r["lg"]["bytes_body"], r["lg"]["elapsed_s"]
            r["complete"] = got == BIG and r["errors"] == 0 and r["lg"]["ops"] == 1
            if not r["complete"]:
                r["errors"] = max(1, r["errors"])
                log("  %s: the transfer did not complete: %d of %d bytes arrived (%s)"
                    % (r["server"], got, BIG, r["error_kinds"]))
            r["mib_per_s"] = r["ops_per_s"] = got / secs / 2**20 if secs else 0
            r["ops"] = got / 2**30  # one op = one GiB
            r["cpu_us_per_op"] = r["server_cpu_s"] / r["ops"] * 1e6 if r["ops"] else None
        for rnd, s in self.rounds(servers):
            r = self.measure("4", "stream %d MiB" % (BIG >> 20), rnd, s, big(s), parse_loadgen,
                             post)
            log("  round %d %-8s %7.0f MiB/s  %6.0f ms CPU/GiB"
                % (rnd, s.name, r["mib_per_s"], r["cpu_us_per_op"] / 1000))
        self.stop(servers + [up])

    def case5(self):
        log("case 5: memory per idle TLS connection, %d connections open" % HOLD)
        for rnd in range(1, ROUNDS + 1):
            k = (rnd - 1) % 3
            for name in ORDER[k:] + ORDER[:k]:
                (s,) = self.start("5", {"cert": "rsa", "tickets": False}, only=[name])
                try:
                    self.hold_run(s, rnd)
                finally:
                    self.stop([s])

    def hold_run(self, s, rnd):
        self.probe("5", s)
        gate = quiet_gate()
        time.sleep(1)
        pid = s.rss_pid()
        rss0, fds0 = S.rss_kb(pid), S.open_fds(pid)
        argv = ON_CLIENT + [LOADGEN, "-p", str(s.port), "-m", "hold", "-c", str(HOLD),
                            "-k", "64", "-d", "300", "-t", "60"]
        if rnd == 1:
            self.note_command("5", "load → " + s.name, argv)
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        if not line.startswith("READY"):
            p.kill()
            raise RuntimeError("%s: the load generator did not get ready: %s %s"
                               % (s.name, line, p.stderr.read()))
        time.sleep(2)
        pid = s.rss_pid()
        rss1, fds1 = S.rss_kb(pid), S.open_fds(pid)
        out, err = p.communicate("", timeout=120)
        r = parse_loadgen(out)
        j = r["lg"]
        held = j["held"]
        r.update(gate)
        r.update(case="5", variant="idle connections", round=rnd, server=s.name,
                 cmd=shlex.join(argv), rss_idle_kb=rss0, rss_open_kb=rss1,
                 fds_idle=fds0, fds_open=fds1, held=held, still_open=j["still_open"],
                 bytes_per_conn=(rss1 - rss0) * 1024 / held if held else None,
                 complete=held == HOLD and j["still_open"] == HOLD)
        self.record(r)
        self.runs.append(r)
        log("  round %d %-8s RSS %d -> %d KiB, %d connections held (%d still open): "
            "%.0f bytes per connection" % (rnd, s.name, rss0, rss1, held, j["still_open"],
                                           r["bytes_per_conn"] or 0))

    def case6(self):
        log("case 6: certificate switched %d times under keep-alive load" % SWITCHES)
        servers = self.start("6", {"cert": "rsa", "tickets": False})
        cg = servers[0]
        api = CertgateApi(cg)
        api.upload("switch-a.p12", self.pki["rsa"]["p12"])
        api.upload("switch-b.p12", self.pki["rsa2"]["p12"])  # now active
        state = {"certgate": 1, "nginx": 0, "haproxy": 0}  # index into the pair in use
        pairs = {"certgate": ("switch-a.p12", "switch-b.p12"),
                 "nginx": (self.pki["rsa"], self.pki["rsa2"]),
                 "haproxy": (self.pki["rsa"], self.pki["rsa2"])}
        self.extra["6"] = {"switch": {
            "certgate": "POST /e/bench/api/v1/certificate/{switch-a.p12|switch-b.p12}/activate "
                        "(X-Password), alternately, over one keep-alive HTTPS connection",
            "nginx": "rewrite cert.crt/cert.key (temp file + rename), SIGHUP to the master, "
                     "wait until the new worker process exists",
            "haproxy": "runtime API on the admin socket: set ssl cert <crt> <<PEM, then "
                       "commit ssl cert <crt>"}}
        for s in servers:
            self.probe("6", s)

        def switch(s):
            nxt = 1 - state[s.name]
            if s.name == "certgate":
                ok, why = api.activate(pairs["certgate"][nxt])
            elif s.name == "nginx":
                ok = s.set_cert(pairs["nginx"][nxt])
                why = "" if ok else "no new worker within 5 s"
            else:
                ok, why = s.set_cert(pairs["haproxy"][nxt])
            if ok:
                state[s.name] = nxt
            return ok, why

        def lg(s, extra):
            return ON_CLIENT + [LOADGEN, "-p", str(s.port), "-m", "ka", "-c", str(SWITCH_CONC),
                                "-n", str(SWITCH_REQS), "-C"] + extra
        self.warm(servers, lambda s, d: lg(s, ["-d", str(d)]))
        interval = max(0.01, (DUR - 1.0) / SWITCHES)
        for rnd, s in self.rounds(servers):
            r = self.measure("6", "no switch", rnd, s, lg(s, ["-d", str(DUR)]), parse_loadgen)
            log("  round %d %-8s without switching: %7.0f req/s  p99 %6.0f us  %d errors"
                % (rnd, s.name, r["ops_per_s"], r["p99_us"], r["errors"]))
            r = self.switch_run(s, rnd, lg(s, ["-d", "600", "-S"]), switch, interval)
            log("  round %d %-8s switching %d times: %7.0f req/s  p99 %6.0f us  %d errors %s  "
                "%d certificate changes seen, switch %.0f ms median"
                % (rnd, s.name, r["switches_ok"], r["ops_per_s"], r["p99_us"], r["errors"],
                   r["error_kinds"] or "", r["lg"]["cert_changes"], r["switch_ms_median"]))
        api.close()
        self.stop(servers)

    def switch_run(self, s, rnd, argv, switch, interval):
        gate = quiet_gate()
        if rnd == 1:
            self.note_command("6", "load → %s (while switching)" % s.name, argv)
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        times, failures = [], []
        t_next = time.monotonic()
        for _ in range(SWITCHES):
            t_next += interval
            t0 = time.monotonic()
            ok, why = switch(s)
            times.append((time.monotonic() - t0) * 1000)
            if not ok:
                failures.append(why)
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        time.sleep(0.5)
        out, err = p.communicate("", timeout=120)
        r = parse_loadgen(out)
        times.sort()
        r.update(gate)
        r.update(case="6", variant="switching", round=rnd, server=s.name, cmd=shlex.join(argv),
                 switches_ok=SWITCHES - len(failures), switch_failures=failures[:5],
                 switch_ms_median=times[len(times) // 2], switch_ms_max=times[-1])
        self.record(r)
        self.runs.append(r)
        return r

    def case7(self):
        log("case 7: the floors (openssl speed, in-process handshake), on CPU 0")
        for rnd in range(1, ROUNDS + 1):
            argv = ON_SERVER + ["openssl", "speed", "-seconds", str(SPEED_S), "rsa2048",
                                "ecdsap256"]
            quiet_gate()
            p = run(argv)
            rsa = re.search(r"^rsa\s+2048 bits\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", p.stdout, re.M)
            ec = re.search(r"^\s*256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)",
                           p.stdout, re.M)
            if not rsa or not ec:
                raise RuntimeError("cannot read openssl speed:\n" + p.stdout + p.stderr)
            for variant, m in (("RSA-2048", rsa), ("ECDSA P-256", ec)):
                r = {"case": "7", "variant": "sign " + variant, "round": rnd, "server": "openssl",
                     "sign_per_s": float(m.group(1)), "verify_per_s": float(m.group(2)),
                     "cmd": shlex.join(argv)}
                self.record(r)
                self.runs.append(r)
            if rnd == 1:
                self.note_command("7", "speed", argv)
            for variant, c in (("RSA-2048", "rsa"), ("ECDSA P-256", "ec")):
                argv = ON_SERVER + [HSFLOOR, self.pki[c]["crt"], self.pki[c]["key"], "-s",
                                    str(SPEED_S)]
                quiet_gate()
                p = run(argv)
                if p.returncode != 0:
                    raise RuntimeError("hsfloor failed: " + p.stderr)
                j = json.loads(p.stdout.strip().splitlines()[-1])
                r = {"case": "7", "variant": "handshake " + variant, "round": rnd,
                     "server": "in-process", "cmd": shlex.join(argv), **j}
                self.record(r)
                self.runs.append(r)
                if rnd == 1:
                    self.note_command("7", "floor", argv)
            log("  round %d  sign/s RSA-2048 %s  P-256 %s  in-process handshake %s"
                % (rnd, rsa.group(1), ec.group(1), ", ".join(
                    "%.0f us" % x["server_us"] for x in self.runs[-2:])))

    # ----- where certgate's CPU goes -----

    def profile(self):
        if not shutil.which("perf"):
            log("perf is not installed; no profile")
            return
        log("profile: perf record -g on certgate during case 1 and case 2 (RSA) loads")
        (cg,) = self.start("perf", {"cert": "rsa", "tickets": False}, only=["certgate"])
        loads = {
            "keep-alive (case 1)": ON_CLIENT + ["wrk", "-t1", "-c%d" % CONC, "-d%ds" % DUR,
                                                "https://127.0.0.1:%d/rest/health" % cg.port],
            "full handshakes RSA-2048 (case 2)": ON_CLIENT + [
                LOADGEN, "-p", str(cg.port), "-m", "hs", "-c", str(CONC), "-d", str(DUR), "-r"],
        }
        self.extra["perf"] = {}
        for label, argv in loads.items():
            data = os.path.join(self.results, "perf-%d.data" % len(self.extra["perf"]))
            load = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
            rec = ON_CLIENT + ["perf", "record", "-F", "1999", "-g", "-p", str(cg.proc.pid),
                               "-o", data, "--", "sleep", str(max(1, DUR - 2))]
            run(rec, timeout=DUR + 60)
            load.wait(timeout=DUR + 60)
            rep = run(["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none",
                       "--sort", "dso,symbol"], timeout=300)
            with open(data + ".txt", "w") as f:
                f.write(rep.stdout)
            self.extra["perf"][label] = {"cmd": shlex.join(rec[3:]),
                                         "top": report.perf_summary(rep.stdout)}
        self.stop([cg])

    # ----- all -----

    def main(self):
        try:
            self.pki = make_pki(os.path.join(self.work, "pki"))
            self.machine = machine()
            log("results in %s; %d rounds of %gs runs%s" % (self.results, ROUNDS, DUR,
                                                           " (quick)" if QUICK else ""))
            for c in CASES:
                getattr(self, "case" + c)()
            if PERF:
                self.profile()
        finally:
            self.stop_all()
            self.raw.close()
            shutil.rmtree(self.work, ignore_errors=True)
        data = {"machine": self.machine, "runs": self.runs, "commands": self.commands,
                "configs": self.configs, "probes": self.probes, "extra": self.extra,
                "settings": {"conc": CONC, "switch_conc": SWITCH_CONC,
                             "switch_reqs": SWITCH_REQS, "hold": HOLD, "switches": SWITCHES,
                             "big_mib": BIG >> 20, "speed_s": SPEED_S, "cases": CASES,
                             "gate_max": GATE_MAX, "gate_busy": GATE_BUSY,
                             "disturbed": DISTURBED, "max_repeats": MAX_REPEATS,
                             "repeats": self.repeats}}
        with open(os.path.join(self.results, "summary.json"), "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        text = report.render(data)
        with open(os.path.join(self.results, "BENCHMARKS.md"), "w") as f:
            f.write(text)
        if os.environ.get("BENCH_NO_WRITE") != "1":
            with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
                f.write(text)
            log("wrote BENCHMARKS.md")
        print(report.console(data), flush=True)


class CertgateApi:
    """The certificate API of the certgate under test, over one keep-alive connection."""

    def __init__(self, server):
        self.s = server
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        h = {"Authorization": "Api-Token " + self.s.token, "X-Password": S.P12_PASSWORD}
        h.update(headers or {})
        for attempt in (1, 2):
            if self.conn is None:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.s.port, context=ctx,
                                                        timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=h)
                resp = self.conn.getresponse()
                return resp.status, resp.read().decode(errors="replace")
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        return 0, ""

    def upload(self, name, p12):
        with open(p12, "rb") as f:
            st, text = self.request("PUT", "/e/bench/api/v1/certificate/" + name, f.read(),
                                    {"Content-Type": "application/octet-stream"})
        if st != 200:
            raise RuntimeError("certgate: PUT %s answered %d: %s" % (name, st, text))

    def activate(self, name):
        st, text = self.request("POST", "/e/bench/api/v1/certificate/%s/activate" % name)
        return st == 200, "" if st == 200 else "%d %s" % (st, text.strip()[:200])

    def close(self):
        if self.conn:
            self.conn.close()
        self.conn = None


if __name__ == "__main__":
    Bench().main()
