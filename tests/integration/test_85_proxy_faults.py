"""Layer 85: faults around a proxied exchange (issue 9).

Each side of a proxied exchange is cut -- a TCP reset (SO_LINGER {1, 0}, then close) or a
clean close (close_notify and FIN for the TLS client, FIN for the upstream) -- at every
phase: during the request head, a sized and a chunked upload, after Expect: 100-continue,
while the upstream takes its time, during the answer's head, during a sized, a chunked and
a close-delimited answer, between pipelined requests, and on a pooled keep-alive
connection that dies on reuse or while idle; the upstream also stalls (504). Then:

* the gateway lives on: its process runs (else the test fails with "gateway died: exit
  code -11 (SIGSEGV)" and the tail of its stderr, or the AddressSanitizer report);
* it serves the next client: a normal proxied GET gets the whole answer;
* it leaks no upstream connection: the upstream (fault_upstream.py) counts its open
  sockets, and they settle at no busy one (every try of every request ends: answered,
  cut on purpose, or closed by the gateway) and at most max-connections per worker thread
  idle (the pool); and no client connection: the gateway's descriptors (/proc/PID/fd)
  settle back to what it had before the case plus its pooled upstream connections;
* the access log has the right line for each request: 499 for a client that went away
  before the answer's status (the status already sent, 200, once it was sent: the code
  logs what it sent, README's table says 499; both are accepted then), 502 for an upstream
  that broke the exchange before its answer's head, 504 for one that stalled (after the
  head: the status sent, or 502/504), and no line, 400, 408 or 499 for a request whose head
  never came in full;
* the client gets the right answer: 502 for an upstream that broke before its answer's
  head (also when the client was still sending its body: the gateway must let it read the
  502); for an upstream that broke off its answer, the head and a truncated body (or a 502
  when the reset lost the head), never a complete-looking answer and never nothing at all
  (that is indistinguishable from a network failure); a close-delimited answer ended by a
  clean close is complete; and it gets it at once: a client that waits more than 5 s (the
  read-timeout is 30 s) after the upstream broke fails.

Each case runs in a loop, three iterations at a time, up to 100 iterations or until its
time budget (CERTGATE_FAULT_BUDGET seconds, default 1.5, times SLOW) is used, and at least
a handful of times, so that a race shows. Then a sweep: the client resets after N bytes of
a 2 MB chunked answer (500 chunks of 4 KiB), for 200 values of N, with the upstream pool
warm and cold; and issue 9's reproduction: 300 TLS clients, four at a time, each reading
about 2 MB of GET / (2,000 chunks of 4 KiB) and then resetting.
"""
import collections
import concurrent.futures
import os
import random
import re
import socket
import ssl
import sys
import threading
import time
import traceback
import urllib.parse

from fault_upstream import BIG, FaultUpstream, REPRO_SIZE
from harness import (GatewayTest, SLOW, clean_close, client_context, death_report, main,
                     read_text, reset_close)

BUDGET = float(os.environ.get("CERTGATE_FAULT_BUDGET") or 1.5) * SLOW  # seconds per case
MAX_ITER = 100
MIN_ITER = 6
PARALLEL = 3
THREADS = 2
MAX_CONN = 2  # max-connections: idle pooled connections per worker thread
MODES = ("reset", "close")
KiB = 1024
MiB = 1024 * 1024
SETTLE = 5 * SLOW  # seconds for the connections to settle after a case
FD_SLACK = 2  # descriptors the gateway may open besides connections (none known)
# an answer larger than the gateway's buffers; a small receive buffer at the client (half
# the iterations) holds the gateway back so that the cut finds it in the middle of it
ANSWER = 4 * MiB
CTX = client_context()
ACCESS_RE = re.compile(r'"(?P<method>\S+) (?P<target>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) '
                       r'(?P<secs>\d+\.\d{3}) (?P<up>\S+)$')


def cut(sock, mode):
    if mode == "reset":
        reset_close(sock)
    else:
        clean_close(sock)


def pattern(n, start=0):
    return BIG[start:start + n]


class Expect:
    """What one request must leave behind.

    statuses: the access-log statuses allowed; count: how many lines (None: 0 or 1);
    upstream: False when the request must never reach the upstream; max_tries: how many
    tries the upstream may see (a GET without a body is retried once, after a pooled
    connection broke; other requests never); None: not checked."""

    def __init__(self, rid, statuses, count=1, upstream=True, max_tries=2):
        self.id = rid
        self.statuses = set(statuses)
        self.count = count
        self.upstream = upstream
        self.max_tries = max_tries


