"""Layer 81: forwarding failures (issue #4).

An upstream that refuses, stalls, breaks or is not configured; a client that goes away;
the retry of idempotent requests on a broken pooled connection. Each error answer is
text/plain with a sentence, and leaves a log line."""
import http.client
import json
import socket
import time

from harness import GatewayTest, SLOW, free_port, main, tls_socket, wait_until


class ErrorsTest(GatewayTest):
    def assertErrorAnswer(self, g, status, path, pattern, method="GET", body=None,
                          max_seconds=None):
        """One request answered `status` with a text/plain sentence matching pattern,
        within max_seconds; returns the body."""
        t0 = time.time()
        got, headers, data = g.request(method, path, body=body, timeout=30)
        took = time.time() - t0
        self.assertEqual(got, status, data)
        self.assertTrue(headers["content-type"].startswith("text/plain"), headers)
        text = data.decode()
        self.assertRegex(text, pattern)
        self.assertTrue(text.endswith("\n"))
        if max_seconds is not None:
            self.assertLess(took, max_seconds * SLOW, "%d took %.2f s" % (status, took))
        return text, took

    def assertLogged(self, g, pattern):
        self.assertTrue(g.wait_log(pattern, timeout=3), "no log line matching %r:\n%s"
                        % (pattern, g.logs()))

    # ----- the upstream fails -----

    def test_refused_is_502_at_once(self):
        port = free_port()
        g = self.proxy_gateway("http://127.0.0.1:%d" % port)
        text, took = self.assertErrorAnswer(g, 502, "/anything", r"refused", max_seconds=1)
        self.assertIn("127.0.0.1:%d" % port, text)
        self.assertLogged(g, r"WARN .*502.*127\.0\.0\.1:%d.*refused" % port)
        line = g.access_lines(r'"GET /anything" 502')
        self.assertEqual(len(line), 1)
        self.assertRegex(line[0], r" \d+\.\d{3}$", "a forwarded request has an upstream time")

    def test_read_timeout_is_504(self):
        up = self.upstream()
        g = self.proxy_gateway(up.url, "read-timeout = 1\n")
        text, took = self.assertErrorAnswer(g, 504, "/slow?s=4", r"read-timeout|within 1 s",
                                            max_seconds=2.5)
        self.assertGreaterEqual(took, 0.9, "answered 504 before the read-timeout")
        self.assertLogged(g, r"WARN .*504")
        # and the upstream's connection is given up, not left waiting
        self.assertTrue(wait_until(lambda: up.stats()["slow_aborted"] == 1, timeout=3),
                        up.stats())

    def test_connect_timeout_is_504(self):
        # a listener whose backlog is full: the kernel drops further SYNs, so a connect
        # neither succeeds nor fails
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(0)
        port = lst.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                fillers.append(s)
            time.sleep(0.2)
            g = self.proxy_gateway("http://127.0.0.1:%d" % port, "connect-timeout = 1\n")
            text, took = self.assertErrorAnswer(g, 504, "/x", r"connect|accept",
                                                max_seconds=3)
            self.assertGreaterEqual(took, 0.9)
            self.assertLogged(g, r"WARN .*504")
        finally:
            for s in fillers:
                s.close()
            lst.close()

    def test_invalid_answer_is_502(self):
        up = self.upstream()
        g = self.proxy_gateway(up.url)
        self.assertErrorAnswer(g, 502, "/garbage", r"invalid answer", max_seconds=2)
        self.assertLogged(g, r"WARN .*502.*invalid")

    def test_closed_without_answer_is_502(self):
        up = self.upstream()
        g = self.proxy_gateway(up.url)
        self.assertErrorAnswer(g, 502, "/close", r"closed the connection", max_seconds=2)

    def test_answer_broken_off_ends_the_client_connection(self):
        """A body cut short cannot be reported with a status any more: the client's
        connection ends early instead of hanging or pretending success."""
        up = self.upstream()
        g = self.proxy_gateway(up.url)
        c = g.connect(timeout=5)
        c.request("GET", "/truncate")
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        with self.assertRaises(http.client.IncompleteRead):
            r.read()
        c.close()
        self.assertLogged(g, r"WARN .*broke off")
        # the gateway is fine afterwards
        self.assertEqual(g.request("GET", "/echo")[0], 200)

    def test_upstream_restart(self):
        """Pooled connections to a stopped upstream are noticed; 502 while it is down,
        200 again when it is back on the same port."""
        up = self.upstream()
        g = self.proxy_gateway(up.url, threads=1)
        self.assertEqual(g.request("GET", "/conn")[0], 200)
        port = up.port
        up.stop()
        self.assertErrorAnswer(g, 502, "/conn", r"refused", max_seconds=2)
        up.start(port)
        status, _, body = g.request("GET", "/conn")
        self.assertEqual(status, 200, body)

    def test_no_upstream_is_503(self):
        g = self.gateway().start()  # no custom.properties at all
        self.assertErrorAnswer(g, 503, "/some/where?q=1", r"^no upstream configured",
                               max_seconds=1)
        self.assertErrorAnswer(g, 503, "/upload", r"^no upstream configured", method="POST",
                               body=b"x" * 100000)
        # local routes still work
        self.assertEqual(g.request("GET", "/rest/health")[0], 200)
        self.assertLogged(g, r"(WARN|INFO|ERROR).*no upstream configured")

    # ----- the client goes away -----

    def test_client_abort_aborts_the_upstream_request(self):
        up = self.upstream()
        g = self.proxy_gateway(up.url)
        s = tls_socket(g.port)
        s.sendall(b"GET /slow?s=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(wait_until(lambda: up.requests("/slow") == 1, timeout=3))
        time.sleep(0.5)
        t0 = time.time()
        s.close()
        self.assertTrue(wait_until(lambda: up.stats()["slow_aborted"] == 1, timeout=2),
                        "the upstream did not see its connection closed: %s" % up.stats())
        self.assertLess(time.time() - t0, 2 * SLOW)
        self.assertEqual(up.stats()["slow_done"], 0)
        # no connection left behind at the upstream
        self.assertTrue(wait_until(lambda: up.stats()["open_proxied"] == 0, timeout=2),
                        up.stats())

    def test_client_abort_is_logged(self):
        up = self.upstream()
        g = self.proxy_gateway(up.url)
        s = tls_socket(g.port)
        s.sendall(b"GET /slow?s=5&aborted=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(wait_until(lambda: up.requests("/slow") == 1, timeout=3))
        s.close()
        lines = g.access_lines(r'"GET /slow\?s=5&aborted=1"', timeout=3)
        self.assertEqual(len(lines), 1, "an aborted request has no access log line:\n%s"
                         % "\n".join(g.access_lines(timeout=0)))
        # no status was sent; the upstream had the request for a while
        self.assertRegex(lines[0], r'" 499 0 \d+\.\d{3} \d+\.\d{3}$')

    def test_client_abort_during_download_and_upload(self):
        up = self.upstream()
        g = self.proxy_gateway(up.url)
        # download: read a little of 1 GiB, then go
        s = tls_socket(g.port)
        s.sendall(b"GET /big?bytes=1073741824 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = 0
        while got < 1 << 20:
            got += len(s.recv(65536))
        s.close()
        # upload: send part of a 1 GiB body, then go
        s = tls_socket(g.port)
        s.sendall(b"PUT /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
        block = b"u" * 65536
        for _ in range(64):
            s.sendall(block)
        s.close()
        self.assertTrue(wait_until(lambda: up.stats()["open_proxied"] == 0, timeout=3),
                        "upstream connections still open after the clients left: %s"
                        % up.stats())
        self.assertEqual(g.request("GET", "/echo")[0], 200)

    # ----- retry on a broken pooled connection -----

    def test_get_on_broken_pooled_connection_is_retried(self):
        up = self.upstream()
        g = self.proxy_gateway(up.url, threads=1)
        c = g.connect()
        c.request("GET", "/flaky")
        first = json.loads(c.getresponse().read())
        # the pooled connection is reused; the upstream closes it without an answer
        c.request("GET", "/flaky")
        r = c.getresponse()
        self.assertEqual(r.status, 200, "a GET should have been retried on a new connection")
        second = json.loads(r.read())
        c.close()
        self.assertNotEqual(first["conn"], second["conn"])
        self.assertEqual(up.requests("/flaky"), 3, "first, broken, retried")

    def test_post_on_broken_pooled_connection_is_not_retried(self):
        up = self.upstream()
        g = self.proxy_gateway(up.url, threads=1)
        c = g.connect()
        c.request("GET", "/flaky")
        self.assertEqual(c.getresponse().read()[:1], b"{")
        c.request("POST", "/flaky", body=b"")
        r = c.getresponse()
        body = r.read()
        c.close()
        self.assertEqual(r.status, 502, body)
        self.assertEqual(r.getheader("Content-Type").split(";")[0], "text/plain")
        self.assertEqual(up.requests("/flaky"), 2, "a POST must not be sent twice")

    def test_retried_only_once(self):
        up = self.upstream()
        g = self.proxy_gateway(up.url, threads=1)
        c = g.connect()
        c.request("GET", "/conn")
        c.getresponse().read()
        c.request("GET", "/close")
        r = c.getresponse()
        r.read()
        c.close()
        self.assertEqual(r.status, 502)
        self.assertEqual(up.requests("/close"), 2, "one try on the pooled connection, one retry")


if __name__ == "__main__":
    main()
