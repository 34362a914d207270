"""Layer 86: a connection's queued output is bounded, shown with small kernel buffers
(issue 9, part 3 "Bounded output, shown").

The gateway may queue at most 256 KiB (plus one read) of output per connection, whatever
the peer's speed and the kernel's buffer sizes: back-pressure pauses the producer (the
upstream on a download, the client on an upload) before that. With the default kernel
buffers, several MiB hide in the sockets, which can mask a gateway that reads ahead; so
the whole file runs in a network namespace of its own (it re-executes itself under
`unshare -n`), where lo is brought up and TCP's buffers are made small:

    net.ipv4.tcp_wmem = net.ipv4.tcp_rmem = "4096 16384 65536"

(these two are per network namespace since Linux 4.15, so the host keeps its own values.
net.core.{r,w}mem_{default,max} cannot be set there: older kernels do not show them in a
child namespace at all, newer ones (6.18 here) show read-only copies of the host's. They
only cap SO_SNDBUF/SO_RCVBUF set by the program itself, which neither the gateway nor curl
nor Python's sockets do; the `ss` figures printed below show the buffers staying small.)

Each test moves 1 GiB (1 GiB / SLOW under the sanitizers) through the gateway's HTTPS
port with a slow consumer:
  - download: `curl --limit-rate` reads a proxied answer (Content-Length, then chunked)
    at 100 MiB/s while the upstream could send several times faster;
  - upload: a streaming client (sized) and `curl -T -` (chunked) send as fast as they
    can to an upstream that reads at 80 MiB/s.
The gateway's VmRSS is sampled every 20 ms (and its VmHWM read at the end, for a peak
between two samples); its growth over the baseline taken after a small warm-up transfer
must stay under 16 MiB.

The upstream is a small server in this process (SlowUpstream), not upstream_server.py:
it counts, as it goes, the body bytes it has handed to / taken from the kernel, so the
bytes "in flight" (produced but not yet consumed: the gateway's queues plus the kernel's
and the client's small buffers) are sampled too. That figure shows whether back-pressure
pauses the producer; the RSS shows whether the memory that holds the queue stays bounded
too (an output buffer that keeps the bytes already sent until it empties completely has
few bytes in flight and still grows with the bytes passed). Both are printed, e.g.:

    download 1024 MiB sized, reader at 100 MiB/s: 10.2 s; RSS start 7.9, warm 8.1, max 9.2,
    after 9.2 MiB (VmHWM 9.2): growth 1.1 MiB (bound 16); in flight max 0.56 MiB (bound 4);
    kernel rb<=65536 tb<=65536; 477 samples

Every byte is checked against the upstream's pattern on the receiving side.
"""
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse

from harness import (GatewayTest, RssSampler, SANITIZED, SLOW, main, proc_memory,
                     read_http_response)

MiB = 1 << 20
GiB = 1 << 30
PATTERN = bytes(range(256)) * 256  # 64 KiB, as upstream_server.py's /big
PATTERN2 = PATTERN * 2  # any 64 KiB window of the repeating pattern is a slice of this

# The figures.
RSS_BOUND_MIB = 16
# Produced minus consumed at any moment: the gateway's queue (256 KiB + one read, 256 KiB
# today) plus what the kernel holds on the two hops (at most 64 KiB per socket buffer with
# the settings below, four of them) plus the client's own buffers (curl's, a 64 KiB pipe):
# about 1 MiB. 4 MiB leaves room for a larger read size and is still far below a gateway
# that reads ahead of its consumer.
IN_FLIGHT_BOUND_MIB = 4
KERNEL_BUFFERS = "4096 16384 65536"  # min, default, max bytes
SYSCTLS = {"net/ipv4/tcp_wmem": KERNEL_BUFFERS, "net/ipv4/tcp_rmem": KERNEL_BUFFERS}

