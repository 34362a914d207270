"""User-space instructions per operation, certgate beside nginx and HAProxy, with callgrind.

CPU time on a shared 2-core VM moves by ±10 % from run to run; the number of instructions a
server executes for one operation does not. This runs each of the three servers, configured
exactly as in `make bench` (bench/servers.py), under `valgrind --tool=callgrind`, warms it
up uninstrumented, then counts the instructions of all its threads while bench/loadgen
runs one kind of operation, and prints a Markdown table: instructions per operation, the
ratio, and where they go (the server's own code, libcrypto, libssl, libc, others).
Kernel work (syscalls, TCP) is not counted: that is what the CPU figures of `make bench` add.

    make bench-instructions, or: python3 bench/instructions.py [SECONDS]   (~4 minutes)

The tables go to standard output and to bench/results/instructions.md.

Environment: INSTR_CASES, e.g. "health,proxied" (default: all of them but full-rsa-sni4);
INSTR_SERVERS, e.g. "certgate" (default: all three); INSTR_BASELINE, the path of another
certgate binary (e.g. one built from main) measured beside this one as "certgate before",
with a before/after table. The case full-rsa-sni4 (certgate only) serves a file of four RSA
entries whose fourth one answers loadgen's server name, so every handshake runs the SNI
callback and switches context:

    INSTR_CASES=full-rsa,full-rsa-sni4 INSTR_SERVERS=certgate \
        INSTR_BASELINE=/path/to/main/build/certgate make bench-instructions
"""

import collections
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import servers as S  # noqa: E402
from bench import CERTGATE, LOADGEN, make_pki  # noqa: E402

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
ORDER = ["certgate", "nginx", "haproxy"]
LABEL = {"certgate": "certgate", "nginx": "nginx", "haproxy": "HAProxy"}

# name: (what, server options, loadgen arguments after -p PORT)
CASES = {
    "health": ("keep-alive GET /rest/health (case 1)", {"cert": "rsa", "tickets": True},
               ["-m", "ka", "-c", "8", "-u", "/rest/health"]),
    "full-rsa": ("full handshake, RSA-2048 (case 2)", {"cert": "rsa", "tickets": False},
                 ["-m", "hs", "-c", "4", "-r", "-H"]),
    "full-ec": ("full handshake, ECDSA P-256 (case 2)", {"cert": "ec", "tickets": False},
                ["-m", "hs", "-c", "4", "-r", "-H"]),
    "resumed": ("resumed handshake, newest ticket (case 3)", {"cert": "rsa", "tickets": True},
                ["-m", "hs", "-c", "4", "-r", "-H"]),
    "proxied": ("proxied keep-alive GET of 1 KiB (case 4)",
                {"cert": "rsa", "tickets": True, "upstream": True},
                ["-m", "ka", "-c", "8", "-u", "/small.txt"]),
    "full-rsa-sni4": ("full handshake, RSA-2048, 4-entry file, SNI picks the 4th",
                      {"cert": "rsa-sni4", "tickets": False}, ["-m", "hs", "-c", "4", "-r", "-H"]),
}
CERTGATE_ONLY = {"full-rsa-sni4"}
LABEL["certgate-before"] = "certgate before"


