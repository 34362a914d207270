"""Layer 92: Prometheus metrics (issue 11, item 1).

The real binary with [certgate] metrics-listen, a real upstream, real clients (http.client,
Python ssl with a resumed session, a raw TCP socket that fails its handshake); every scrape
is checked by promtool (Debian's prometheus package), and a real Prometheus scrapes the
listener and answers a query through its HTTP API."""
import calendar
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import unittest
import urllib.request

from harness import SLOW, GatewayTest, der_fingerprint, free_port, main, run, wait_until

LINE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse(text):
    """{(name, frozenset of label pairs): float} of an exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE_RE.match(line)
        if not m:
            raise AssertionError("not an exposition line: %r" % line)
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name, **labels):
    """The sum of the samples of name whose labels include the given ones."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def rows(samples, name):
    return {ls: v for (n, ls), v in samples.items() if n == name}


class MetricsTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.mport = free_port()

    def gw(self, upstream=None, token=True):
        g = self.gateway()
        conf = "[certgate]\nmetrics-listen = 127.0.0.1:%d\n" % self.mport
        if upstream:
            conf += "[upstream]\nurl = %s\n" % upstream
        g.write_conf(conf)
        tok = g.token() if token else None
        g.start()
        return g, tok

    def get(self, path="/metrics", method="GET"):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.mport, path), method=method)
        try:
            with urllib.request.urlopen(req, timeout=10 * SLOW) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def scrape(self):
        """One scrape, checked by promtool; returns the parsed samples."""
        st, headers, text = self.get()
        self.assertEqual(st, 200)
        self.assertIn("version=0.0.4", headers.get("Content-Type", ""))
        p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""),
                         "promtool check metrics:\n" + text)
        return parse(text)

    def test_counters_move_with_real_requests(self):
        up = self.upstream()
        g, tok = self.gw(up.url)
        s0 = self.scrape()
        self.assertEqual(value(s0, "certgate_build_info"), 1)
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                     "process_open_fds", "process_max_fds", "process_start_time_seconds"):
            self.assertIn(name, {n for n, _ in s0}, name)
        self.assertGreater(value(s0, "process_resident_memory_bytes"), 1 << 20)
        self.assertAlmostEqual(value(s0, "process_start_time_seconds"), time.time(),
                               delta=300)

        # health, a 404 of the API, an API list, a bad token, a proxied request: one
        # keep-alive connection, one full handshake
        c = g.connect()
        for method, path, headers in (
                ("GET", "/rest/health", {}),
                ("GET", g.api_path("no-such.p12/list"),
                 {"Authorization": "Api-Token " + tok, "X-Password": "x"}),
                ("GET", g.api_path("list"), {"Authorization": "Api-Token " + tok}),
                ("GET", g.api_path("list"), {"Authorization": "Api-Token wrong"}),
                ("GET", "/echo/x", {})):
            c.request(method, path, headers=headers)
            c.getresponse().read()
        # bytes count as they move, not when the connection ends
        s_open = self.scrape()
        self.assertEqual(value(s_open, "certgate_connections_open"), 1)
        for direction in ("in", "out"):
            self.assertGreater(value(s_open, "certgate_client_bytes_total", direction=direction),
                               value(s0, "certgate_client_bytes_total", direction=direction) + 300)
        c.close()
        # a resumed TLS 1.2 session, and a handshake that fails
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with g.tls_socket(context=ctx) as t:
            sess = t.session
        with g.tls_socket(context=ctx, session=sess) as t:
            self.assertTrue(t.session_reused)
        with socket.create_connection(("127.0.0.1", g.port), timeout=10 * SLOW) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            s.recv(100)

        def settled():
            s = self.scrape()
            return s if value(s, "certgate_connections_open") == 0 and \
                value(s, "certgate_tls_handshakes_total", result="failed") >= 1 else None
        s1 = wait_until(settled, timeout=10)
        self.assertTrue(s1, "connections still open or the failed handshake not counted")

        def d(name, **labels):
            return value(s1, name, **labels) - value(s0, name, **labels)
        self.assertEqual(d("certgate_tls_handshakes_total", result="full", protocol="TLSv1.3"), 1)
        self.assertEqual(d("certgate_tls_handshakes_total", result="full", protocol="TLSv1.2"), 1)
        self.assertEqual(d("certgate_tls_handshakes_total", result="resumed",
                           protocol="TLSv1.2"), 1)
        self.assertEqual(d("certgate_tls_handshakes_total", result="failed", protocol="other"), 1)
        self.assertEqual(d("certgate_http_requests_total", code="2xx", route="health"), 1)
        self.assertEqual(d("certgate_http_requests_total", code="4xx", route="api"), 2)
        self.assertEqual(d("certgate_http_requests_total", code="2xx", route="api"), 1)
        self.assertEqual(d("certgate_http_requests_total", code="2xx", route="proxy"), 1)
        self.assertEqual(d("certgate_http_requests_total"), 5)
        self.assertEqual(d("certgate_http_request_duration_seconds_count"), 5)
        self.assertEqual(d("certgate_upstream_duration_seconds_count"), 1)
        self.assertEqual(d("certgate_token_failures_total"), 1)
        self.assertEqual(d("certgate_certificate_operations_total", op="list", result="ok"), 1)
        self.assertEqual(d("certgate_certificate_operations_total", op="describe",
                           result="error"), 1)
        self.assertEqual(d("certgate_connections_total"), 4)
        self.assertGreater(d("certgate_client_bytes_total", direction="in"), 500)
        self.assertGreater(d("certgate_client_bytes_total", direction="out"), 500)
        # the histogram is cumulative and ends in +Inf == count
        buckets = sorted((float(dict(ls)["le"]), v) for ls, v in
                         rows(s1, "certgate_http_request_duration_seconds_bucket").items())
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
        self.assertEqual(buckets[-1][1], value(s1, "certgate_http_request_duration_seconds_count"))

        # reloads by result
        g.reload()
        g.write_conf(g.read_conf() + "[certgate]\nmin-rate = nonsense\n")
        g.reload()
        s2 = self.scrape()
        self.assertEqual(value(s2, "certgate_reloads_total", result="ok"), 1)
        self.assertEqual(value(s2, "certgate_reloads_total", result="error"), 1)

    def test_certificate_gauges_follow_upload_activation_and_delete(self):
        g, tok = self.gw()
        s0 = self.scrape()
        served0 = rows(s0, "certgate_certificate_not_after_timestamp_seconds")
        self.assertEqual(len(served0), 1)
        self.assertIn(("file", ""), next(iter(served0)))  # the default certificate
        a_key, a_crt = self.pki.self_signed("a", "host-a", days=30)
        b_key, b_crt = self.pki.self_signed("b", "host-b", days=90)
        a = self.pki.p12("a.p12", a_key, a_crt, "pw-a", alias="first")
        b = self.pki.p12("b.p12", b_key, b_crt, "pw-b", alias="second")

        def not_after(crt):
            out = run(["openssl", "x509", "-in", crt, "-noout", "-enddate"]).stdout
            t = time.strptime(out.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y GMT")
            return float(calendar.timegm(t))

        st, _, _ = g.upload("a.p12", a, "pw-a", tok)
        self.assertEqual(st, 200)
        s1 = self.scrape()
        na = rows(s1, "certgate_certificate_not_after_timestamp_seconds")
        nb = rows(s1, "certgate_certificate_not_before_timestamp_seconds")
        self.assertEqual(len(na), 1, na)
        labels, v = next(iter(na.items()))
        ld = dict(labels)
        self.assertEqual((ld["file"], ld["alias"], ld["served"]), ("a.p12", "first", "true"))
        self.assertEqual(ld["sha256"], der_fingerprint(g.served_cert())[:16])
        self.assertEqual(v, not_after(a_crt))
        self.assertEqual(len(nb), 1)
        self.assertLess(next(iter(nb.values())), v)

        st, _, _ = g.upload("b.p12", b, "pw-b", tok)
        self.assertEqual(st, 200)
        na = {dict(ls)["file"]: (dict(ls)["served"], v) for ls, v in
              rows(self.scrape(), "certgate_certificate_not_after_timestamp_seconds").items()}
        self.assertEqual(na, {"b.p12": ("true", not_after(b_crt)),
                              "a.p12": ("false", not_after(a_crt))})

        st, _, _ = g.activate("a.p12", "pw-a", tok)
        self.assertEqual(st, 200)
        na = {dict(ls)["file"]: dict(ls)["served"] for ls in
              rows(self.scrape(), "certgate_certificate_not_after_timestamp_seconds")}
        self.assertEqual(na, {"a.p12": "true", "b.p12": "false"})

        st, _, _ = g.call("DELETE", "b.p12", tok)
        self.assertEqual(st, 200)
        s = self.scrape()
        na = {dict(ls)["file"] for ls in
              rows(s, "certgate_certificate_not_after_timestamp_seconds")}
        self.assertEqual(na, {"a.p12"})
        self.assertEqual(value(s, "certgate_certificate_operations_total", op="upload",
                               result="ok"), 2)
        self.assertEqual(value(s, "certgate_certificate_operations_total", op="activate",
                               result="ok"), 1)
        self.assertEqual(value(s, "certgate_certificate_operations_total", op="delete",
                               result="ok"), 1)

    def test_other_paths_and_methods(self):
        self.gw(token=False)
        for path in ("/", "/metrics/", "/metricsx", "/rest/health"):
            st, _, body = self.get(path)
            self.assertEqual(st, 404, path)
            self.assertIn("/metrics", body)
        st, _, _ = self.get("/metrics?x=1")
        self.assertEqual(st, 200)
        st, _, _ = self.get("/metrics", method="POST")
        self.assertEqual(st, 405)
        st, _, body = self.get("/metrics", method="HEAD")
        self.assertEqual((st, body), (200, ""))

    def test_port_taken_is_a_start_error_naming_it(self):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.mport))
            s.listen(1)
            g = self.gateway()
            g.write_conf("[certgate]\nmetrics-listen = 127.0.0.1:%d\n" % self.mport)
            self.assertNotEqual(g.run_to_exit(), 0)
        self.assertRegex(g.logs(), r"cannot start: cannot listen on 127\.0\.0\.1:%d for metrics "
                                   r"\(metrics-listen\): Address already in use" % self.mport)

    def test_bad_values_are_refused(self):
        for v, words in (("9998", "is not an address"), ("localhost:", "no valid port"),
                         ("127.0.0.1:70000", "no valid port"), ("::1:9998", "is not an address"),
                         ("nonsense", "is not an address")):
            g = self.gateway("gw-" + re.sub(r"\W", "_", v))
            g.write_conf("[certgate]\nmetrics-listen = %s\n" % v)
            self.assertNotEqual(g.run_to_exit(), 0, v)
            self.assertIn("metrics-listen: '%s' " % v, g.logs())
            self.assertIn(words, g.logs())

    def test_off_by_default(self):
        g = self.gateway()
        g.start()
        self.assertNotIn("metrics at", g.logs())

    @unittest.skipUnless(shutil.which("prometheus"), "prometheus is not installed")
    def test_real_prometheus_scrapes_it(self):
        g, _ = self.gw(token=False)
        g.request("GET", "/rest/health")
        folder = os.path.join(self.tmp, "prom")
        os.makedirs(folder)
        conf = os.path.join(folder, "prometheus.yml")
        with open(conf, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: certgate\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % self.mport)
        pport = free_port()
        log = open(os.path.join(folder, "log"), "w")
        p = subprocess.Popen(["prometheus", "--config.file=" + conf,
                              "--storage.tsdb.path=" + os.path.join(folder, "data"),
                              "--web.listen-address=127.0.0.1:%d" % pport],
                             stdout=log, stderr=log)

        def stop():
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            log.close()
        self.addCleanup(stop)

        def query(q):
            url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (
                pport, urllib.request.quote(q))
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return json.load(r)["data"]["result"]
            except (OSError, ValueError, KeyError):
                return None

        res = wait_until(lambda: query('certgate_http_requests_total{route="health",code="2xx"}'),
                         timeout=60, interval=0.5)
        if not res:
            with open(os.path.join(folder, "log")) as f:
                self.fail("Prometheus never got the metric; its log:\n" + f.read()[-3000:])
        self.assertEqual(float(res[0]["value"][1]), 1)
        up = query('up{job="certgate"}')
        self.assertEqual(float(up[0]["value"][1]), 1)


if __name__ == "__main__":
    main()
