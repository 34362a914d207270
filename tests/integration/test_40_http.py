"""Layer 40: HTTP/1.1 over TLS: keep-alive, pipelining, sized and chunked bodies, limits
(431, 413 per route, 400 and close on malformed input), idle keep-alive, header and
body timeouts against slow clients, and the plain HTTP listener."""
import http.client
import socket
import ssl
import time

from harness import (SLOW, GatewayTest, free_port, main, read_response, run,
                     wait_closed)

KIB = 1024


def get(path="/rest/health", extra=""):
    return ("GET %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % (path, extra)).encode()


class HttpTest(GatewayTest):
    def start(self, certgate="", webserver="", **kw):
        g = self.gateway(**kw)
        g.write_sections(webserver, certgate)
        return g.start()

    def raw(self, g, timeout=10):
        t = g.tls_socket(timeout=timeout)
        self.addCleanup(t.close)
        return t, t.makefile("rb")

    def assertClosed(self, t, f, timeout=5):
        """The server closes the connection (after what it already sent)."""
        t.settimeout(timeout * SLOW)
        try:
            rest = f.read()
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return
        except socket.timeout:
            self.fail("the connection is still open after %ss" % timeout)
        self.assertEqual(rest, b"", "more data after the last answer")

    def assertHealthy(self, t, f):
        """The connection still works: one more request gets its answer."""
        t.sendall(get())
        self.assertEqual(read_response(f)[::2], (200, b"RUNNING"))


class KeepAliveTest(HttpTest):
    def test_many_requests_on_one_connection(self):
        g = self.start()
        c = g.connect()
        c.connect()
        sock = c.sock
        port = sock.getsockname()[1]
        for i in range(5):
            c.request("GET", "/rest/health")
            r = c.getresponse()
            self.assertEqual((r.status, r.read()), (200, b"RUNNING"))
            self.assertNotEqual((r.getheader("connection") or "").lower(), "close")
        self.assertIs(c.sock, sock, "http.client had to reconnect")
        self.assertEqual(c.sock.getsockname()[1], port)
        c.close()

    def test_curl_reuses_the_connection(self):
        g = self.start()
        p = run(["curl", "-sk", "-v", "--max-time", str(int(20 * SLOW)), g.url("/rest/health"),
                 g.url("/rest/health")], check=False)
        self.assertEqual(p.stdout, "RUNNINGRUNNING")
        self.assertIn("Re-using existing connection", p.stderr)

    def test_connection_close_and_http10(self):
        g = self.start()
        t, f = self.raw(g)
        t.sendall(get(extra="Connection: close\r\n"))
        status, headers, body = read_response(f)
        self.assertEqual((status, body, headers.get("connection")), (200, b"RUNNING", "close"))
        self.assertClosed(t, f)
        t, f = self.raw(g)
        t.sendall(b"GET /rest/health HTTP/1.0\r\n\r\n")
        self.assertEqual(read_response(f)[::2], (200, b"RUNNING"))
        self.assertClosed(t, f)

    def test_head(self):
        g = self.start()
        t, f = self.raw(g)
        t.sendall(b"HEAD /rest/health HTTP/1.1\r\nHost: x\r\n\r\n" + get())
        status, headers, body = read_response(f, head=True)
        self.assertEqual((status, headers.get("content-length")), (200, "7"))
        # the next answer starts right after the HEAD answer's header block
        self.assertEqual(read_response(f)[::2], (200, b"RUNNING"))


class PipeliningTest(HttpTest):
    def test_three_pipelined_requests_in_one_write(self):
        g = self.start()
        t, f = self.raw(g)
        t.sendall(get("/rest/health?n=1") + get("/missing-two") + get("/rest/health?n=3"))
        s1, _, b1 = read_response(f)
        s2, _, b2 = read_response(f)
        s3, _, b3 = read_response(f)
        self.assertEqual((s1, b1), (200, b"RUNNING"))
        self.assertEqual(s2, 503)  # not a local route, and no upstream configured
        self.assertIn(b"/missing-two", b2)
        self.assertEqual((s3, b3), (200, b"RUNNING"))
        self.assertHealthy(t, f)

    def test_fifty_pipelined_answers_in_order(self):
        g = self.start()
        t, f = self.raw(g)
        t.sendall(b"".join(get("/p/%d" % i) for i in range(50)))
        for i in range(50):
            status, _, body = read_response(f)
            self.assertEqual(status, 503)
            self.assertTrue(body.startswith(b"no upstream configured for /p/%d:" % i), body)

    def test_pipelined_burst_larger_than_one_pass(self):
        """Hundreds of requests in one write: more than the server handles in one pass of
        its loop (and than its 16 KiB read buffer holds). Every one is answered, in order,
        even when nothing more arrives from the client to wake the server up."""
        g = self.start()
        t, f = self.raw(g, timeout=3)
        for burst in range(3):
            t.sendall(b"".join(get("/b%d/%d" % (burst, i)) for i in range(300)))
            for i in range(300):
                try:
                    status, _, body = read_response(f)
                except (socket.timeout, EOFError) as e:
                    self.fail("burst %d: no answer to request %d of 300 (%r)" % (burst, i, e))
                self.assertTrue(body.startswith(b"no upstream configured for /b%d/%d:" % (burst, i)),
                                body)
        self.assertHealthy(t, f)

    def test_pipelined_requests_with_bodies(self):
        g = self.start()
        t, f = self.raw(g)
        sized = get(extra="Content-Length: 5\r\n")[:-2] + b"\r\nhello"
        chunked = get(extra="Transfer-Encoding: chunked\r\n") + b"3\r\nabc\r\n0\r\n\r\n"
        t.sendall(sized + chunked + get("/last"))
        self.assertEqual(read_response(f)[::2], (200, b"RUNNING"))
        self.assertEqual(read_response(f)[::2], (200, b"RUNNING"))
        self.assertEqual(read_response(f)[0], 503)


class BodyTest(HttpTest):
    def test_sized_body_then_keep_alive(self):
        g = self.start()
        t, f = self.raw(g)
        t.sendall(get(extra="Content-Length: 1000\r\n") + b"x" * 1000)
        self.assertEqual(read_response(f)[::2], (200, b"RUNNING"))
        self.assertHealthy(t, f)

    def test_chunked_body_then_keep_alive(self):
        g = self.start()
        t, f = self.raw(g)
        t.sendall(get(extra="Transfer-Encoding: chunked\r\n"))
        for piece in (b"a" * 100, b"b" * 5000, b"c"):
            t.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.02)
        t.sendall(b"0\r\n\r\n")
        self.assertEqual(read_response(f)[::2], (200, b"RUNNING"))
        self.assertHealthy(t, f)

    def test_health_accepts_64k_body(self):
        g = self.start()
        t, f = self.raw(g)
        t.sendall(get(extra="Content-Length: %d\r\n" % (64 * KIB)) + b"y" * (64 * KIB))
        self.assertEqual(read_response(f)[::2], (200, b"RUNNING"))

    def test_health_body_over_64k_is_413(self):
        g = self.start()
        t, f = self.raw(g)
        t.sendall(get(extra="Content-Length: %d\r\n" % (64 * KIB + 1)))
        status, headers, body = read_response(f)
        self.assertEqual(status, 413)
        self.assertIn(b"request body too large (the limit is 65536 bytes)", body)
        self.assertClosed(t, f)

    def test_chunked_body_over_64k_is_413(self):
        g = self.start()
        t, f = self.raw(g)
        t.sendall(get(extra="Transfer-Encoding: chunked\r\n"))
        try:
            for _ in range(10):
                t.sendall(b"2000\r\n" + b"z" * 0x2000 + b"\r\n")  # 10 x 8 KiB = 80 KiB
            t.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the server may stop reading once it has answered
        status, _, body = read_response(f)
        self.assertEqual(status, 413)
        self.assertIn(b"the limit is 65536 bytes", body)
        self.assertClosed(t, f)

    def test_certificate_upload_limit_is_max_upload_size(self):
        g = self.start(certgate="max-upload-size = 2048\n")
        token = g.token()
        path = "/e/myenv/api/v1/certificate/limit.p12"
        hdr = "Authorization: Api-Token %s\r\nX-Password: pw\r\n" \
              "Content-Type: application/octet-stream\r\n" % token
        t, f = self.raw(g)
        t.sendall(("PUT %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n"
                   % (path, hdr, 2 * KIB + 1)).encode())
        status, _, body = read_response(f)
        self.assertEqual(status, 413, body)
        self.assertIn(b"the limit is 2048 bytes", body)
        # at the limit the upload is read (and refused for what it is, not for its size)
        t, f = self.raw(g)
        t.sendall(("PUT %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n"
                   % (path, hdr, 2 * KIB)).encode() + b"\x00" * (2 * KIB))
        status, _, body = read_response(f)
        self.assertNotEqual(status, 413, body)
        self.assertEqual(status // 100, 4, body)

    def test_default_upload_limit_is_above_64k(self):
        g = self.start()
        token = g.token()
        body = b"\x00" * (100 * KIB)
        status, _, answer = g.request("PUT", "/e/myenv/api/v1/certificate/big.p12", body=body,
                                      headers={"Authorization": "Api-Token " + token,
                                               "X-Password": "pw",
                                               "Content-Type": "application/octet-stream"})
        self.assertNotEqual(status, 413, answer)
        self.assertEqual(status // 100, 4, answer)


class LimitTest(HttpTest):
    def test_header_block_over_16k_is_431(self):
        g = self.start()
        t, f = self.raw(g)
        t.sendall(get(extra="X-Big: %s\r\n" % ("a" * (17 * KIB))))
        status, headers, body = read_response(f)
        self.assertEqual(status, 431)
        self.assertIn(b"request header block too large (the limit is 16 KiB)", body)
        self.assertClosed(t, f)

    def test_header_block_under_16k_is_fine(self):
        g = self.start()
        t, f = self.raw(g)
        t.sendall(get(extra="X-Big: %s\r\n" % ("a" * (15 * KIB))))
        self.assertEqual(read_response(f)[::2], (200, b"RUNNING"))
        self.assertHealthy(t, f)

    def test_many_header_lines_over_16k_is_431(self):
        g = self.start()
        t, f = self.raw(g)
        lines = "".join("X-H%d: %s\r\n" % (i, "v" * 100) for i in range(100))  # ~ 11 KiB
        lines += "".join("X-I%d: %s\r\n" % (i, "w" * 1000) for i in range(6))  # + 6 KiB
        t.sendall(get(extra=lines))
        self.assertEqual(read_response(f)[0], 431)
        self.assertClosed(t, f)

    def test_malformed_requests_are_400_and_closed(self):
        g = self.start()
        cases = [
            b"GARBAGE\r\n\r\n",
            b"GET /rest/health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"GET /rest/health HTTP/1.1\r\nHeader Without Colon\r\n\r\n",
            b"GET /rest/health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET /rest/health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"GET /rest/health HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            # both framings at once (request smuggling) is refused
            b"GET /rest/health HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n"
            b"\r\n0\r\n\r\n",
            b"GET /rest/health HTTP/1.1\r\nHo\x00st: x\r\n\r\n",
            b"GET /rest/he alth HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        self.assertRefusedAndClosed(g, cases, 400, b"malformed HTTP request")

    def test_unknown_http_version_is_505_and_closed(self):
        g = self.start()
        cases = [b"GET /rest/health " + v + b"\r\nHost: x\r\n\r\n"
                 for v in (b"HTTP/9.9", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9")]
        self.assertRefusedAndClosed(g, cases, 505, b"HTTP/1.0 and HTTP/1.1")

    def assertRefusedAndClosed(self, g, cases, want_status, want_text):
        """Each request is answered want_status and the connection closed: a valid request
        sent right after it is not answered; the gateway still serves afterwards."""
        for raw in cases:
            with self.subTest(request=raw):
                t, f = self.raw(g)
                t.sendall(raw + get())
                status, headers, body = read_response(f)
                self.assertEqual(status, want_status, body)
                self.assertIn(want_text, body)
                self.assertEqual(headers.get("connection"), "close")
                self.assertClosed(t, f)
        t, f = self.raw(g)
        self.assertHealthy(t, f)


class TimeoutTest(HttpTest):
    def test_idle_keepalive_timeout(self):
        g = self.start(certgate="keepalive-timeout = 2\n")
        t, f = self.raw(g)
        self.assertHealthy(t, f)
        time.sleep(1)
        self.assertHealthy(t, f)  # still open, and the idle time starts again
        start = time.time()
        took, data = wait_closed(t, 8 * SLOW)
        self.assertIsNotNone(took, "an idle keep-alive connection stayed open")
        self.assertEqual(data, b"")
        self.assertGreater(time.time() - start, 1.6, "closed long before keepalive-timeout")

    def test_busy_connection_is_not_cut_off(self):
        """keepalive-timeout counts idle time: a connection used every 0.4 s outlives a
        1 s timeout, and no request sent on it goes unanswered."""
        g = self.start(certgate="keepalive-timeout = 1.5\n")
        t, f = self.raw(g)
        first = last = time.time()
        for i in range(8):
            time.sleep(0.3)
            sent = time.time()
            t.sendall(get("/rest/health?i=%d" % i))
            try:
                self.assertEqual(read_response(f)[::2], (200, b"RUNNING"))
            except EOFError:
                if sent - last > 1.2:
                    self.skipTest("this machine is too busy: %.1f s between requests" % (sent - last))
                self.fail("request %d, %.1f s after the first and %.1f s after the previous "
                          "answer, was dropped by the keep-alive timeout"
                          % (i, sent - first, sent - last))
            last = time.time()

    def test_keepalive_timeout_decimal(self):
        g = self.start(certgate="keepalive-timeout = 0.5\n")
        t, f = self.raw(g)
        self.assertHealthy(t, f)
        took, _ = wait_closed(t, 5 * SLOW)
        self.assertIsNotNone(took, "keepalive-timeout = 0.5 did not close an idle connection")
        self.assertGreater(took, 0.3)

    def test_half_header_block_then_stall(self):
        g = self.start(certgate="header-timeout = 0.5\n")
        t = g.tls_socket()
        self.addCleanup(t.close)
        t.sendall(b"GET /rest/health HTTP/1.1\r\nHost: localhost\r\nX-Half: ")
        took, data = wait_closed(t, 5 * SLOW)
        self.assertIsNotNone(took, "a stalled header block was waited for forever")
        self.assertGreater(took, 0.3, "closed before header-timeout")
        self.assertLess(took, 5 * SLOW)
        if data:
            self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data)

    def test_header_timeout_on_a_keepalive_connection(self):
        """The next request's header block gets header-timeout, not keepalive-timeout."""
        g = self.start(certgate="keepalive-timeout = 20\nheader-timeout = 0.5\n")
        t, f = self.raw(g)
        self.assertHealthy(t, f)
        time.sleep(0.2)
        t.sendall(b"GET /rest/health HTTP/1.1\r\nHo")
        took, data = wait_closed(t, 6 * SLOW)
        self.assertIsNotNone(took)
        self.assertLess(took, 5 * SLOW)
        if data:
            self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data)

    def test_trickling_header_block_is_cut_off(self):
        """header-timeout bounds the whole header block, not the pause between bytes."""
        g = self.start(certgate="header-timeout = 0.5\n")
        t = g.tls_socket()
        self.addCleanup(t.close)
        start = time.time()
        t.sendall(b"GET /rest/health HTTP/1.1\r\n")
        closed = None
        data = b""
        t.settimeout(0.1)
        while time.time() - start < 5 * SLOW:
            try:
                t.sendall(b"X-Slow: 1\r\n")
                chunk = t.recv(4096)
                if not chunk:
                    closed = time.time() - start
                    break
                data += chunk
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                closed = time.time() - start
                break
        self.assertIsNotNone(closed, "a client trickling its header block was never cut off")
        self.assertLess(closed, 5 * SLOW)
        if data:
            self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data)

    def test_nothing_sent_after_handshake(self):
        g = self.start(certgate="header-timeout = 0.5\n")
        t = g.tls_socket()
        self.addCleanup(t.close)
        took, data = wait_closed(t, 5 * SLOW)
        self.assertIsNotNone(took)
        self.assertEqual(data, b"")

    def test_stalled_body(self):
        g = self.start(certgate="body-timeout = 0.5\n")
        t = g.tls_socket()
        self.addCleanup(t.close)
        t.sendall(get(extra="Content-Length: 100\r\n") + b"0123456789")
        took, data = wait_closed(t, 5 * SLOW)
        self.assertIsNotNone(took, "a stalled body was waited for forever")
        self.assertGreater(took, 0.3)
        if data:
            self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data)

    def test_default_timeouts_are_not_short(self):
        g = self.start()
        t, f = self.raw(g)
        t.sendall(b"GET /rest/health HTTP/1.1\r\n")
        time.sleep(1.2)
        t.sendall(b"Host: x\r\n\r\n")
        self.assertEqual(read_response(f)[::2], (200, b"RUNNING"))
        time.sleep(1.2)
        self.assertHealthy(t, f)


class PlainListenerTest(HttpTest):
    def test_port_opens_plain_http(self):
        port = free_port()
        g = self.start(webserver="port = %d\n" % port)
        self.assertIn("listening on http://127.0.0.1:%d" % port, g.logs())
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW)
        c.request("GET", "/rest/health")
        r = c.getresponse()
        self.assertEqual((r.status, r.read()), (200, b"RUNNING"))
        c.close()

    def test_no_plain_listener_by_default(self):
        g = self.start()
        self.assertNotIn("listening on http://", g.logs())


if __name__ == "__main__":
    main()