def make_sni4(pki, folder):
    """A PKCS#12 of four RSA-2048 entries (a.test, b.test, *.c.test, then the bench's
    CN=localhost), merged by keytool: certgate serves the first by default, the fourth for
    loadgen's SNI "localhost"."""
    out = os.path.join(folder, "sni4.p12")
    srcs = []
    for name, san in (("a", "DNS:a.test"), ("b", "DNS:b.test"), ("c", "DNS:*.c.test")):
        key, crt = os.path.join(folder, name + ".key"), os.path.join(folder, name + ".crt")
        p12 = os.path.join(folder, name + ".p12")
        for argv in (["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                      "rsa_keygen_bits:2048", "-out", key],
                     ["openssl", "req", "-x509", "-new", "-key", key, "-out", crt, "-days", "30",
                      "-subj", "/CN=" + name, "-addext", "subjectAltName=" + san],
                     ["openssl", "pkcs12", "-export", "-inkey", key, "-in", crt, "-out", p12,
                      "-name", name, "-passout", "pass:" + S.P12_PASSWORD]):
            subprocess.run(argv, capture_output=True, check=True)
        srcs.append(p12)
    srcs.append(pki["rsa"]["p12"])
    for src in srcs:
        subprocess.run(["keytool", "-noprompt", "-importkeystore", "-srckeystore", src,
                        "-srcstoretype", "PKCS12", "-srcstorepass", S.P12_PASSWORD,
                        "-destkeystore", out, "-deststoretype", "PKCS12",
                        "-deststorepass", S.P12_PASSWORD], capture_output=True, check=True)
    pki["rsa-sni4"] = dict(pki["rsa"], p12=out)


def under_callgrind(cmd, out):
    """taskset -c 0 PROGRAM ... -> taskset -c 0 valgrind ... PROGRAM ... (same pid)."""
    vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=" + out]
    i = 3 if cmd[:2] == ["taskset", "-c"] else 0
    return cmd[:i] + vg + cmd[i:]


def loadgen(port, args, seconds):
    p = subprocess.run(["taskset", "-c", "1", LOADGEN, "-p", str(port), "-d", str(seconds)] + args,
                       capture_output=True, text=True, timeout=seconds + 120)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError("loadgen printed no result: %s" % p.stderr[-500:])
    return json.loads(lines[-1])


def per_object(path):
    """{object file: instructions} and the total, from a callgrind output file."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", path], capture_output=True,
                         text=True, check=True).stdout
    objs, total, table = collections.Counter(), 0, False
    for line in out.splitlines():
        if "PROGRAM TOTALS" in line:
            total = int(line.split()[0].replace(",", ""))
        if "file:function" in line:
            table = True
            continue
        m = re.match(r"\s*([\d,]+) \(.*?\)\s+.*\[(.*)\]\s*$", line)
        if table and m and "=>" not in line:
            objs[os.path.basename(m.group(2))] += int(m.group(1).replace(",", ""))
    return total, objs


def group(objs, server):
    g = collections.Counter()
    for obj, n in objs.items():
        if obj.startswith("libcrypto"):
            g["libcrypto"] += n
        elif obj.startswith("libssl"):
            g["libssl"] += n
        elif obj.startswith("libc.so"):
            g["libc"] += n
        elif obj in (server, "certgate") or obj.startswith(server):
            g["own code"] += n
        elif obj.startswith("libhttp_parser") or obj.startswith("libuv"):
            g["own code"] += n  # certgate's HTTP parser and event loop: what nginx has inside
        else:
            g["other"] += n
    return g


def measure(work, pki, upstream, name, case):
    what, opts, args = CASES[case]
    opts = dict(opts)
    if opts.get("upstream"):
        opts["upstream"] = upstream.port
    if name == "certgate":
        s = S.Certgate(work, pki, opts, CERTGATE)
    elif name == "certgate-before":
        s = S.Certgate(work, pki, opts, os.environ["INSTR_BASELINE"])
    elif name == "nginx":
        s = S.Nginx(work, pki, opts)
    else:
        s = S.Haproxy(work, pki, opts)
    out = os.path.join(work, "callgrind.%s.%s" % (name, case))

    def wrap(cmd):
        if name == "nginx":  # one process, so that callgrind sees the worker
            cmd[-1] = "daemon off; master_process off;"
        return under_callgrind(cmd, out)
    try:
        s.start(wrap, timeout=120)
        loadgen(s.port, args, 3)  # warm-up, not counted
        pid = str(s.proc.pid)
        subprocess.run(["callgrind_control", "-i", "on", pid], capture_output=True, check=True)
        r = loadgen(s.port, args, SECONDS)
        subprocess.run(["callgrind_control", "-i", "off", pid], capture_output=True, check=True)
        subprocess.run(["callgrind_control", "-d", pid], capture_output=True, check=True)
        time.sleep(1)
    finally:
        s.stop()
    dumps = sorted(f for f in os.listdir(work) if f.startswith(os.path.basename(out) + "."))
    if not dumps:
        raise RuntimeError("callgrind wrote no dump for %s %s" % (name, case))
    total, objs = per_object(os.path.join(work, dumps[0]))
    if r.get("errors_total"):
        raise RuntimeError("%s %s: %d failed operations" % (name, case, r["errors_total"]))
    if case.startswith("full") and r.get("resumed_client"):
        raise RuntimeError("%s %s: a handshake was resumed" % (name, case))
    if case == "resumed" and r["resumed_client"] < 0.9 * r["handshakes"]:
        raise RuntimeError("%s %s: too few resumed handshakes" % (name, case))
    ops = r["ops"]
    return {"ops": ops, "per_op": total / ops,
            "groups": {k: v / ops for k, v in group(objs, name).items()}}


def main():
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if not shutil.which(tool):
            raise SystemExit("instructions: %s is missing (apt-get install valgrind)" % tool)
    default = ",".join(c for c in CASES if c not in CERTGATE_ONLY)
    cases = [c.strip() for c in os.environ.get("INSTR_CASES", default).split(",") if c]
    servers = [x.strip() for x in os.environ.get("INSTR_SERVERS", ",".join(ORDER)).split(",")]
    if os.environ.get("INSTR_BASELINE"):
        servers.append("certgate-before")
    work = tempfile.mkdtemp(prefix="certgate-instr-")
    os.chmod(work, 0o755)
    pki = make_pki(os.path.join(work, "pki"))
    if CERTGATE_ONLY & set(cases):
        make_sni4(pki, os.path.join(work, "pki"))
    upstream = S.Upstream(work, 1 << 20)
    upstream.start()
    results = {}
    try:
        for case in cases:
            for name in servers:
                if case in CERTGATE_ONLY and not name.startswith("certgate"):
                    continue
                print("instructions: %s, %s ..." % (case, name), file=sys.stderr, flush=True)
                results[(case, name)] = measure(work, pki, upstream, name, case)
    finally:
        upstream.stop()
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        table(cases, results)
    sys.stdout.write(text.getvalue())
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "instructions.md"), "w") as f:
        f.write(text.getvalue())
    shutil.rmtree(work, ignore_errors=True)


def table(cases, results):
    if not all((c, x) in results for c in cases for x in ORDER):
        return table_some(cases, results)
    print("Instructions per operation (below 1.00 in the last two columns: certgate executes "
          "fewer):")
    print()
    print("| operation | certgate | nginx | HAProxy | certgate ÷ nginx | certgate ÷ HAProxy |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        c, n, h = (results[(case, x)]["per_op"] for x in ORDER)
        print("| %s | %s | %s | %s | %.2f | %.2f |" % (
            CASES[case][0], "{:,.0f}".format(c), "{:,.0f}".format(n), "{:,.0f}".format(h),
            c / n, c / h))
    print()
    print("Where they go (instructions per operation; *own code* includes certgate's "
          "llhttp (linked in) and libuv):")
    print()
    print("| operation | server | own code | libcrypto | libssl | libc | other |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        for name in ORDER:
            g = results[(case, name)]["groups"]
            print("| %s | %s | %s |" % (CASES[case][0], LABEL[name], " | ".join(
                "{:,.0f}".format(g.get(k, 0))
                for k in ("own code", "libcrypto", "libssl", "libc", "other"))))


def table_some(cases, results):
    """Only some servers measured: instructions per operation, and certgate against the
    baseline binary when there is one."""
    print("| operation | server | instructions per operation | own code | libcrypto | libssl |")
    print("|---|---|---|---|---|---|")
    for (case, name), r in results.items():
        g = r["groups"]
        print("| %s | %s | %s | %s |" % (CASES[case][0], LABEL[name], "{:,.0f}".format(r["per_op"]),
                                         " | ".join("{:,.0f}".format(g.get(k, 0))
                                                    for k in ("own code", "libcrypto", "libssl"))))
    if any(name == "certgate-before" for _, name in results):
        print()
        print("| operation | before | after | change |")
        print("|---|---|---|---|")
        for case in cases:
            b, a = results.get((case, "certgate-before")), results.get((case, "certgate"))
            if a and b:
                print("| %s | %s | %s | %+.2f %% |" % (
                    CASES[case][0], "{:,.0f}".format(b["per_op"]), "{:,.0f}".format(a["per_op"]),
                    100.0 * (a["per_op"] - b["per_op"]) / b["per_op"]))


if __name__ == "__main__":
    main()