# Sizes and rates: about 10-13 s a transfer; the sanitized build is about SLOW times
# slower, so it moves SLOW times less, SLOW times slower (still slower than it can go).
SIZE = max(64 * MiB, int(GiB / SLOW) // MiB * MiB)
DOWN_RATE = int(100 * MiB / SLOW)  # curl --limit-rate, bytes per second
UP_RATE = int(80 * MiB / SLOW)  # the upstream's reading speed on uploads
WARM = 2 * MiB  # the warm-up transfer before the baseline: small, so it hides little
SAMPLE_S = 0.02

# ASan holds freed memory in a quarantine before reuse (256 MiB by default), which alone
# exceeds the bound: the gateway gets a small one. With test_83's 8 MiB, a gateway whose
# queues are bounded grew by about 10 MiB here (the quarantine filling up during the
# transfer); with 2 MiB, by about 4, which leaves the bound its meaning under ASan too.
ASAN_ENV = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") +
            ":quarantine_size_mb=2:thread_local_quarantine_size_kb=256"} if SANITIZED else None

NETNS_MARK = "CERTGATE_TEST_IN_NETNS"
IN_NETNS = os.environ.get(NETNS_MARK) == "1"
# why the tests cannot run here (set by the __main__ block, checked by setUpClass)
NETNS_PROBLEM = None if IN_NETNS else \
    "not in a network namespace of its own: run this file as a script, it re-executes " \
    "itself under unshare -n"


def reexec_in_netns():
    """Replaces this process by the same test run inside a new network namespace
    (unshare -n). Returns only when that is impossible: then the reason."""
    try:
        p = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True,
                           timeout=30)
    except FileNotFoundError:
        return "unshare (util-linux) is not installed"
    if p.returncode != 0:
        return ("the kernel refuses a new network namespace (unshare -n true: exit %d, %s); "
                "this test needs one to set small TCP buffers" % (p.returncode,
                                                                  p.stderr.strip()))
    sys.stdout.flush()
    sys.stderr.flush()
    env = dict(os.environ, **{NETNS_MARK: "1"})
    os.execvpe("unshare", ["unshare", "-n", "--", sys.executable, "-B",
                           os.path.abspath(__file__)] + sys.argv[1:], env)


def setup_netns():
    """Inside the new namespace: lo up, small TCP buffers (read back to be sure)."""
    p = subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError("ip link set lo up failed: %s" % p.stderr)
    for key, value in SYSCTLS.items():
        path = "/proc/sys/" + key
        try:
            with open(path, "w") as f:
                f.write(value)
            with open(path) as f:
                got = f.read().split()
        except OSError as e:
            raise unittest.SkipTest("the kernel refuses %s in a network namespace: %s"
                                    % (key.replace("/", "."), e))
        if got != value.split():
            raise AssertionError("%s is %r after writing %r" % (key, got, value))


