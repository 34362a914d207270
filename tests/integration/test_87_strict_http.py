"""Layer 87: strict HTTP/1.1 in front of a real upstream (issue 10, items 1 and 2).

The upstream here is a raw socket server that records every byte it receives, on every
connection, and answers each complete request (Content-Length or chunked) with 200. Its
keep-alive pool in the gateway is warmed first, so that a request could go out at once.
Then each attack of the issue (framing, paths, a 20 KB URI, ...) is sent as exact bytes on
a raw TLS socket (and with curl where natural): it gets its status with Connection: close,
the connection closes, and the upstream has seen nothing of it (not one byte after the
warm-up). A chunked body that turns out malformed after a valid head has gone out never
reaches the upstream as a complete request: that upstream connection is closed without the
last chunk, and it is not reused. Last, the forwarded headers: an untrusted client's
X-Forwarded-*, Forwarded and X-Real-IP are replaced, a trusted proxy's list is appended
to, and `forwarded = on` adds RFC 7239 Forwarded (an IPv6 client quoted and bracketed)."""
import json
import re
import socket
import subprocess
import threading
import time

from harness import (SLOW, GatewayTest, main, read_response, recv_all, tls_socket,
                     wait_until)


class RecordingUpstream:
    """Accepts connections on 127.0.0.1; keeps every byte each one sent (conns: a list of
    dicts {data, closed}); answers each complete request 200 "ok" (keep-alive)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.conns = []
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            rec = {"data": b"", "closed": False, "complete": 0, "reqs": []}
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self._serve, args=(s, rec), daemon=True).start()

    @staticmethod
    def _complete(buf):
        """Length of the first complete request in buf, or 0."""
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return 0
        head = buf[:end].decode("latin-1").lower()
        m = re.search(r"\r\ncontent-length: *(\d+)", head)
        if m:
            n = end + 4 + int(m.group(1))
            return n if len(buf) >= n else 0
        if "\r\ntransfer-encoding: chunked" in head:
            last = buf.find(b"\r\n0\r\n\r\n", end)
            return last + 7 if last >= 0 else 0
        return end + 4

    def _serve(self, s, rec):
        pending = b""
        while True:
            try:
                d = s.recv(65536)
            except OSError:
                d = b""
            if not d:
                break
            with self.lock:
                rec["data"] += d
            pending += d
            while True:
                n = self._complete(pending)
                if not n:
                    break
                req, pending = pending[:n], pending[n:]
                with self.lock:
                    rec["complete"] += 1
                    rec["reqs"].append(req.split(b"\r\n", 1)[0])
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        with self.lock:
            rec["closed"] = True
        s.close()

    def total(self):
        with self.lock:
            return sum(len(c["data"]) for c in self.conns)

    def everything(self):
        with self.lock:
            return b"".join(c["data"] for c in self.conns)

    def stop(self):
        self.ls.close()


def exchange(g, raw, host="127.0.0.1"):
    """Sends raw on a new TLS connection; returns (status, headers, body, closed), closed
    being whether the gateway ended the connection after its answer."""
    s = tls_socket(g.port, host=host)
    try:
        s.sendall(raw)
        f = s.makefile("rb")
        status, headers, body = read_response(f)
        s.settimeout(5 * SLOW)
        try:
            rest = f.read()
            closed = rest == b""
        except (OSError, ValueError):
            closed = True
        return status, headers, body, closed
    finally:
        s.close()


GET = b"GET /warm HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n"

# (name, raw request, status): the "Why" list, and their neighbours. Each has the
# marker ATTACK somewhere, which must never show at the upstream.
ATTACKS = [
    ("TE xchunked", b"POST /ATTACK HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n"
                    b"0\r\n\r\n", 501),
    ("TE chunked, identity", b"POST /ATTACK HTTP/1.1\r\nHost: a\r\n"
                             b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
    ("TE and CL", b"POST /ATTACK HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("two CL", b"POST /ATTACK HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n"
               b"\r\nhello", 400),
    ("space before colon", b"POST /ATTACK HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n"
                           b"hello", 400),
    ("obs-fold", b"GET /ATTACK HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n", 400),
    ("bare LF", b"GET /ATTACK HTTP/1.1\nHost: a\n\n", 400),
    ("bare LF in a header", b"GET /ATTACK HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400),
    ("%2e%2e", b"GET /%2e%2e/ATTACK HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (".%2e", b"GET /.%2e/ATTACK HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("../", b"GET /x/../ATTACK HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("backslash", b"GET /x\\..\\ATTACK HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("%5c", b"GET /x%5c..%5cATTACK HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("..%2f", b"GET /x/..%2fATTACK HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("TAB in target", b"GET /ATTACK\tx HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("FF in target", b"GET /ATTACK\x0cx HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("no Host", b"GET /ATTACK HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
    ("two Hosts", b"GET /ATTACK HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("NUL in a value", b"GET /ATTACK HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400),
    ("asterisk-form", b"OPTIONS * HTTP/1.1\r\nHost: a\r\nX-ATTACK: 1\r\n\r\n", 400),
    ("CONNECT", b"CONNECT ATTACK:443 HTTP/1.1\r\nHost: ATTACK:443\r\n\r\n", 405),
    ("HTTP/2.0", b"GET /ATTACK HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("20 KB URI", b"GET /ATTACK" + b"u" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    ("17 KB header", b"GET /ATTACK HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 17000 +
                     b"\r\n\r\n", 431),
]


class StrictTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.up = RecordingUpstream()
        self.addCleanup(self.up.stop)

    def warm(self, g):
        """One good request, so the pool holds a connection; returns the bytes seen."""
        status, _, body, _ = exchange(g, GET)
        self.assertEqual((status, body), (200, b"ok"))
        wait_until(lambda: self.up.conns and self.up.conns[0]["complete"] == 1, 5)
        return self.up.total()

    def test_attacks_refused_and_nothing_reaches_the_upstream(self):
        g = self.proxy_gateway(self.up.url, threads=1)  # one pool
        before = self.warm(g)
        for name, raw, want in ATTACKS:
            with self.subTest(attack=name):
                status, headers, body, closed = exchange(g, raw + GET)
                self.assertEqual(status, want, body[:300])
                self.assertEqual(headers.get("connection"), "close")
                self.assertTrue(closed, "the connection must close after the refusal")
        time.sleep(0.2 * SLOW)
        seen = self.up.everything()
        self.assertNotIn(b"ATTACK", seen)
        self.assertEqual(self.up.total(), before, "the upstream got bytes: %r" % seen[before:][:300])
        # curl's --path-as-is sends the dot segments as they are
        for path in ("/%2e%2e/ATTACK", "/.%2e/ATTACK", "/a/../ATTACK"):
            r = subprocess.run(["curl", "-sk", "--path-as-is", "-o", "/dev/null", "-w",
                                "%{http_code}", "https://127.0.0.1:%d%s" % (g.port, path)],
                               capture_output=True, text=True, timeout=30 * SLOW)
            self.assertEqual(r.stdout, "400", path)
        self.assertEqual(self.up.total(), before)
        # and the gateway still relays good requests on the warm connection
        self.assertEqual(exchange(g, GET)[:1], (200,))
        self.assertEqual(len(self.up.conns), 1)

    def test_malformed_body_never_completes_at_the_upstream(self):
        g = self.proxy_gateway(self.up.url, threads=1)  # one pool
        self.warm(g)
        cases = (("chunk size overflow", b"fffffffffffffffff1\r\nx\r\n0\r\n\r\n"),
                 ("no CRLF after a chunk", b"3\r\nabcXX0\r\n\r\n"),
                 ("bad chunk size", b"zz\r\n0\r\n\r\n"))
        for i, (name, bad) in enumerate(cases):
            with self.subTest(body=name):
                mark = b"POST /upload-%d " % i
                s = tls_socket(g.port)
                s.sendall(mark + b"HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                          b"\r\n5\r\nhello\r\n")
                # the valid head and first chunk go out to the upstream (on the warm
                # connection of the pool)
                self.assertTrue(wait_until(lambda: mark in self.up.everything(), 5))
                s.sendall(bad)
                f = s.makefile("rb")
                status, headers, _ = read_response(f)
                self.assertEqual((status, headers.get("connection")), (400, "close"))
                s.close()
                with self.up.lock:
                    used = [c for c in self.up.conns if mark in c["data"]][0]
                # that upstream connection is closed, the request never complete there
                self.assertTrue(wait_until(lambda: used["closed"], 5), "not closed")
                after = used["data"].split(mark, 1)[1]
                self.assertTrue(after.endswith(b"5\r\nhello\r\n") or
                                after.endswith(b"3\r\nabc\r\n"), after[-100:])
                self.assertNotIn(mark.strip(), b" ".join(used["reqs"]))
                self.assertTrue(used["reqs"], "the POST did not use the warm connection")
                # and the next request works, on another connection
                self.assertEqual(exchange(g, GET)[0], 200)
        self.assertNotIn(b"0\r\n\r\n", self.up.everything())


class ForwardedTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.up = self.upstream()

    def seen(self, g, extra=b"", host="127.0.0.1"):
        raw = (b"GET /echo HTTP/1.1\r\nHost: front.example\r\n" + extra +
               b"Connection: close\r\n\r\n")
        s = tls_socket(g.port, host=host)
        s.sendall(raw)
        data = recv_all(s)
        s.close()
        seen = json.loads(data.partition(b"\r\n\r\n")[2])
        out = {}
        for k, v in seen["headers"]:
            out.setdefault(k.lower(), []).append(v)
        return out

    SPOOF = (b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: http\r\n"
             b"X-Forwarded-Host: evil\r\nX-Forwarded-Port: 1\r\nX-Forwarded-Server: e\r\n"
             b"Forwarded: for=203.0.113.7\r\nX-Real-IP: 203.0.113.7\r\n")

    def test_untrusted_client_headers_replaced(self):
        g = self.proxy_gateway(self.up.url, "trusted-proxies = 10.0.0.0/8, 2001:db8::/32\n")
        h = self.seen(g, self.SPOOF)
        self.assertEqual(h["x-forwarded-for"], ["127.0.0.1"])
        self.assertEqual(h["x-forwarded-proto"], ["https"])
        self.assertEqual(h["x-forwarded-host"], ["front.example"])
        for name in ("x-forwarded-port", "x-forwarded-server", "forwarded", "x-real-ip"):
            self.assertNotIn(name, h)

    def test_trusted_proxy_appended_and_rfc7239(self):
        g = self.proxy_gateway(self.up.url, "trusted-proxies = 127.0.0.1\nforwarded = on\n")
        h = self.seen(g, self.SPOOF)
        self.assertEqual(h["x-forwarded-for"], ["203.0.113.7, 127.0.0.1"])
        self.assertEqual(h["x-real-ip"], ["203.0.113.7"])
        self.assertEqual(h["x-forwarded-proto"], ["https"])
        self.assertNotIn("x-forwarded-port", h)
        self.assertEqual(h["forwarded"],
                         ["for=203.0.113.7, for=127.0.0.1;proto=https;host=front.example"])

    def test_forwarded_ipv6_client(self):
        g = self.gateway("gw6", listen_host="::1")
        g.write_conf("[upstream]\nurl = %s\nforwarded = on\n" % self.up.url)
        g.start()
        h = self.seen(g, b"Forwarded: for=1.2.3.4\r\n", host="::1")
        self.assertEqual(h["forwarded"], ['for="[::1]";proto=https;host=front.example'])
        self.assertEqual(h["x-forwarded-for"], ["::1"])

    def test_bad_cidr_is_a_config_error(self):
        g = self.gateway("bad")
        g.write_conf("[upstream]\nurl = %s\ntrusted-proxies = 10.0.0.0/33\n" % self.up.url)
        g.start(wait=False)
        code = g.proc.wait(15 * SLOW)
        self.assertNotEqual(code, 0)
        self.assertRegex(g.logs(), r"custom\.properties:3: trusted-proxies: '10\.0\.0\.0/33' "
                                   r"is not an address")


if __name__ == "__main__":
    main()
