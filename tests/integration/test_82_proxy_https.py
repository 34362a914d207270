"""Layer 82: an HTTPS upstream (issue #4): Debian's nginx with a certificate from a test
CA, in front of upstream_server.py. The certificate and the host name are verified
(ca-file, or the system store), SNI is sent, sessions are resumed, verify = false works
and warns."""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import GatewayTest, Pki, main, run, SLOW

PATTERN = bytes(range(256)) * 256


class HttpsUpstreamTest(GatewayTest):
    @classmethod
    def setUpClass(cls):
        cls.ctmp = tempfile.mkdtemp(prefix="certgate-it-pki-")
        pki = Pki(cls.ctmp)
        cls.ca = pki.ca("ca", "certgate test upstream CA")
        cls.other_ca = pki.ca("other-ca", "some other CA")
        cls.good = pki.leaf("good", "localhost", cls.ca, san="DNS:localhost,IP:127.0.0.1")
        cls.wrong_host = pki.leaf("wrong", "wrong.example", cls.ca, san="DNS:wrong.example")
        cls.name_only = pki.leaf("nameonly", "localhost", cls.ca, san="DNS:localhost")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.ctmp, ignore_errors=True)

    def start_nginx(self, leaf, **kw):
        self.backend = self.upstream()
        return self.nginx(leaf[1], leaf[0], backend=self.backend, **kw)

    def gw(self, url, extra="", **kw):
        return self.proxy_gateway(url, extra, **kw)

    def info(self, g, conn=None):
        """/nginx-info through certgate: what nginx saw of the TLS connection."""
        status, _, body = g.request("GET", "/nginx-info")
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def assertRefused(self, g, pattern):
        status, headers, body = g.request("GET", "/echo")
        self.assertEqual(status, 502, body)
        self.assertTrue(headers["content-type"].startswith("text/plain"))
        self.assertRegex(body.decode(), pattern)
        self.assertTrue(g.wait_log(r"WARN .*502.*TLS", timeout=3), g.logs())
        self.assertEqual(self.backend.requests("/echo"), 0)
        return body.decode()

    # ----- verification -----

    def test_verified_with_ca_file_sni_and_host(self):
        n = self.start_nginx(self.good)
        g = self.gw("https://localhost:%d" % n.port, "ca-file = %s\n" % self.ca[1])
        info = self.info(g)
        self.assertEqual(info["sni"], "localhost", "SNI must name the upstream's host")
        self.assertEqual(info["host"], "localhost:%d" % n.port)
        status, _, body = g.request("POST", "/echo/through?x=1", body=b"hello")
        self.assertEqual(status, 200, body)
        seen = json.loads(body)
        self.assertEqual(seen["path"], "/echo/through?x=1")
        self.assertEqual(seen["body_sha256"], hashlib.sha256(b"hello").hexdigest())

    def test_ip_address_url_verified_against_ip_san(self):
        n = self.start_nginx(self.good)
        g = self.gw("https://127.0.0.1:%d" % n.port, "ca-file = %s\n" % self.ca[1])
        self.assertEqual(g.request("GET", "/echo")[0], 200)

    def test_ip_not_in_certificate_refused(self):
        n = self.start_nginx(self.name_only)
        g = self.gw("https://127.0.0.1:%d" % n.port, "ca-file = %s\n" % self.ca[1])
        self.assertRefused(g, r"(?i)TLS handshake.*(mismatch|IP address)")

    def test_wrong_host_name_refused(self):
        n = self.start_nginx(self.wrong_host)
        g = self.gw("https://localhost:%d" % n.port, "ca-file = %s\n" % self.ca[1])
        self.assertRefused(g, r"(?i)TLS handshake.*(hostname mismatch|host name)")

    def test_system_store_refuses_test_ca(self):
        n = self.start_nginx(self.good)
        g = self.gw("https://localhost:%d" % n.port)
        self.assertRefused(g, r"(?i)TLS handshake.*(unable to get local issuer|verify|self.signed)")

    def test_other_ca_refused(self):
        n = self.start_nginx(self.good)
        g = self.gw("https://localhost:%d" % n.port, "ca-file = %s\n" % self.other_ca[1])
        self.assertRefused(g, r"(?i)TLS handshake.*(unable to get local issuer|verify)")

    def test_verify_false_works_and_warns(self):
        n = self.start_nginx(self.wrong_host)
        g = self.gw("https://localhost:%d" % n.port, "verify = false\n")
        self.assertTrue(g.wait_log(r"WARN .*verify = false", timeout=2),
                        "no warning at start:\n" + g.logs())
        status, _, body = g.request("GET", "/echo")
        self.assertEqual(status, 200, body)

    def test_missing_ca_file_is_a_clear_error(self):
        missing = os.path.join(self.tmp, "no-such-ca.pem")
        g = self.gateway()
        g.write_conf("[upstream]\nurl = https://localhost:1\nca-file = %s\n" % missing)
        g.start(wait=False)
        rc = g.proc.wait(10 * SLOW)
        self.assertNotEqual(rc, 0, "started with a ca-file that does not exist")
        self.assertIn("no-such-ca.pem", g.logs())

    # ----- connections -----

    def test_pool_reuses_the_tls_connection(self):
        n = self.start_nginx(self.good)
        g = self.gw("https://localhost:%d" % n.port, "ca-file = %s\n" % self.ca[1], threads=1)
        conns = [self.info(g)["conn"] for _ in range(4)]
        self.assertEqual(len(set(conns)), 1, "one pooled TLS connection expected: %s" % conns)

    def check_resumption(self, protocols):
        # nginx closes each connection after one request, so every request needs a new
        # TLS connection; after the first, certgate should resume its session
        n = self.start_nginx(self.good, keepalive_requests=1, protocols=protocols)
        g = self.gw("https://localhost:%d" % n.port, "ca-file = %s\n" % self.ca[1], threads=1)
        reused = [self.info(g)["reused"] for _ in range(4)]
        self.assertEqual(reused[0], ".", "the first handshake cannot be a resumption")
        self.assertEqual(reused[1:], ["r"] * 3, "later handshakes should resume (nginx: %s)"
                         % reused)
        protos = {self.info(g)["protocol"]}
        self.assertEqual(protos, {protocols})

    def test_session_resumption_tls13(self):
        self.check_resumption("TLSv1.3")

    def test_session_resumption_tls12(self):
        self.check_resumption("TLSv1.2")

    def test_bodies_stream_through_https_upstream(self):
        n = self.start_nginx(self.good)
        g = self.gw("https://localhost:%d" % n.port, "ca-file = %s\n" % self.ca[1])
        size = 64 * 1024 * 1024 + 5
        # download
        curl = subprocess.Popen(["curl", "-sk", "--max-time", str(int(60 * SLOW)),
                                 g.url("/big?bytes=%d" % size)], stdout=subprocess.PIPE)
        h, got = hashlib.sha256(), 0
        while True:
            chunk = curl.stdout.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
        curl.stdout.close()
        self.assertEqual(curl.wait(), 0)
        expect = hashlib.sha256()
        for i in range(0, size, len(PATTERN)):
            expect.update(PATTERN[:min(len(PATTERN), size - i)])
        self.assertEqual((got, h.hexdigest()), (size, expect.hexdigest()))
        # upload, chunked from a pipe
        data = os.urandom(1 << 20)
        up = subprocess.Popen(["curl", "-sk", "--max-time", str(int(60 * SLOW)), "-T", "-",
                               g.url("/sink")], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        h = hashlib.sha256()
        for _ in range(48):
            up.stdin.write(data)
            h.update(data)
        up.stdin.close()
        out = up.stdout.read()
        up.stdout.close()
        self.assertEqual(up.wait(), 0)
        self.assertEqual(json.loads(out), {"length": 48 << 20, "sha256": h.hexdigest()})


if __name__ == "__main__":
    main()
