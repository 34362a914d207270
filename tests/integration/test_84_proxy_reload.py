"""Layer 84: the proxy across reloads (issue #4).

SIGHUP applies a changed [upstream] without dropping client connections; the
certificate API keeps working while proxied traffic flows, and a certificate switch does
not disturb forwarding (nor empty the upstream connection pool)."""
import hashlib
import json
import os
import subprocess
import threading
import time

from harness import GatewayTest, SLOW, main, wait_until

PATTERN = bytes(range(256)) * 256


def slurp(path):
    with open(path, "rb") as f:
        return f.read()


class ReloadTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.a = self.upstream("A")
        self.b = self.upstream("B")

    def server_of(self, conn, path="/echo"):
        """The upstream's name that answered a request on the given client connection."""
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        self.assertEqual(r.status, 200, body)
        return json.loads(body)["server"]

    def set_upstream(self, g, url, extra=""):
        g.write_conf("[upstream]\nurl = %s\n%s" % (url, extra))
        tail = g.reload()
        self.assertIn("reloaded", tail)

    def test_sighup_switches_upstream_on_open_connection(self):
        g = self.proxy_gateway(self.a.url)
        c = g.connect()
        self.assertEqual(self.server_of(c), "A")
        local = c.sock.getsockname()
        self.set_upstream(g, self.b.url)
        # the next request on the same connection goes to the new upstream at once
        self.assertEqual(self.server_of(c), "B")
        self.assertEqual(c.sock.getsockname(), local, "the client connection was replaced")
        self.assertEqual(self.server_of(c), "B")
        c.close()
        self.assertEqual(self.a.requests("/echo"), 1)
        self.assertEqual(self.b.requests("/echo"), 2)

    def test_request_in_flight_during_reload_completes(self):
        g = self.proxy_gateway(self.a.url)
        c = g.connect(timeout=20)
        c.request("GET", "/slow?s=1.5")
        self.assertTrue(wait_until(lambda: self.a.requests("/slow") == 1, timeout=3))
        self.set_upstream(g, self.b.url)
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(json.loads(r.read()), {"slept": True})
        self.assertEqual(self.server_of(c), "B")
        c.close()

    def test_streaming_download_survives_reload(self):
        g = self.proxy_gateway(self.a.url)
        size = 128 * 1024 * 1024
        p = subprocess.Popen(["curl", "-sk", "--max-time", str(int(120 * SLOW)), "--limit-rate",
                              "64M", g.url("/big?bytes=%d" % size)], stdout=subprocess.PIPE)
        first = p.stdout.read(1 << 20)
        self.set_upstream(g, self.b.url)
        rest = hashlib.sha256()
        n = len(first)
        while True:
            chunk = p.stdout.read(1 << 20)
            if not chunk:
                break
            rest.update(chunk)
            n += len(chunk)
        p.stdout.close()
        self.assertEqual(p.wait(), 0)
        self.assertEqual(n, size)
        self.assertEqual(first[:len(PATTERN)], PATTERN)

    def test_remove_and_add_upstream(self):
        g = self.proxy_gateway(self.a.url)
        c = g.connect()
        self.assertEqual(self.server_of(c), "A")
        g.write_conf("# no upstream for now\n")
        self.assertIn("reloaded", g.reload())
        c.request("GET", "/echo")
        r = c.getresponse()
        self.assertEqual(r.status, 503)
        self.assertIn(b"no upstream configured", r.read())
        self.set_upstream(g, self.b.url)
        self.assertEqual(self.server_of(c), "B")
        c.close()

    def test_bad_upstream_keeps_the_previous_one(self):
        g = self.proxy_gateway(self.a.url)
        c = g.connect()
        self.assertEqual(self.server_of(c), "A")
        for bad in ("url = ftp://127.0.0.1:21/\n", "url = http://no-such-host.invalid:80\n",
                    "url = %s\nread-timeout = soon\n" % self.b.url,
                    "url = https://localhost:1\nca-file = %s\n" % os.path.join(self.tmp, "none")):
            g.write_conf("[upstream]\n" + bad)
            tail = g.reload()
            self.assertIn("reload failed", tail, bad)
            self.assertEqual(self.server_of(c), "A", "a failed reload changed the upstream")
        c.close()

    def test_reload_applies_the_other_keys(self):
        g = self.proxy_gateway(self.a.url, "read-timeout = 10\n")
        self.assertEqual(g.request("GET", "/slow?s=1.2")[0], 200)
        self.set_upstream(g, self.a.url, "read-timeout = 1\n")
        t0 = time.time()
        status, _, body = g.request("GET", "/slow?s=3")
        self.assertEqual(status, 504, body)
        self.assertLess(time.time() - t0, 2.5 * SLOW)
        # and a path prefix
        self.set_upstream(g, self.a.url + "/prefix")
        status, _, body = g.request("GET", "/echo/x")
        self.assertEqual(json.loads(body)["path"], "/prefix/echo/x")