class Reader:
    """HTTP/1.1 answers from a TLS socket, tolerant of a connection that ends early."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b""
        self.eof = None  # why the connection ended, once it did
        self.send_error = None

    def _fill(self):
        if self.eof:
            return False
        try:
            data = self.s.recv(256 * KiB)
        except socket.timeout:
            raise AssertionError("neither an answer nor the end of the connection within "
                                 "%.0f s (got %r...)" % (self.s.gettimeout(), self.buf[:200]))
        except (ConnectionError, ssl.SSLError) as e:
            self.eof = "%s: %s" % (type(e).__name__, e)
            return False
        if not data:
            self.eof = "end of stream"
            return False
        self.buf += data
        return True

    def head(self):
        """(status, {lower-case name: value}), or (None, None) when the connection ended
        before a whole header block."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                return None, None
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers

    def _take(self, n):
        while len(self.buf) < n:
            if not self._fill():
                break
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _line(self):
        while b"\r\n" not in self.buf:
            if not self._fill():
                return None
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def response(self, head_only=False):
        """One final answer (1xx skipped): (status, headers, body, complete), where
        complete says its framing ended properly. status None: no answer at all."""
        while True:
            status, headers = self.head()
            if status is None or status >= 200:
                break
        if status is None or head_only:
            return status, headers, b"", status is not None
        if "content-length" in headers:
            n = int(headers["content-length"])
            body = self._take(n)
            return status, headers, body, len(body) == n
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                line = self._line()
                if line is None:
                    return status, headers, b"".join(parts), False
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while True:
                        t = self._line()
                        if t is None:
                            return status, headers, b"".join(parts), False
                        if t == b"":
                            return status, headers, b"".join(parts), True
                data = self._take(size)
                parts.append(data)
                if len(data) < size or self._line() is None:
                    return status, headers, b"".join(parts), False
        while self._fill():  # close-delimited
            pass
        body, self.buf = self.buf, b""
        return status, headers, body, True


