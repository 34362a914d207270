"""Bounded resources (issue 10, item 3), tried as an attacker would: the gateway's
max-connections, descriptor exhaustion (prlimit --nofile), slowloris, a body trickled
below min-rate, a slow reader, a slow-but-steady download longer than read-timeout, the
upstream's max-connections with its queue, and a silent TCP client. Each case ends by
checking that a normal client is still served. Small timeouts keep it short."""
import concurrent.futures
import os
import re
import socket
import ssl
import subprocess
import threading
import time

from fault_upstream import FaultUpstream
from harness import SLOW, GatewayTest, client_context, main

CTX = client_context()
KiB = 1024
MiB = 1024 * KiB


def tls_connect(port, timeout=10, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout * SLOW)
    s.connect(("127.0.0.1", port))
    return CTX.wrap_socket(s, server_hostname="localhost")


def get(sock, target, keep=True):
    """Sends a GET on sock; returns (status, body) read by Content-Length."""
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n"
                 % (target.encode(), b"" if keep else b"Connection: close\r\n"))
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = sock.recv(65536)
        if not b:
            raise ConnectionError("closed before the answer: %r" % buf)
        buf += b
    head, _, body = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    n = int(m.group(1)) if m else 0
    while len(body) < n:
        b = sock.recv(65536)
        if not b:
            break
        body += b
    return status, head, body


def closed_within(sock, seconds):
    """Reads (and drops) until the peer closes; the seconds it took, or None."""
    t0 = time.time()
    sock.settimeout(0.2)
    while time.time() - t0 < seconds:
        try:
            if not sock.recv(65536):
                return time.time() - t0
        except socket.timeout:
            continue
        except (ssl.SSLError, OSError):
            return time.time() - t0
    return None


