"""Layer 80: forwarding semantics (issue #4).

A real upstream (upstream_server.py) behind the real certgate binary, driven with
http.client, raw TLS sockets and curl: what the upstream receives (method, path, query,
headers, X-Forwarded-*, body) and what the client gets back (status, reason, headers,
body, framing), the keep-alive pool, and the access log."""
import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import time

from harness import (GatewayTest, SLOW, main, read_head, read_text, recv_all, run,
                     tls_socket, wait_until)


def echo(g, method, path, body=None, headers=None, conn=None):
    """One request through certgate to the upstream's /echo...; returns (status, what the
    upstream saw as a dict with headers as a list of [name, value])."""
    c = conn or g.connect()
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise AssertionError("%s %s: %d %r" % (method, path, r.status, data))
        return json.loads(data)
    finally:
        if conn is None:
            c.close()


def header_values(seen, name):
    return [v for k, v in seen["headers"] if k.lower() == name.lower()]


class ForwardingTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.up = self.upstream()

    def gw(self, extra="", url=None, **kw):
        return self.proxy_gateway(url or self.up.url, extra, **kw)

    # ----- what the upstream receives -----

    def test_method_path_and_query_unchanged(self):
        g = self.gw()
        target = "/echo/a%20b/%2Fc;p=1/~x?x=1&x=2&y=%41&empty=&flag&api-token=tok"
        for method in ("GET", "DELETE", "OPTIONS", "PATCH", "POST", "PUT"):
            body = b"body of " + method.encode() if method in ("PATCH", "POST", "PUT") else None
            seen = echo(g, method, target, body=body)
            self.assertEqual(seen["method"], method)
            self.assertEqual(seen["path"], target, "the request-target must arrive unchanged")
            if body:
                self.assertEqual(seen["body_len"], len(body))
                self.assertEqual(seen["body_sha256"], hashlib.sha256(body).hexdigest())

    def test_path_prefix_of_the_url(self):
        for url in (self.up.url + "/prefix", self.up.url + "/prefix/"):
            g = self.gw(url=url, name="gw%d" % len(self.gateways))
            seen = echo(g, "GET", "/echo/x?q=1")
            self.assertEqual(seen["path"], "/prefix/echo/x?q=1", "url " + url)
            seen = echo(g, "GET", "/echo")
            self.assertEqual(seen["path"], "/prefix/echo", "url " + url)

    def test_local_routes_are_not_forwarded(self):
        g = self.gw()
        status, _, body = g.request("GET", "/rest/health")
        self.assertEqual((status, body), (200, b"RUNNING"))
        status, _, body = g.request("GET", "/e/myenv/api/v1/certificate/list")
        self.assertEqual(status, 401, body)  # the local API, not the upstream's 404
        self.assertEqual(self.up.stats()["requests"], {}, "local routes reached the upstream")
        # only those exact routes are local; look-alikes are forwarded
        for path in ("/rest/healthz", "/rest/health/x", "/e/myenv/api/v2/certificate",
                     "/e/myenv/other", "/"):
            status, _, body = g.request("GET", path)
            self.assertEqual(status, 404, path)
            self.assertEqual(json.loads(body)["path"], path, "upstream's 404 for " + path)
            self.assertEqual(self.up.requests(path.split("?")[0]), 1, path)

    def test_hop_by_hop_request_headers_removed(self):
        g = self.gw()
        seen = echo(g, "GET", "/echo", headers={
            "Connection": "keep-alive, X-Named-By-Connection",
            "X-Named-By-Connection": "secret",
            "Keep-Alive": "timeout=300",
            "TE": "trailers",
            "Upgrade": "h2c",
            "Proxy-Authorization": "Basic dXNlcjpwdw==",
            "Proxy-Connection": "keep-alive",
            "X-End-To-End": "kept",
        })
        names = [k.lower() for k, _ in seen["headers"]]
        for h in ("x-named-by-connection", "keep-alive", "te", "upgrade",
                  "proxy-authorization", "proxy-connection"):
            self.assertNotIn(h, names, "hop-by-hop header %s was forwarded" % h)
        # the upstream connection's own Connection header may only be certgate's
        for v in header_values(seen, "Connection"):
            self.assertNotIn("x-named-by-connection", v.lower())
        self.assertEqual(header_values(seen, "X-End-To-End"), ["kept"])

    def test_any_proxy_header_removed(self):
        """The contract names Proxy-* as hop-by-hop, not only the registered ones."""
        g = self.gw()
        seen = echo(g, "GET", "/echo", headers={"Proxy-Custom": "x", "Proxy-Foo-Bar": "y",
                                                "X-Proxy-Kept": "z"})
        names = [k.lower() for k, _ in seen["headers"]]
        self.assertNotIn("proxy-custom", names)
        self.assertNotIn("proxy-foo-bar", names)
        self.assertEqual(header_values(seen, "X-Proxy-Kept"), ["z"])

    def test_forwarded_headers_and_host(self):
        g = self.gw()
        seen = echo(g, "GET", "/echo", headers={"Host": "front.example:8443"})
        self.assertEqual(header_values(seen, "Host"), ["127.0.0.1:%d" % self.up.port])
        self.assertEqual(header_values(seen, "X-Forwarded-For"), ["127.0.0.1"])
        self.assertEqual(header_values(seen, "X-Forwarded-Proto"), ["https"])
        self.assertEqual(header_values(seen, "X-Forwarded-Host"), ["front.example:8443"])
        # client-sent values from a client that is not a trusted proxy (none is by
        # default) are replaced (test_87 has the trusted case)
        seen = echo(g, "GET", "/echo", headers={"Host": "front.example",
                                                "X-Forwarded-For": "203.0.113.7",
                                                "X-Forwarded-Proto": "http",
                                                "X-Forwarded-Host": "spoofed.example"})
        self.assertEqual(header_values(seen, "X-Forwarded-For"), ["127.0.0.1"])
        self.assertEqual(header_values(seen, "X-Forwarded-Proto"), ["https"])
        self.assertEqual(header_values(seen, "X-Forwarded-Host"), ["front.example"])

    def test_forwarded_for_from_several_header_lines(self):
        """Two X-Forwarded-For lines are one list (RFC 9110 5.3); none may be lost (from
        a trusted proxy: the others' are dropped)."""
        g = self.gw("trusted-proxies = 127.0.0.1/32\n")
        s = tls_socket(g.port)
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.1\r\n"
                  b"X-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n")
        data = recv_all(s)
        s.close()
        seen = json.loads(data.partition(b"\r\n\r\n")[2])
        self.assertEqual(", ".join(header_values(seen, "X-Forwarded-For")),
                         "198.51.100.1, 203.0.113.7, 127.0.0.1")

    def test_request_bodies_content_length_chunked_and_empty(self):
        g = self.gw()
        big = os.urandom(5 * 1024 * 1024 + 3)
        c = g.connect()
        c.request("POST", "/sink", body=big)
        r = c.getresponse()
        self.assertEqual(json.loads(r.read()),
                         {"length": len(big), "sha256": hashlib.sha256(big).hexdigest()})
        # chunked, in uneven pieces, on the same client connection
        pieces = [big[i:i + 70001] for i in range(0, len(big), 70001)]
        c.request("PUT", "/sink", body=iter(pieces), encode_chunked=True,
                  headers={"Transfer-Encoding": "chunked"})
        r = c.getresponse()
        self.assertEqual(json.loads(r.read()),
                         {"length": len(big), "sha256": hashlib.sha256(big).hexdigest()})
        # the upstream sees chunked framing for a chunked request, a length otherwise
        seen = echo(g, "POST", "/echo", body=iter([b"ab", b"cd"]), conn=c)  # chunked
        self.assertEqual(seen["body_len"], 4)
        self.assertEqual(header_values(seen, "Transfer-Encoding"), ["chunked"])
        seen = echo(g, "POST", "/echo", body=b"", conn=c)
        self.assertEqual(seen["body_len"], 0)
        self.assertIn(header_values(seen, "Content-Length"), (["0"], []))
        c.close()

    def test_expect_100_continue(self):
        g = self.gw()
        path = os.path.join(self.tmp, "upload.bin")
        data = os.urandom(3 * 1024 * 1024)
        with open(path, "wb") as f:
            f.write(data)
        p = run(["curl", "-sk", "-v", "--max-time", "30", "-T", path, "-H",
                 "Expect: 100-continue", g.url("/sink")], check=False)
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        self.assertRegex(p.stderr, r"< HTTP/1.1 100 Continue", "no interim 100 answer")
        self.assertEqual(json.loads(p.stdout),
                         {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()})

    # ----- what the client gets back -----

    def test_answer_relayed_unchanged(self):
        g = self.gw()
        s = tls_socket(g.port)
        s.sendall(b"GET /headers HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, rest = read_head(s)
        s.close()
        self.assertEqual(status, "HTTP/1.1 201 Made It", "status and reason phrase")
        names = [k.lower() for k, _ in headers]
        self.assertEqual([v for k, v in headers if k.lower() == "set-cookie"],
                         ["a=1; Path=/", "b=2; Path=/"], "both Set-Cookie lines, in order")
        self.assertEqual([v for k, v in headers if k.lower() == "x-custom"], ["one"])
        self.assertEqual(names.count("date"), 1, "one Date: the upstream's")
        self.assertEqual([v for k, v in headers if k.lower() == "server"],
                         ["upstream-test Python/%s" % ".".join(map(str, __import__("sys").version_info[:3]))],
                         "the upstream's Server header, none of certgate's")
        self.assertEqual(rest, b"with headers\n")

    def test_no_date_or_server_added(self):
        g = self.gw()
        s = tls_socket(g.port)
        s.sendall(b"GET /bare HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, rest = read_head(s)
        s.close()
        self.assertEqual(status, "HTTP/1.1 200 OK")
        names = [k.lower() for k, _ in headers]
        self.assertNotIn("date", names, "certgate added a Date to a relayed answer")
        self.assertNotIn("server", names, "certgate added a Server to a relayed answer")
        self.assertIn(("X-Bare", "yes"), headers)
        self.assertEqual(rest, b"bare\n")

    def test_hop_by_hop_answer_headers_removed(self):
        g = self.gw()
        status, headers, body = g.request("GET", "/hop")
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("x-kept"), "passes")
        for h in ("x-hop-secret", "keep-alive", "proxy-authenticate"):
            self.assertNotIn(h, headers)
        self.assertEqual(body, b"hop\n")

    def test_status_codes_and_reasons_on_one_connection(self):
        g = self.gw()
        c = g.connect()
        for code in (200, 201, 204, 301, 304, 400, 404, 418, 500, 502, 503):
            c.request("GET", "/status/%d" % code)
            r = c.getresponse()
            body = r.read()
            self.assertEqual(r.status, code)
            # the upstream's phrase (418's is one certgate itself does not know)
            self.assertEqual(r.reason, http.client.responses[code], code)
            self.assertEqual(body, b"" if code in (204, 304) else b"status %d\n" % code)
        # still usable after answers without a body
        self.assertEqual(echo(g, "GET", "/echo", conn=c)["path"], "/echo")
        c.close()

    def test_head_answer_has_length_and_no_body(self):
        g = self.gw()
        c = g.connect()
        c.request("HEAD", "/big?bytes=123457")
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("Content-Length"), "123457")
        self.assertEqual(r.read(), b"")
        self.assertEqual(echo(g, "GET", "/echo", conn=c)["method"], "GET",
                         "the connection must be usable after a HEAD")
        c.close()

    def test_chunked_and_close_delimited_answers(self):
        g = self.gw()
        status, _, body = g.request("GET", "/chunked")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"".join(b"chunk %d\n" % i for i in range(5)))
        status, _, body = g.request("GET", "/big?bytes=3000001&chunked=1")
        self.assertEqual((status, len(body)), (200, 3000001))
        self.assertEqual(body, (PATTERN * 46)[:3000001])
        status, _, body = g.request("GET", "/eof")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"".join(b"until the end %d\n" % i for i in range(3)))

    def test_http10_client_gets_close_delimited_body(self):
        g = self.gw()
        s = tls_socket(g.port)
        s.sendall(b"GET /chunked HTTP/1.0\r\nHost: x\r\n\r\n")
        data = recv_all(s)
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        self.assertNotIn(b"transfer-encoding", head.lower(), "HTTP/1.0 knows no chunking")
        self.assertEqual(body, b"".join(b"chunk %d\n" % i for i in range(5)))

    def test_upgrade_request_is_not_switched(self):
        """Upgrade is hop-by-hop: the upstream gets a plain request, nothing switches."""
        g = self.gw()
        s = tls_socket(g.port)
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                  b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        status, headers, rest = read_head(s)
        length = int(dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
        while len(rest) < length:
            rest += s.recv(65536)
        s.close()
        self.assertNotIn(" 101 ", status)
        if status.startswith("HTTP/1.1 200"):
            seen = json.loads(rest)
            self.assertEqual(header_values(seen, "Upgrade"), [])
        else:  # refusing the upgrade outright is acceptable too
            self.assertRegex(status, r" (400|501) ")

    # ----- the keep-alive pool -----

    def test_pool_reuses_upstream_connection(self):
        g = self.gw(threads=1)
        c = g.connect()
        conns = []
        for _ in range(5):
            c.request("GET", "/conn")
            conns.append(json.loads(c.getresponse().read())["conn"])
        c.close()
        self.assertEqual(len(set(conns)), 1, "sequential requests on one client connection "
                         "should use one upstream connection: %s" % conns)
        # the pool belongs to the thread, not to the client connection
        status, _, body = g.request("GET", "/conn")
        self.assertEqual(json.loads(body)["conn"], conns[0])
        self.assertEqual(self.up.stats()["connections"], 1 + 1,  # + this stats request
                         "one upstream connection for all proxied requests")

    def test_max_connections_bounds_the_idle_pool(self):
        """max-connections counts connections in flight as well as idle ones: six slow
        requests at once share two connections (the others wait in the queue)."""
        g = self.gw("max-connections = 2\n", threads=1)
        before = self.up.stats()["connections"]
        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            results = list(ex.map(lambda _: g.request("GET", "/slow?s=0.4"), range(6)))
        self.assertEqual([r[0] for r in results], [200] * 6)
        self.assertLessEqual(self.up.stats()["connections"] - before, 2 + 1,  # + the stats call
                             "more upstream connections than max-connections")
        # 2 stay idle in the pool
        open_now = wait_until(lambda: self.up.stats()["open_proxied"] <= 2, timeout=5)
        self.assertTrue(open_now, "idle upstream connections: %d, max-connections is 2"
                        % self.up.stats()["open_proxied"])
        time.sleep(0.2)
        self.assertEqual(self.up.stats()["open_proxied"], 2, "the pool should keep 2 idle")

    def test_concurrent_clients(self):
        g = self.gw()

        def client(i):
            c = g.connect()
            try:
                for j in range(10):
                    body = os.urandom(1000 * (i + j))
                    seen = echo(g, "POST", "/echo/%d/%d?i=%d" % (i, j, i), body=body, conn=c)
                    if seen["path"] != "/echo/%d/%d?i=%d" % (i, j, i) or \
                            seen["body_sha256"] != hashlib.sha256(body).hexdigest():
                        return "client %d request %d: wrong echo %r" % (i, j, seen)
            finally:
                c.close()
            return None

        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            errors = [e for e in ex.map(client, range(16)) if e]
        self.assertEqual(errors, [])

    # ----- the access log -----

    def test_access_log_lines(self):
        g = self.gw()
        self.assertEqual(g.request("GET", "/echo/logged?api-token=s3cr3t&x=1")[0], 200)
        self.assertEqual(g.request("GET", "/rest/health")[0], 200)
        self.assertEqual(g.request("GET", "/e/myenv/api/v1/certificate/list?api-token=t0k3n")[0],
                         401)
        line = g.access_lines(r'"GET /echo/logged')
        self.assertEqual(len(line), 1, read_text(g.access_path))
        # time client "method target" status bytes seconds upstream-seconds
        m = re.match(r'^\S+ 127\.0\.0\.1 "GET /echo/logged\?api-token=\*\*\*&x=1" 200 (\d+) '
                     r'(\d+\.\d{3}) (\d+\.\d{3})$', line[0])
        self.assertTrue(m, "proxied line with a masked token and the upstream time: %r"
                        % line[0])
        self.assertGreater(int(m.group(1)), 100)
        self.assertLessEqual(float(m.group(3)), float(m.group(2)) + 0.001)
        local = g.access_lines(r'"GET /rest/health"')
        self.assertEqual(len(local), 1)
        self.assertRegex(local[0], r'^\S+ 127\.0\.0\.1 "GET /rest/health" 200 \d+ \d+\.\d{3} -$')
        api = g.access_lines(r'certificate/list')
        self.assertEqual(len(api), 1)
        self.assertIn("api-token=***", api[0])
        text = read_text(g.access_path)
        self.assertNotIn("s3cr3t", text)
        self.assertNotIn("t0k3n", text)
        # the upstream itself gets the query unchanged
        self.assertEqual(self.up.requests("/echo/logged"), 1)

    def test_access_log_on_by_default_to_stdout(self):
        for option in ("default", "-"):  # no --access-log option; --access-log -
            g = self.gw(access_log=option, name="gw%d" % len(self.gateways))
            self.assertEqual(g.request("GET", "/echo/stdout-log")[0], 200)
            lines = g.access_lines(r'"GET /echo/stdout-log" 200', path=g.stdout_path)
            self.assertEqual(len(lines), 1, "no access log line on standard output (%s)"
                             % option)

    def test_access_log_off(self):
        g = self.gw(access_log="off")
        self.assertEqual(g.request("GET", "/echo/not-logged")[0], 200)
        self.assertEqual(g.request("GET", "/rest/health")[0], 200)
        time.sleep(0.6 * SLOW)  # more than the 250 ms flush tick
        self.assertFalse(os.path.exists(g.access_path))
        self.assertEqual(read_text(g.stdout_path), "")


PATTERN = bytes(range(256)) * 256

if __name__ == "__main__":
    main()