class FaultTest(GatewayTest):
    """One fault upstream and one gateway (THREADS workers, max-connections MAX_CONN) per
    test; run_case loops an iteration and then checks what every case must leave."""

    # read-timeout: far above SETTLE, so that a connection the gateway forgets is not
    # cleaned up by its timer before the leak check looks
    conf_extra = "max-connections = %d\nread-timeout = 30\n" % MAX_CONN
    pool_bound = THREADS * MAX_CONN

    def setUp(self):
        super().setUp()
        self.up = FaultUpstream()
        self.up.start()
        self.addCleanup(self.up.stop)
        self.g = self.proxy_gateway(self.up.url, self.conf_extra, threads=THREADS)
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._dirty = False  # a case failed: its leftovers are not held against the next
        # the gateway's descriptors besides its upstream connections, once it has served a
        # request (anything opened lazily is open then)
        self.check_served("warm-up", close=True)  # (leaves the pool empty)
        time.sleep(0.2)
        self.base_fds = self.gateway_fds() - self.up.stats()["open"]

    def new_id(self, tag):
        with self._seq_lock:
            self._seq += 1
            return "%s-%d" % (tag, self._seq)

    def connect(self, timeout=10, rcvbuf=None):
        """A TLS connection to the gateway; rcvbuf: a small receive buffer (SO_RCVBUF, set
        before connecting) holds the gateway back, so that a cut finds it in the middle of
        an answer instead of done with writing it into socket buffers."""
        s = socket.socket()
        try:
            s.settimeout(timeout * SLOW)
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.connect(("127.0.0.1", self.g.port))
            return CTX.wrap_socket(s)
        except BaseException:
            s.close()
            raise

    # ----- what every case must leave -----

    def assertAlive(self, what):
        report = death_report(self.g)
        if report:
            self.fail("%s: %s" % (what, report))

    def wait_upstream(self, rid, predicate, what, timeout=10):
        rec = self.up.wait_record(rid, predicate, timeout * SLOW)
        if rec is None:
            self.assertAlive(what)
            raise AssertionError("%s: the upstream never saw it: %r" % (what, self.up.records(rid)))
        return rec

    def access_by_id(self):
        """{request id: [(status, bytes, line)]} from the access log."""
        text = read_text(self.g.access_path) if os.path.exists(self.g.access_path) else ""
        out = collections.defaultdict(list)
        for line in text.splitlines():
            m = ACCESS_RE.search(line)
            if not m:
                continue
            target = m.group("target")
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
            rid = q["id"][0] if "id" in q else target
            out[rid].append((int(m.group("status")), int(m.group("bytes")), line))
        return out

    def check_log(self, name, expects):
        required = [e for e in expects if e.count]
        deadline = time.time() + 5 * SLOW
        while True:
            lines = self.access_by_id()
            missing = [e for e in required if len(lines.get(e.id, ())) < e.count]
            if not missing or time.time() > deadline:
                break
            time.sleep(0.1)
        if any(e.count is None for e in expects):
            time.sleep(0.4)  # a line that may come comes with the next flush (250 ms)
            lines = self.access_by_id()
        bad = []
        for e in expects:
            got = lines.get(e.id, [])
            if e.count is None and len(got) > 1 or e.count and len(got) != e.count:
                bad.append("%s: %d access-log lines, expected %s:\n      %s" % (
                    e.id, len(got), e.count if e.count else "at most 1",
                    "\n      ".join(l for _, _, l in got[:3])))
                continue
            for status, _, line in got:
                if status not in e.statuses:
                    bad.append("%s: status %d, expected one of %s: %s" % (
                        e.id, status, sorted(e.statuses), line))
                    break
            recs = self.up.records(e.id)
            if not e.upstream and recs:
                bad.append("%s reached the upstream: %r" % (e.id, recs))
            if e.max_tries is None:
                continue
            if e.upstream and len(recs) > e.max_tries:
                bad.append("%s: the upstream saw %d tries, at most %d allowed: %r" % (
                    e.id, len(recs), e.max_tries, recs))
            if len(recs) == 2 and recs[0].reqno == 1:
                bad.append("%s: retried although its first try was on a new connection: %r"
                           % (e.id, recs))
        if bad:
            self.fail("%s: %d of %d requests wrong in the access log or at the upstream:\n  %s"
                      % (name, len(bad), len(expects), "\n  ".join(bad[:12])))

    def settle(self, name, leftover=frozenset()):
        """No upstream connection busy, at most the pool's bound open. leftover: busy
        connections from before the case (an earlier case failed), not held against it."""
        bound = self.pool_bound + len(leftover)

        def settled():
            return not (self.up.busy_conns - leftover) and self.up.open <= bound
        ok = self.up.wait(settled, SETTLE)
        if not ok:
            self.assertAlive(name)
            stuck = self.up.in_progress()
            st = self.up.stats()
            busy = sorted(set(st.pop("busy_conns")) - leftover)
            self.fail("%s: upstream connections left behind after %.0f s: %s, busy now: %d "
                      "(e.g. numbers %s), at most %d may stay open (idle, pooled); requests "
                      "still in progress at the upstream: %r"
                      % (name, SETTLE, st, len(busy), busy[:8], bound, stuck[:10]))
        self.assertEqual(self.up.errors, [], "errors inside the fault upstream")
        # and the gateway holds no client connection any more (a lingering close ends within
        # 2 s), nor an upstream connection the upstream does not know as open
        def extra():
            return self.gateway_fds() - self.up.stats()["open"] - self.base_fds
        deadline = time.time() + SETTLE
        while extra() > FD_SLACK and time.time() < deadline:
            time.sleep(0.05)
        if extra() > FD_SLACK:
            self.assertAlive(name)
            self.fail("%s: the gateway holds %d descriptors more than before the case (beyond "
                      "its pooled upstream connections): %s"
                      % (name, extra(), self.gateway_fd_kinds()))

    def gateway_fds(self):
        try:
            return len(os.listdir("/proc/%d/fd" % self.g.proc.pid))
        except OSError:  # it died
            return 0

    def gateway_fd_kinds(self):
        kinds = collections.Counter()
        folder = "/proc/%d/fd" % self.g.proc.pid
        for n in os.listdir(folder):
            try:
                kinds[re.sub(r"\[\d+\]", "", os.readlink(os.path.join(folder, n)))] += 1
            except OSError:
                pass
        return dict(kinds)

    def check_served(self, name, close=False):
        rid = self.new_id("check")
        size = 100 * KiB
        try:
            status, _, body = self.g.request("GET", "/f?id=%s&size=%d%s"
                                             % (rid, size, "&close=1" if close else ""),
                                             timeout=10)
        except Exception as e:  # noqa: BLE001
            self.assertAlive(name + ", the next client")
            raise AssertionError("%s: the next client got %s: %s" % (name, type(e).__name__, e))
        self.assertEqual(status, 200, "%s: the next client got %d %r" % (name, status, body[:200]))
        self.assertTrue(body == pattern(size), "%s: the next client got a wrong body" % name)

    def run_case(self, name, iteration, parallel=PARALLEL, budget=None, max_iter=MAX_ITER,
                 min_iter=MIN_ITER):
        """Runs iteration(i) (returns a list of Expect) `parallel` at a time, up to max_iter
        times or until the budget is used (but at least min_iter times), then checks that
        the gateway lives, the access log, the upstream's connections and the next client."""
        self.assertAlive(name + " (before it started)")
        # what an earlier case that failed may have left busy (waited for a little)
        self.up.wait(lambda: not self.up.busy_conns, 2 * SLOW)
        leftover = frozenset(self.up.stats()["busy_conns"])
        if self._dirty:  # an earlier case failed: judge this one from what is open now
            self.base_fds = max(self.base_fds, self.gateway_fds() - self.up.stats()["open"])
        self._dirty = True
        budget = BUDGET if budget is None else budget
        t0 = time.time()
        expects, errors = [], []
        done = 0
        with concurrent.futures.ThreadPoolExecutor(parallel) as ex:
            running = set()
            i = 0
            while True:
                while (len(running) < parallel and i < max_iter and not errors and
                       (i < min_iter or time.time() - t0 < budget)):
                    running.add(ex.submit(iteration, i))
                    i += 1
                if not running:
                    break
                finished, running = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED)
                for f in finished:
                    try:
                        expects.extend(f.result())
                        done += 1
                    except Exception:  # noqa: BLE001
                        errors.append(traceback.format_exc())
        took = time.time() - t0
        self.assertAlive("%s, after %d iterations" % (name, done))
        if errors:
            self.fail("%s: %d iteration(s) failed; the first:\n%s" % (name, len(errors),
                                                                      errors[0]))
        self.check_log(name, expects)
        self.settle(name, leftover)
        self.check_served(name)
        print("\n    %s: %d iterations in %.1f s" % (name, done, took), file=sys.stderr,
              flush=True)
        self._dirty = False
        return done

    def each_mode(self, fn):
        for mode in MODES:
            with self.subTest(mode=mode):
                fn(mode)