class Resources(GatewayTest):
    def assertServed(self, g):
        s, _, body = g.request("GET", "/rest/health", timeout=10)
        self.assertEqual((s, body), (200, b"RUNNING"), "a normal client is not served")

    def start_gw(self, certgate="", upstream=None, threads=2):
        g = self.gateway(threads=threads)
        text = "[certgate]\n" + certgate
        if upstream:
            text += "[upstream]\n" + upstream
        g.write_conf(text)
        return g.start()

    def fault_upstream(self):
        u = FaultUpstream().start()
        self.addCleanup(u.stop)
        return u

    # ----- the gateway's max-connections -----

    def test_max_connections_backlog(self):
        """At max-connections the next connection waits in the backlog and is served when
        one closes; the log says so once, not per attempt."""
        g = self.start_gw("max-connections = 4\nkeepalive-timeout = 60\nheader-timeout = 3\n")
        held = []
        for _ in range(4):
            s = tls_connect(g.port)
            self.assertEqual(get(s, "/rest/health")[0], 200)
            held.append(s)
        result = {}

        def fifth():
            try:
                s = tls_connect(g.port, timeout=30)
                result["status"] = get(s, "/rest/health")[0]
                result["at"] = time.time()
                s.close()
            except Exception as e:  # noqa: BLE001 - reported below
                result["error"] = repr(e)

        t = threading.Thread(target=fifth)
        t.start()
        # a crowd behind it: plain-text requests on the TLS port (past TCP_DEFER_ACCEPT;
        # each fails its handshake at once when accepted)
        crowd = []
        for _ in range(60):
            c = socket.create_connection(("127.0.0.1", g.port))
            c.sendall(b"GET / HTTP/1.1\r\n\r\n")
            crowd.append(c)
        time.sleep(1.5 * SLOW)
        self.assertNotIn("status", result, "the fifth connection was served at the cap")
        self.assertTrue(g.wait_log(r"max-connections \(4\) reached", 5))
        freed = time.time()
        held.pop().close()
        t.join(15 * SLOW)
        self.assertEqual(result.get("status"), 200, result)
        self.assertLess(result["at"] - freed, 3 * SLOW, "served too late after a place came free")
        lines = re.findall(r"max-connections \(4\) reached", g.logs())
        self.assertLessEqual(len(lines), 2, "one line per interval, not per attempt:\n" + g.logs())
        for c in crowd + held:
            c.close()
        time.sleep(0.5 * SLOW)
        self.assertServed(g)

    def test_descriptor_exhaustion(self):
        """EMFILE on accept: bounded log lines for the whole gateway, and once descriptors
        are free again a normal client is served."""
        g = self.start_gw("max-connections = 100000\n")
        pid = g.proc.pid
        used = len(os.listdir("/proc/%d/fd" % pid))
        subprocess.run(["prlimit", "--pid", str(pid), "--nofile=%d:" % (used + 8)], check=True)
        conns = []
        try:
            for _ in range(40):
                c = socket.create_connection(("127.0.0.1", g.port))
                c.sendall(b"\x16\x03\x01")  # the start of a ClientHello: past the deferral
                conns.append(c)
            time.sleep(2.5 * SLOW)  # ~25 retries at 100 ms per worker
            self.assertTrue(g.wait_log(r"accept: Too many open files", 5), g.logs())
            lines = re.findall(r"accept: ", g.logs())
            self.assertLessEqual(len(lines), 2, "one line per interval:\n" + g.logs())
            self.assertIsNone(g.proc.poll(), "the gateway died")
        finally:
            for c in conns:
                c.close()
        time.sleep(0.5 * SLOW)
        self.assertServed(g)
        subprocess.run(["prlimit", "--pid", str(pid), "--nofile=4096:"], check=True)
        self.assertServed(g)

    # ----- slow clients -----

    def test_slowloris_cut_by_header_timeout(self):
        """Many connections sending a header byte every half second are cut after
        header-timeout (not re-armed per byte); a normal client is served meanwhile."""
        g = self.start_gw("header-timeout = 2\n")
        n = 30
        took = [None] * n

        def loris(i):
            try:
                s = tls_connect(g.port)
            except OSError:
                return
            t0 = time.time()
            s.settimeout(0.5)
            line = b"GET / HTTP/1.1\r\nHost: x\r\nX-Loris: " + b"a" * 100
            try:
                for b in line:
                    s.send(bytes([b]))
                    try:
                        if not s.recv(4096):
                            break
                    except socket.timeout:
                        pass
            except (OSError, ssl.SSLError):
                pass
            took[i] = time.time() - t0
            s.close()

        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            futs = [ex.submit(loris, i) for i in range(n)]
            time.sleep(1)
            self.assertServed(g)
            for f in futs:
                f.result()
        self.assertTrue(all(t is not None for t in took), took)
        self.assertLess(max(took), 2 + 1.5 * SLOW, "slowloris connections lived: %s" % took)
        self.assertServed(g)

    def test_silent_tcp_client(self):
        """A TCP client that sends nothing is gone within about header-timeout, counted
        from its SYN (TCP_DEFER_ACCEPT no longer holds it ~20 s)."""
        g = self.start_gw("header-timeout = 2\n")
        s = socket.create_connection(("127.0.0.1", g.port))
        took = closed_within(s, 30)
        s.close()
        self.assertIsNotNone(took)
        self.assertLess(took, 2 + 1.5 * SLOW, "a silent client stayed %.1f s" % took)
        self.assertServed(g)

    def test_body_trickle_cut_by_min_rate(self):
        """A body trickled a byte per second (each within body-timeout) is cut by min-rate:
        408, and its upstream connection is released."""
        up = self.fault_upstream()
        g = self.start_gw("body-timeout = 2\nmin-rate = 1024\n", "url = %s\n" % up.url)
        s = tls_connect(g.port)
        s.sendall(b"POST /?id=trickle HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n")
        self.assertIsNotNone(up.wait_record("trickle", lambda r: r.head_done, 5 * SLOW))
        t0 = time.time()
        got = b""
        s.settimeout(1)
        while time.time() - t0 < 15 * SLOW:
            try:
                s.send(b"x")
                b = s.recv(4096)
                if not b:
                    break
                got += b
            except socket.timeout:
                continue
            except (OSError, ssl.SSLError):
                break
        took = time.time() - t0
        s.close()
        self.assertTrue(got.startswith(b"HTTP/1.1 408 "), got[:200])
        self.assertLess(took, 2 + 2 * SLOW, "the trickle lived %.1f s" % took)
        self.assertTrue(up.wait(lambda: up.open == 0, 5 * SLOW),
                        "the upstream connection was not released: %s" % up.stats())
        self.assertServed(g)

    def test_slow_reader_cut_by_min_rate(self):
        """A client reading slower than min-rate is cut after the grace, and its upstream
        connection is released."""
        up = self.fault_upstream()
        g = self.start_gw("body-timeout = 2\nmin-rate = 262144\n", "url = %s\n" % up.url)
        s = tls_connect(g.port, rcvbuf=16 * KiB)
        size = 64 * MiB
        s.sendall(b"GET /?id=slowread&size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        t0 = time.time()
        got = 0
        s.settimeout(1)
        ended = False
        while time.time() - t0 < 30 * SLOW:  # 64 KiB a second: a quarter of min-rate
            try:
                b = s.recv(32 * KiB)
            except socket.timeout:
                continue
            except (OSError, ssl.SSLError):
                ended = True
                break
            if not b:
                ended = True
                break
            got += len(b)
            time.sleep(0.5)
        took = time.time() - t0
        s.close()
        self.assertTrue(ended, "not cut after %.1f s (%d bytes read)" % (took, got))
        self.assertLess(got, size)
        self.assertTrue(up.wait(lambda: up.open == 0, 5 * SLOW),
                        "the upstream connection was not released: %s" % up.stats())
        self.assertServed(g)

    def test_slow_download_longer_than_read_timeout(self):
        """A slow client (a pause of 3 s, longer than read-timeout, then steady reading)
        gets the whole answer: read-timeout measures the upstream only, and stops while
        reading from it waits for the client."""
        up = self.fault_upstream()
        g = self.start_gw("body-timeout = 5\n", "url = %s\nread-timeout = 1\n" % up.url)
        s = tls_connect(g.port, rcvbuf=16 * KiB)
        size = 12 * MiB  # beyond the kernel's buffers: reading the upstream must pause
        # the upstream sends 64 KiB pieces (so that the gateway's reads are short ones)
        s.sendall(b"GET /?id=slowdl&size=%d&step=65536&pace=0.002 HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        t0 = time.time()
        buf = bytearray()
        s.settimeout(10 * SLOW)
        paused = False
        while True:
            b = s.recv(256 * KiB)
            if not b:
                break
            buf += b
            head, sep, body = bytes(buf[:1024]).partition(b"\r\n\r\n")
            if sep and len(buf) - len(head) - 4 >= size:
                break
            if not paused and time.time() - t0 > 0.5:
                time.sleep(3)  # the client stops reading for 3 s
                paused = True
            elif not paused:
                time.sleep(0.05)
        took = time.time() - t0
        s.close()
        head, _, body = bytes(buf).partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head[:200])
        self.assertEqual(len(body), size, "cut after %.1f s: %s" % (took, g.logs()[-500:]))
        self.assertGreater(took, 3)
        self.assertNotIn("stalled", g.logs())
        self.assertServed(g)

    # ----- the upstream's max-connections -----

    def test_upstream_max_connections_queue(self):
        """With a slow upstream, requests beyond max-connections queue (bounded), then get
        503 + Retry-After; the upstream never sees more than the cap at once."""
        up = self.fault_upstream()
        g = self.start_gw("", "url = %s\nmax-connections = 2\nqueue-size = 2\n"
                          "connect-timeout = 1\n" % up.url, threads=1)

        def one(i, delay):
            t0 = time.time()
            try:
                s = tls_connect(g.port, timeout=20)
                status, head, _ = get(s, "/?id=q%d&delay=%s" % (i, delay))
                s.close()
                return status, head, time.time() - t0
            except Exception as e:  # noqa: BLE001 - shows in the assertion
                return None, repr(e).encode(), time.time() - t0

        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            res = list(ex.map(lambda i: one(i, 2.5), range(6)))
        statuses = sorted(r[0] for r in res)
        self.assertEqual(statuses, [200, 200, 503, 503, 503, 503], res)
        for status, head, secs in res:
            if status == 503:
                self.assertIn(b"\r\nRetry-After: 1\r\n", head + b"\r\n")
                self.assertLess(secs, 2.5, "a 503 waited longer than connect-timeout")
        waited = [r for r in res if r[0] == 503 and r[2] > 0.8]
        self.assertEqual(len(waited), 2, "two requests waited in the queue: %s" % res)
        self.assertLessEqual(up.stats()["max_open"], 2, up.stats())
        # queued requests are served when connections come free (handed over)
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            res = list(ex.map(lambda i: one(10 + i, 0.3), range(4)))
        self.assertEqual([r[0] for r in res], [200] * 4, res)
        self.assertLessEqual(up.stats()["max_open"], 2, up.stats())
        self.assertServed(g)


if __name__ == "__main__":
    main()