class SlowUpstream:
    """A plain HTTP/1.1 upstream in a thread of the test process (keep-alive, one thread
    per connection). It counts, as it goes, the body bytes it has handed to the kernel
    (`sent`) and taken from it (`received`), which is what the in-flight figure needs.

      GET /big?bytes=N[&chunked=1]   N bytes of PATTERN, as fast as the socket takes them
      PUT /sink?rate=R               reads the body (sized or chunked) at R bytes/s at
                                     most, checks it against PATTERN; JSON answer: length,
                                     bad_offset (the first block that differed, or null)
    """

    def __init__(self):
        self.lsock = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.port = self.lsock.getsockname()[1]
        self.sent = 0
        self.received = 0
        self.errors = []
        self._conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def close(self):
        self.lsock.close()
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self._conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                line = f.readline(65536)
                if not line:
                    return
                method, target = line.decode("latin-1").split(" ")[:2]
                headers = {}
                while True:
                    h = f.readline(65536)
                    if not h:
                        return
                    if h in (b"\r\n", b"\n"):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                u = urllib.parse.urlsplit(target)
                q = urllib.parse.parse_qs(u.query)
                if u.path == "/big" and method in ("GET", "HEAD"):
                    self._big(c, int(q["bytes"][0]), q.get("chunked") == ["1"])
                elif u.path == "/sink":
                    self._sink(c, f, headers, float(q["rate"][0]))
                else:
                    self._answer(c, 404, b'{"error": "no such route"}')
                    return
                if headers.get("connection", "").lower() == "close":
                    return
        except (OSError, ValueError, KeyError) as e:
            self.errors.append("%s: %s" % (type(e).__name__, e))
        finally:
            f.close()
            c.close()

    def _answer(self, c, status, body):
        c.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d"
                  b"\r\n\r\n%s" % (status, len(body), body))

    def _big(self, c, size, chunked):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" +
                  (b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size) +
                  b"\r\n\r\n")
        framed = b"%x\r\n" % len(PATTERN) + PATTERN + b"\r\n"
        left = size
        while left:
            n = min(left, len(PATTERN))
            if chunked:
                c.sendall(framed if n == len(PATTERN) else b"%x\r\n%s\r\n" % (n, PATTERN[:n]))
            else:
                c.sendall(PATTERN if n == len(PATTERN) else PATTERN[:n])
            self.sent += n
            left -= n
        if chunked:
            c.sendall(b"0\r\n\r\n")

    def _body(self, f, headers):
        """The request body in pieces of at most 64 KiB, as they come."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(f.readline(1024).split(b";")[0].strip(), 16)
                if size == 0:
                    while f.readline(65536) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                while size:
                    piece = f.read1(min(size, 65536))
                    if not piece:
                        raise EOFError("the body ended inside a chunk")
                    size -= len(piece)
                    yield piece
                f.readline(1024)
        else:
            left = int(headers.get("content-length") or 0)
            while left:
                piece = f.read1(min(left, 65536))
                if not piece:
                    raise EOFError("the body ended %d bytes early" % left)
                left -= len(piece)
                yield piece

    def _sink(self, c, f, headers, rate):
        if headers.get("expect", "").lower() == "100-continue":
            c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        start = time.monotonic()
        got = 0
        bad = None
        for piece in self._body(f, headers):
            off = got % len(PATTERN)
            if bad is None and piece != PATTERN2[off:off + len(piece)]:
                bad = got
            got += len(piece)
            self.received += len(piece)
            ahead = got / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        self._answer(c, 200, json.dumps({"length": got, "bad_offset": bad}).encode())


class Watch(RssSampler):
    """Samples the gateway's VmRSS and the bytes in flight (produced() - consumed())
    every SAMPLE_S seconds in a thread, and the largest socket buffers `ss` shows (rb,
    tb of any TCP socket in the namespace) every half second."""

    def __init__(self, pid, produced, consumed):
        super().__init__(pid, SAMPLE_S)
        self.produced = produced
        self.consumed = consumed
        self.rss_max = 0
        self.in_flight_max = 0
        self.rb_max = 0
        self.tb_max = 0
        self.samples = 0
        self._next_ss = 0

    def sample(self):
        try:
            rss = proc_memory(self.pid)["VmRSS"] * 1024
        except (OSError, KeyError):
            return False
        consumed = self.consumed()  # first: both only grow, so this never undercounts
        self.in_flight_max = max(self.in_flight_max, self.produced() - consumed)
        self.rss_max = max(self.rss_max, rss)
        self.samples += 1
        if time.monotonic() >= self._next_ss:
            self._next_ss = time.monotonic() + 0.5
            out = subprocess.run(["ss", "-tmnH"], capture_output=True, text=True).stdout
            for rb, tb in re.findall(r"skmem:\(r\d+,rb(\d+),t\d+,tb(\d+)", out):
                self.rb_max = max(self.rb_max, int(rb))
                self.tb_max = max(self.tb_max, int(tb))
        return True


class BoundedOutputTest(GatewayTest):
    """Each test: a fresh upstream and gateway, a small warm-up transfer of the same kind,
    the baseline RSS, then the big transfer with a slow consumer, watched."""

    figures = []  # printed at the end of the run

    @classmethod
    def setUpClass(cls):
        if NETNS_PROBLEM:
            raise unittest.SkipTest(NETNS_PROBLEM)
        setup_netns()

    @classmethod
    def tearDownClass(cls):
        if cls.figures:
            print("\n" + "\n".join(cls.figures), file=sys.stderr, flush=True)

    def setUp(self):
        super().setUp()
        self.up = SlowUpstream()
        self.addCleanup(self.up.close)
        self.g = self.proxy_gateway(self.up.url, "read-timeout = 120\n", env=ASAN_ENV)
        self.rss_start = self.rss()
        self.client_got = 0  # body bytes the client has read (downloads)
        self.client_sent = 0  # body bytes the client has written (uploads)

    def rss(self):
        return proc_memory(self.g.proc.pid)["VmRSS"] * 1024

    @contextlib.contextmanager
    def watched(self, what, produced, consumed):
        """Runs the block (the big transfer) under a Watch; prints the figures, then
        fails if the RSS grew by RSS_BOUND_MIB or more over the baseline taken just
        before, or the bytes in flight reached IN_FLIGHT_BOUND_MIB."""
        mem = proc_memory(self.g.proc.pid)
        warm, hwm_before = mem["VmRSS"] * 1024, mem["VmHWM"] * 1024
        t0 = time.monotonic()
        w = Watch(self.g.proc.pid, produced, consumed)
        try:
            with w:
                yield w
        finally:
            # a peak between two samples still shows in VmHWM when it is a new one
            hwm = proc_memory(self.g.proc.pid)["VmHWM"] * 1024
            if hwm > hwm_before:
                w.rss_max = max(w.rss_max, hwm)
            self.report(what, time.monotonic() - t0, warm, w)
        growth = (w.rss_max - warm) / MiB
        self.assertGreater(w.samples, 10, "too few samples of the gateway's memory")
        self.assertLess(growth, RSS_BOUND_MIB,
                        "%s: the gateway's RSS grew by %.1f MiB" % (what, growth))
        self.assertLess(w.in_flight_max, IN_FLIGHT_BOUND_MIB * MiB,
                        "%s: %.1f MiB were produced and not yet consumed at one point: the "
                        "gateway read ahead of its consumer" % (what, w.in_flight_max / MiB))

    def report(self, what, took, warm, w):
        mem = proc_memory(self.g.proc.pid)
        growth = (w.rss_max - warm) / MiB
        line = ("    %s: %.1f s; RSS start %.1f, warm %.1f, max %.1f, after %.1f MiB (VmHWM "
                "%.1f): growth %.1f MiB (bound %d); in flight max %.2f MiB (bound %d); "
                "kernel rb<=%d tb<=%d; %d samples"
                % (what, took, self.rss_start / MiB, warm / MiB, w.rss_max / MiB,
                   mem["VmRSS"] / 1024, mem["VmHWM"] / 1024, growth, RSS_BOUND_MIB,
                   w.in_flight_max / MiB, IN_FLIGHT_BOUND_MIB, w.rb_max, w.tb_max, w.samples))
        print("\n" + line, file=sys.stderr, flush=True)
        type(self).figures.append(line)

    def curl(self, *args):
        return ["curl", "-sS", "-k", "--max-time", str(int(120 * SLOW))] + list(args)

    def upstream_errors(self):
        return "; upstream: %s" % self.up.errors if self.up.errors else ""

    # ----- downloads: curl --limit-rate reads slowly, the upstream sends at full speed -----

    def curl_download(self, size, chunked, rate=None):
        """curl downloads /big through the gateway (at rate bytes/s when given); every
        byte is checked here as it comes, and counted in self.client_got."""
        path = "/big?bytes=%d%s" % (size, "&chunked=1" if chunked else "")
        args = ["--limit-rate", str(rate)] if rate else []
        err = os.path.join(self.tmp, "curl.err")
        with open(err, "wb") as errf:
            p = subprocess.Popen(self.curl(*args, "-o", "-", self.g.url(path)),
                                 stdout=subprocess.PIPE, stderr=errf)
        got = 0
        bad = None
        try:
            while True:
                block = p.stdout.read(len(PATTERN))
                if not block:
                    break
                off = got % len(PATTERN)
                if bad is None and block != PATTERN2[off:off + len(block)]:
                    bad = got
                got += len(block)
                self.client_got += len(block)
        finally:
            p.stdout.close()
            rc = p.wait()
        with open(err) as f:
            msg = f.read()
        self.assertEqual(rc, 0, "curl failed: %s%s" % (msg, self.upstream_errors()))
        self.assertEqual(got, size, "wrong body length" + self.upstream_errors())
        self.assertIsNone(bad, "wrong bytes in the body at offset %s" % bad)

    def check_download(self, chunked):
        kind = "chunked" if chunked else "sized"
        self.curl_download(WARM, chunked)
        with self.watched("download %d MiB %s, reader at %d MiB/s"
                          % (SIZE // MiB, kind, DOWN_RATE // MiB),
                          lambda: self.up.sent, lambda: self.client_got):
            self.curl_download(SIZE, chunked, DOWN_RATE)

    def test_download_sized(self):
        self.check_download(chunked=False)

    def test_download_chunked(self):
        self.check_download(chunked=True)

    # ----- uploads: the client sends at full speed, the upstream reads slowly -----

    def sink_path(self, rate):
        return "/sink?rate=%d" % rate

    def python_upload(self, size, rate):
        """A sized PUT of size bytes of PATTERN from a streaming TLS client, as fast as the
        gateway takes them; returns the upstream's JSON answer."""
        s = self.g.tls_socket(timeout=60)
        try:
            s.sendall(b"PUT %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream"
                      b"\r\nContent-Length: %d\r\n\r\n" % (self.sink_path(rate).encode(), size))
            left = size
            while left:
                n = min(left, len(PATTERN))
                s.sendall(PATTERN if n == len(PATTERN) else PATTERN[:n])
                self.client_sent += n
                left -= n
            with s.makefile("rb") as f:
                status, _, body = read_http_response(f)
        finally:
            s.close()
        self.assertEqual(status, 200, body[:500])
        return json.loads(body)

    def curl_upload(self, size, rate):
        """curl -T - (chunked) of size bytes of PATTERN written to its standard input as
        fast as it takes them; returns the upstream's JSON answer."""
        err = os.path.join(self.tmp, "curl.err")
        with open(err, "wb") as errf:
            p = subprocess.Popen(self.curl("-T", "-", self.g.url(self.sink_path(rate))),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf)
        out = b""
        try:
            left = size
            while left:
                n = min(left, len(PATTERN))
                p.stdin.write(PATTERN if n == len(PATTERN) else PATTERN[:n])
                self.client_sent += n
                left -= n
            p.stdin.close()
            out = p.stdout.read()
        finally:
            for pipe in (p.stdin, p.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            rc = p.wait()
        with open(err) as f:
            msg = f.read()
        self.assertEqual(rc, 0, "curl failed: %s%s" % (msg, self.upstream_errors()))
        return json.loads(out)

    def check_upload(self, upload, kind):
        self.assertEqual(upload(WARM, 1 << 40), {"length": WARM, "bad_offset": None})
        answer = None
        with self.watched("upload %d MiB %s, upstream reading at %d MiB/s"
                          % (SIZE // MiB, kind, UP_RATE // MiB),
                          lambda: self.client_sent, lambda: self.up.received):
            answer = upload(SIZE, UP_RATE)
        self.assertEqual(answer, {"length": SIZE, "bad_offset": None},
                         "the upstream did not get every byte" + self.upstream_errors())

    def test_upload_sized(self):
        self.check_upload(self.python_upload, "sized")

    def test_upload_chunked(self):
        self.check_upload(self.curl_upload, "chunked (curl -T -)")


if __name__ == "__main__":
    if not IN_NETNS:
        NETNS_PROBLEM = reexec_in_netns()  # returns only when it cannot
    main()