class CertificateApiWhileProxyingTest(GatewayTest):
    def api(self, g, method, rest, body=None, headers=None):
        h = {"Authorization": "Api-Token " + self.token}
        h.update(headers or {})
        status, _, data = g.request(method, "/e/myenv/api/v1/certificate/" + rest, body=body,
                                    headers=h, timeout=30)
        return status, data

    def test_certificate_api_while_traffic_flows(self):
        up = self.upstream()
        g = self.proxy_gateway(up.url, threads=2)
        self.token = g.token()
        key_a, cert_a = self.pki.self_signed("a", "a.example")
        key_b, cert_b = self.pki.self_signed("b", "b.example")
        p12_a = slurp(self.pki.p12("a.p12", key_a, cert_a, "pw-a"))
        p12_b = slurp(self.pki.p12("b.p12", key_b, cert_b, "pw-b"))

        stop = threading.Event()
        done, errors = [0], []
        blob = os.urandom(2 * 1024 * 1024)
        blob_sha = hashlib.sha256(blob).hexdigest()

        def traffic(kind):
            c = None
            while not stop.is_set():
                try:
                    if c is None:
                        c = g.connect(timeout=20)
                    if kind == "up":
                        c.request("POST", "/sink", body=blob)
                        r = c.getresponse()
                        got = json.loads(r.read())
                        ok = r.status == 200 and got == {"length": len(blob), "sha256": blob_sha}
                    else:
                        c.request("GET", "/big?bytes=3000000")
                        r = c.getresponse()
                        data = r.read()
                        ok = r.status == 200 and data == (PATTERN * 46)[:3000000]
                    if not ok:
                        errors.append("%s: wrong answer %d" % (kind, r.status))
                    done[0] += 1
                except Exception as e:  # noqa: BLE001 - every failure counts
                    errors.append("%s: %r" % (kind, e))
                    c = None
            if c:
                c.close()

        # a long download that runs across every certificate switch
        long_dl = subprocess.Popen(["curl", "-sk", "--max-time", str(int(120 * SLOW)),
                                    "--limit-rate", "40M", g.url("/big?bytes=%d" % (96 << 20))],
                                   stdout=subprocess.PIPE)
        threads = [threading.Thread(target=traffic, args=(k,)) for k in ("up", "down", "down")]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            status, body = self.api(g, "PUT", "a.p12", p12_a, {"X-Password": "pw-a"})
            self.assertEqual(status, 200, body)
            self.assertServes(g, cert_a)
            status, body = self.api(g, "PUT", "b.p12", p12_b, {"X-Password": "pw-b"})
            self.assertEqual(status, 200, body)
            self.assertServes(g, cert_b)
            status, body = self.api(g, "GET", "list")
            self.assertEqual(status, 200, body)
            self.assertEqual(sorted(e["name"] for e in json.loads(body)), ["a.p12", "b.p12"])
            status, body = self.api(g, "POST", "a.p12/activate", b"", {"X-Password": "pw-a"})
            self.assertEqual(status, 200, body)
            self.assertServes(g, cert_a)
            status, body = self.api(g, "DELETE", "b.p12")
            self.assertEqual(status, 200, body)
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        size = 0
        while True:
            chunk = long_dl.stdout.read(1 << 20)
            if not chunk:
                break
            size += len(chunk)
        long_dl.stdout.close()
        self.assertEqual(long_dl.wait(), 0)
        self.assertEqual(size, 96 << 20, "the long download was cut")
        self.assertEqual(errors, [])
        self.assertGreater(done[0], 10, "too little proxied traffic to mean anything")
        # the [upstream] section survived the API's rewrites of custom.properties
        self.assertIn("[upstream]", g.read_conf())
        self.assertIn("reloaded", g.reload())
        self.assertEqual(g.request("GET", "/echo")[0], 200)

    def test_certificate_switch_keeps_the_upstream_pool(self):
        up = self.upstream()
        g = self.proxy_gateway(up.url, threads=1)
        self.token = g.token()
        key, cert = self.pki.self_signed("c", "c.example")
        p12 = slurp(self.pki.p12("c.p12", key, cert, "pw"))
        c = g.connect()
        c.request("GET", "/conn")
        before = json.loads(c.getresponse().read())["conn"]
        status, body = self.api(g, "PUT", "c.p12", p12, {"X-Password": "pw"})
        self.assertEqual(status, 200, body)
        self.assertServes(g, cert)
        time.sleep(0.3)  # more than a worker tick: the new snapshot is picked up
        c.request("GET", "/conn")
        after = json.loads(c.getresponse().read())["conn"]
        c.close()
        self.assertEqual(after, before, "a certificate switch emptied the upstream pool")


if __name__ == "__main__":
    main()