class ClientFaultTest(FaultTest):
    """The TLS client resets or closes at each phase of the exchange."""

    def test_during_request_head(self):
        def case(mode):
            def it(i):
                rid = self.new_id("c-head-" + mode)
                s = self.connect()
                s.sendall(b"GET /f?id=%s HTTP/1.1\r\nHost: x\r\nX-Pad: %s"
                          % (rid.encode(), b"p" * random.randrange(0, 4000)))
                if i % 2:
                    time.sleep(random.uniform(0, 0.005))
                cut(s, mode)
                return [Expect(rid, {400, 408, 499}, count=None, upstream=False)]
            self.run_case("client %s during the request head" % mode, it)
        self.each_mode(case)

    def _upload(self, mode, chunked, expect_continue=False):
        def it(i):
            rid = self.new_id("c-up-" + mode)
            s = self.connect()
            head = b"POST /f?id=%s HTTP/1.1\r\nHost: x\r\n" % rid.encode()
            head += b"Transfer-Encoding: chunked\r\n" if chunked else \
                b"Content-Length: %d\r\n" % MiB
            if expect_continue:
                head += b"Expect: 100-continue\r\n"
            s.sendall(head + b"\r\n")
            if expect_continue:
                status, _ = Reader(s).head()
                if status != 100:
                    raise AssertionError("%s: no 100 Continue, got %r" % (rid, status))
                if i % 2 == 0:  # go away without sending any body
                    self.wait_upstream(rid, lambda r: r.head_done, rid)
                    cut(s, mode)
                    return [Expect(rid, {499}, max_tries=1)]
            k = random.randrange(1, 256 * KiB)
            if chunked:
                off = 0
                while off < k:
                    n = min(k - off, random.randrange(1, 64 * KiB))
                    s.sendall(b"%x\r\n" % n + pattern(n, off) + b"\r\n")
                    off += n
            else:
                s.sendall(pattern(k))
            self.wait_upstream(rid, lambda r: r.body_read >= k, rid)
            cut(s, mode)
            return [Expect(rid, {499}, max_tries=1)]
        return it

    def test_during_sized_upload(self):
        self.each_mode(lambda mode: self.run_case(
            "client %s during a sized upload" % mode, self._upload(mode, chunked=False)))

    def test_during_chunked_upload(self):
        self.each_mode(lambda mode: self.run_case(
            "client %s during a chunked upload" % mode, self._upload(mode, chunked=True)))

    def test_after_expect_100_continue(self):
        self.each_mode(lambda mode: self.run_case(
            "client %s after Expect: 100-continue" % mode,
            self._upload(mode, chunked=False, expect_continue=True)))

    def test_while_the_upstream_takes_its_time(self):
        def case(mode):
            def it(i):
                rid = self.new_id("c-wait-" + mode)
                s = self.connect()
                s.sendall(b"GET /f?id=%s&delay=60 HTTP/1.1\r\nHost: x\r\n\r\n" % rid.encode())
                self.wait_upstream(rid, lambda r: r.body_done, rid)
                time.sleep(random.uniform(0, 0.01))
                cut(s, mode)
                return [Expect(rid, {499})]
            self.run_case("client %s while the upstream delays" % mode, it)
        self.each_mode(case)

    def _during_answer(self, mode, ans):
        def it(i):
            rid = self.new_id("c-ans-%s-%s" % (ans, mode))
            s = self.connect(rcvbuf=64 * KiB if i % 2 else None)
            s.sendall(b"GET /f?id=%s&ans=%s&size=%d HTTP/1.1\r\nHost: x\r\n\r\n"
                      % (rid.encode(), ans.encode(), ANSWER))
            want = random.choice((1, random.randrange(1, 64 * KiB),
                                  random.randrange(1, 3 * MiB // 2)))
            got = 0
            while got < want:
                data = s.recv(256 * KiB)
                if not data:
                    raise AssertionError("%s: the connection ended after %d bytes" % (rid, got))
                got += len(data)
            cut(s, mode)
            # the status line was sent: 200 is logged today; 499 would be fine too
            return [Expect(rid, {200, 499})]
        return it

    def test_during_sized_answer(self):
        self.each_mode(lambda mode: self.run_case(
            "client %s during a sized answer" % mode, self._during_answer(mode, "sized")))

    def test_during_chunked_answer(self):
        self.each_mode(lambda mode: self.run_case(
            "client %s during a chunked answer" % mode, self._during_answer(mode, "chunked")))

    def test_during_close_delimited_answer(self):
        self.each_mode(lambda mode: self.run_case(
            "client %s during a close-delimited answer" % mode,
            self._during_answer(mode, "eof")))

    def test_between_pipelined_requests(self):
        def case(mode):
            def it(i):
                r1, r2 = self.new_id("c-pipe1-" + mode), self.new_id("c-pipe2-" + mode)
                size = random.randrange(1, 200 * KiB)
                s = self.connect()
                s.sendall(b"GET /f?id=%s&size=%d HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"GET /f?id=%s&delay=60 HTTP/1.1\r\nHost: x\r\n\r\n"
                          % (r1.encode(), size, r2.encode()))
                status, _, body, complete = Reader(s).response()
                if (status, complete, body == pattern(size)) != (200, True, True):
                    raise AssertionError("%s: the first answer was %r, complete %s, %d bytes"
                                         % (r1, status, complete, len(body)))
                if i % 2 == 0:  # once the second request is at the upstream; else at once
                    self.wait_upstream(r2, lambda r: r.body_done, r2)
                cut(s, mode)
                # the second request is in the gateway's buffer already (same TLS record):
                # it is parsed as soon as the first is answered, so it gets its line
                return [Expect(r1, {200}), Expect(r2, {499})]
            self.run_case("client %s between pipelined requests" % mode, it)
        self.each_mode(case)


class UpstreamFaultTest(FaultTest):
    """The upstream resets or closes at each phase of the exchange."""

    # The gateway notices an upstream that breaks at once: a client that waits for more than
    # CUT_WAIT seconds (the read-timeout is 30 s) fails.
    CUT_WAIT = 5

    def connect(self, timeout=CUT_WAIT, rcvbuf=None):
        return super().connect(timeout, rcvbuf)

    @staticmethod
    def cutq(mode):
        """cut=mode, and for half of the resets nodrain=1: the bytes sent before arrive
        together with the reset (one wake-up of the gateway) instead of before it."""
        return "cut=%s%s" % (mode, "&nodrain=1" if mode == "reset" and random.random() < 0.5
                             else "")

    def _get(self, rid, query, extra_head=b""):
        """GET /f?id=rid&query on a new connection; (status, headers, body, complete, how
        the connection ended)."""
        s = self.connect()
        try:
            s.sendall(b"GET /f?id=%s&%s HTTP/1.1\r\nHost: x\r\n%s\r\n"
                      % (rid.encode(), query.encode(), extra_head))
            rd = Reader(s)
            return rd.response() + (rd.eof,)
        except AssertionError as e:
            raise AssertionError("%s: %s; the upstream saw: %r" % (rid, e, self.up.records(rid)))
        finally:
            s.close()

    def expect_502(self, rid, query, extra_head=b"", max_tries=2):
        status, _, body, _, eof = self._get(rid, query, extra_head)
        if status != 502:
            raise AssertionError("%s: expected 502, got %r %r (connection: %s)"
                                 % (rid, status, body[:300], eof))
        return [Expect(rid, {502}, max_tries=max_tries)]

    def test_during_request_head(self):
        def case(mode):
            def it(i):
                rid = self.new_id("u-head-" + mode)
                pad = b"X-Pad: %s\r\n" % (b"p" * random.randrange(0, 8000))
                return self.expect_502(rid, "%s&at=head" % self.cutq(mode), pad)
            self.run_case("upstream %s during the request head" % mode, it)
        self.each_mode(case)

    def _upload(self, mode, chunked, expect_continue=False):
        def it(i):
            rid = self.new_id("u-up-" + mode)
            at = "head" if expect_continue and i % 2 else "body"
            k = random.randrange(1, 128 * KiB)
            s = self.connect()
            try:
                head = b"POST /f?id=%s&cut=%s&at=%s&after=%d HTTP/1.1\r\nHost: x\r\n" % (
                    rid.encode(), mode.encode(), at.encode(), k)
                head += b"Transfer-Encoding: chunked\r\n" if chunked else \
                    b"Content-Length: %d\r\n" % MiB
                if expect_continue:
                    head += b"Expect: 100-continue\r\n"
                s.sendall(head + b"\r\n")
                rd = Reader(s)
                if expect_continue:
                    status, _ = rd.head()
                    if status != 100:
                        raise AssertionError("%s: no 100 Continue, got %r" % (rid, status))
                if at == "body":
                    n = k + random.randrange(0, 64 * KiB)
                    try:
                        if chunked:
                            s.sendall(b"%x\r\n" % n + pattern(n) + b"\r\n")
                        else:
                            s.sendall(pattern(n))
                    except (ConnectionError, ssl.SSLError) as e:
                        # the 502 may come before the body is sent: it must still be read
                        rd.send_error = e
                status, _, body, _ = rd.response()
            finally:
                s.close()
            if status != 502:
                raise AssertionError("%s: expected 502, got %r %r (connection: %s; sending the "
                                     "body: %s)" % (rid, status, body[:300], rd.eof,
                                                    rd.send_error or "fine"))
            return [Expect(rid, {502}, max_tries=1)]
        return it

    def test_during_sized_upload(self):
        self.each_mode(lambda mode: self.run_case(
            "upstream %s during a sized upload" % mode, self._upload(mode, chunked=False)))

    def test_during_chunked_upload(self):
        self.each_mode(lambda mode: self.run_case(
            "upstream %s during a chunked upload" % mode, self._upload(mode, chunked=True)))

    def test_after_expect_100_continue(self):
        self.each_mode(lambda mode: self.run_case(
            "upstream %s after Expect: 100-continue" % mode,
            self._upload(mode, chunked=False, expect_continue=True)))

    def test_instead_of_answering(self):
        def case(mode):
            def it(i):
                rid = self.new_id("u-wait-" + mode)
                delay = random.choice((0, random.uniform(0, 0.02)))
                return self.expect_502(rid, "%s&at=wait&delay=%.4f" % (self.cutq(mode), delay))
            self.run_case("upstream %s instead of answering" % mode, it)
        self.each_mode(case)

    def test_during_answer_head(self):
        self.each_mode(lambda mode: self.run_case(
            "upstream %s during the answer's head" % mode,
            lambda i: self.expect_502(self.new_id("u-rhead-" + mode),
                                      "%s&at=resphead" % self.cutq(mode))))

    def _during_answer(self, mode, ans):
        size = 2 * MiB

        def it(i):
            rid = self.new_id("u-ans-%s-%s" % (ans, mode))
            after = random.choice((0, random.randrange(0, 64 * KiB), random.randrange(0, size)))
            status, headers, body, complete, eof = self._get(
                rid, "ans=%s&size=%d&%s&at=answer&after=%d" % (ans, size, self.cutq(mode), after))
            if ans == "eof" and mode == "close":
                # the end of the connection is the end of a close-delimited body: a whole
                # answer of `after` bytes
                if (status, complete, body == pattern(after)) != (200, True, True):
                    raise AssertionError("%s: a close-delimited answer of %d bytes came as "
                                         "%r, complete %s, %d bytes"
                                         % (rid, after, status, complete, len(body)))
                return [Expect(rid, {200})]
            if status == 200:
                if complete:
                    raise AssertionError("%s: the upstream broke off after %d bytes, but the "
                                         "client got a complete answer of %d bytes"
                                         % (rid, after, len(body)))
                if body != pattern(len(body)):
                    raise AssertionError("%s: wrong bytes in the answer" % rid)
            elif status is None:
                raise AssertionError("%s: the connection ended without any answer (%s): "
                                     "neither a 502 nor the start of the answer the upstream "
                                     "had sent (its head and %d bytes of body)"
                                     % (rid, eof, after))
            elif status != 502:
                raise AssertionError("%s: got %r" % (rid, status))
            # (a GET whose head was dropped that way is retried when its connection was
            # a pooled one)
            return [Expect(rid, {200, 502})]
        return it

    def test_during_sized_answer(self):
        self.each_mode(lambda mode: self.run_case(
            "upstream %s during a sized answer" % mode, self._during_answer(mode, "sized")))

    def test_during_chunked_answer(self):
        self.each_mode(lambda mode: self.run_case(
            "upstream %s during a chunked answer" % mode, self._during_answer(mode, "chunked")))

    def test_during_close_delimited_answer(self):
        self.each_mode(lambda mode: self.run_case(
            "upstream %s during a close-delimited answer" % mode,
            self._during_answer(mode, "eof")))

    def test_between_pipelined_requests(self):
        def case(mode):
            def it(i):
                r1, r2 = self.new_id("u-pipe1-" + mode), self.new_id("u-pipe2-" + mode)
                size = random.randrange(1, 200 * KiB)
                at = "wait" if i % 2 == 0 else "resphead"
                s = self.connect()
                try:
                    s.sendall(b"GET /f?id=%s&size=%d HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"GET /f?id=%s&%s&at=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                              % (r1.encode(), size, r2.encode(), self.cutq(mode).encode(),
                                 at.encode()))
                    rd = Reader(s)
                    first = rd.response()
                    second = rd.response()
                finally:
                    s.close()
                if (first[0], first[3], first[2] == pattern(size)) != (200, True, True):
                    raise AssertionError("%s: the first answer was %r, complete %s"
                                         % (r1, first[0], first[3]))
                if second[0] != 502:
                    raise AssertionError("%s: expected 502, got %r %r"
                                         % (r2, second[0], second[2][:300]))
                return [Expect(r1, {200}), Expect(r2, {502})]
            self.run_case("upstream %s between pipelined requests" % mode, it)
        self.each_mode(case)

    def test_pooled_connection_dies_on_reuse(self):
        """The upstream cuts a request that comes on a connection it answered before: a GET
        is retried on a new connection (200); a POST is not (502), and is sent once."""
        def case(mode):
            def it(i):
                r1, r2, r3 = (self.new_id("u-reuse%d-%s" % (n, mode)) for n in (1, 2, 3))
                s = self.connect()
                try:
                    rd = Reader(s)
                    s.sendall(b"GET /f?id=%s&size=1000 HTTP/1.1\r\nHost: x\r\n\r\n" % r1.encode())
                    first = rd.response()
                    s.sendall(b"GET /f?id=%s&size=1000&reuse=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                              % (r2.encode(), mode.encode()))
                    second = rd.response()
                    s.sendall(b"POST /f?id=%s&size=1000&reuse=%s HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: 0\r\n\r\n" % (r3.encode(), mode.encode()))
                    third = rd.response()
                finally:
                    s.close()
                for rid, resp in ((r1, first), (r2, second)):
                    if (resp[0], resp[3], resp[2] == pattern(1000)) != (200, True, True):
                        raise AssertionError("%s: got %r, complete %s %r (tries at the upstream: "
                                             "%r)" % (rid, resp[0], resp[3], resp[2][:200],
                                                      self.up.records(rid)))
                recs = self.up.records(r3)
                if not recs:
                    raise AssertionError("%s never reached the upstream" % r3)
                want = 502 if recs[0].reqno > 1 else 200
                if third[0] != want:
                    raise AssertionError("%s: a POST on a %s connection got %r, expected %d"
                                         % (r3, "pooled" if want == 502 else "new", third[0],
                                            want))
                return [Expect(r1, {200}), Expect(r2, {200}), Expect(r3, {want}, max_tries=1)]
            self.run_case("upstream %s on a pooled connection's reuse" % mode, it)
        self.each_mode(case)

    def test_pooled_connection_dies_while_idle(self):
        """The upstream ends a connection 0-30 ms after its answer, while the gateway keeps
        it in the pool; a GET right then must still get its answer."""
        def case(mode):
            def it(i):
                r1, r2 = self.new_id("u-idle1-" + mode), self.new_id("u-idle2-" + mode)
                s = self.connect()
                try:
                    rd = Reader(s)
                    s.sendall(b"GET /f?id=%s&size=1000&cut=%s&at=idle&after=%d HTTP/1.1\r\n"
                              b"Host: x\r\n\r\n" % (r1.encode(), mode.encode(),
                                                    random.randrange(0, 30)))
                    first = rd.response()
                    time.sleep(random.uniform(0, 0.04))
                    s.sendall(b"GET /f?id=%s&size=1000 HTTP/1.1\r\nHost: x\r\n\r\n" % r2.encode())
                    second = rd.response()
                finally:
                    s.close()
                for rid, resp in ((r1, first), (r2, second)):
                    if (resp[0], resp[3], resp[2] == pattern(1000)) != (200, True, True):
                        raise AssertionError("%s: got %r, complete %s %r (tries: %r)"
                                             % (rid, resp[0], resp[3], resp[2][:200],
                                                self.up.records(rid)))
                return [Expect(r1, {200}), Expect(r2, {200})]
            self.run_case("upstream %s while pooled and idle" % mode, it)
        self.each_mode(case)


class UpstreamStallTest(FaultTest):
    """The upstream stops without closing at each phase; read-timeout = 1 s: 504 before
    the answer's head, the client's connection ended after it; the upstream connection is
    closed by the gateway either way."""

    conf_extra = "max-connections = %d\nread-timeout = 1\n" % MAX_CONN

    def test_stalls(self):
        def phase(at):
            def it(i):
                rid = self.new_id("u-stall-" + at)
                s = self.connect(timeout=20)
                try:
                    if at == "body":
                        s.sendall(b"POST /f?id=%s&cut=stall&at=body&after=1 HTTP/1.1\r\n"
                                  b"Host: x\r\nContent-Length: %d\r\n\r\n" % (rid.encode(),
                                                                               64 * KiB)
                                  + pattern(64 * KiB))
                    else:
                        s.sendall(b"GET /f?id=%s&cut=stall&at=%s&after=%d&size=%d HTTP/1.1\r\n"
                                  b"Host: x\r\n\r\n" % (rid.encode(), at.encode(), 100 * KiB,
                                                        MiB))
                    status, _, body, complete = Reader(s).response()
                finally:
                    s.close()
                if at == "answer":
                    if status != 200 or complete:
                        raise AssertionError("%s: got %r, complete %s" % (rid, status, complete))
                    return [Expect(rid, {200, 502, 504}, max_tries=1)]
                if status != 504:
                    raise AssertionError("%s: expected 504, got %r %r" % (rid, status, body[:300]))
                return [Expect(rid, {504}, max_tries=1)]
            return it

        for at in ("head", "body", "wait", "resphead", "answer"):
            with self.subTest(at=at):
                # each iteration waits for the 1 s read-timeout: a few, side by side
                self.run_case("upstream stalls at %s" % at, phase(at), parallel=4, min_iter=4,
                              max_iter=8, budget=1.5 * SLOW)


class SweepTest(FaultTest):
    """The client resets after N bytes of a 2 MB chunked answer (500 chunks of 4 KiB), for
    200 values of N from 1 byte to the whole body, four clients at a time."""

    SIZE = 500 * 4096
    VALUES = 200

    def sweep(self, warm):
        kind = "warm" if warm else "cold"
        values = [1 + i * (self.SIZE - 1) // (self.VALUES - 1) for i in range(self.VALUES)]
        query = "ans=chunked&size=%d&chunk=4096%s" % (self.SIZE, "" if warm else "&close=1")
        reused = []

        def it(i):
            rid = self.new_id("sweep-%s-%d" % (kind, values[i]))
            out = []
            s = self.connect(rcvbuf=64 * KiB if i % 2 else None)
            rd = Reader(s)
            if warm:
                # on the same client connection, hence the same worker: leaves a pooled
                # upstream connection that the big request then takes
                prime = self.new_id("sweep-prime")
                s.sendall(b"GET /f?id=%s&size=100 HTTP/1.1\r\nHost: x\r\n\r\n" % prime.encode())
                resp = rd.response()
                if resp[0] != 200 or not resp[3]:
                    raise AssertionError("%s: got %r" % (prime, resp[0]))
                out.append(Expect(prime, {200}))
            s.sendall(b"GET /f?id=%s&%s HTTP/1.1\r\nHost: x\r\n\r\n" % (rid.encode(),
                                                                         query.encode()))
            want, got = values[i], len(rd.buf)
            while got < want:
                data = s.recv(256 * KiB)
                if not data:
                    raise AssertionError("%s: the connection ended after %d bytes" % (rid, got))
                got += len(data)
            reset_close(s)
            recs = self.up.wait_record(rid, timeout=5 * SLOW)
            reused.append(recs is not None and recs.reqno > 1)
            out.append(Expect(rid, {200, 499}))
            return out

        self.run_case("sweep, pool %s: reset after N of %d bytes, %d values of N"
                      % (kind, self.SIZE, self.VALUES), it, parallel=4,
                      max_iter=self.VALUES, min_iter=self.VALUES)
        print("    (%d of %d big requests went on a pooled upstream connection)"
              % (sum(reused), len(reused)), file=sys.stderr, flush=True)
        if warm:
            self.assertGreater(sum(reused), len(reused) // 4,
                               "the pool was not warm: most requests opened a new connection")
        else:
            self.assertEqual(sum(reused), 0, "the pool was not cold")

    def test_pool_cold(self):
        self.sweep(warm=False)

    def test_pool_warm(self):
        self.sweep(warm=True)


class Issue9Test(FaultTest):
    """Issue 9 as reported: a plain upstream answers GET / with 2,000 chunks of 4 KiB; TLS
    clients read about 2 MB and reset, a few hundred of them, four at a time. The release
    build died of SIGSEGV, the sanitized one reported a heap-use-after-free in uc_read."""

    conf_extra = ""  # the defaults (max-connections 32)
    pool_bound = THREADS * 32
    CLIENTS = 300

    def test_reproduction(self):
        def it(i):
            s = self.connect()
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            want = 2 * MiB + random.randrange(-64 * KiB, 64 * KiB)
            got = 0
            while got < want:
                data = s.recv(256 * KiB)
                if not data:
                    raise AssertionError("client %d: the connection ended after %d bytes"
                                         % (i, got))
                got += len(data)
            reset_close(s)
            return []

        done = self.run_case("issue 9: %d TLS clients read ~2 MB of %d and reset"
                             % (self.CLIENTS, REPRO_SIZE), it, parallel=4,
                             max_iter=self.CLIENTS, min_iter=self.CLIENTS)
        self.assertEqual(done, self.CLIENTS)
        self.check_log("issue 9", [Expect("/", {200, 499}, count=self.CLIENTS, max_tries=None)])


if __name__ == "__main__":
    main()
