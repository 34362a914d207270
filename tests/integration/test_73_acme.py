"""Layer 70: the ACME client (issue #12, items 3 and 4) against Debian's real pebble and
pebble-challtestsrv, started here: pebble's own HTTPS certificate is made at test time,
its DNS is the challenge server (every name resolves to 127.0.0.1), and its http-01
validations go to certgate's plain `port` listener. Checked: issuance with http-01 (the
served certificate verified by openssl s_client against pebble's root, fetched from its
management interface), the API's view ("source":"acme", DELETE refused), a restart that
keeps the account (one newAccount in pebble's log) and the certificate, 50 % badNonce
answers, and a CA that does not answer (logged step, backoff, the served certificate
unchanged, success once it is back), and a custom certificate beside the ACME one (each
serves its own names, no SNI gets the custom one; SIGHUP and restart keep both)."""
import json
import os
import re
import shutil
import ssl
import subprocess
import time
import unittest
import urllib.request

from harness import SLOW, GatewayTest, certgate, free_port, main, run, s_client

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"
DOMAINS = ["gw.example.test", "gw2.example.test"]


class Pebble:
    """pebble + pebble-challtestsrv on free loopback ports; http-01 and tls-alpn-01
    validations go to http_port / tls_port."""

    def __init__(self, folder, http_port, tls_port, nonce_reject=0, validity=None, extra=None):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.port, self.mgmt, self.dns, self.cts_mgmt = (free_port() for _ in range(4))
        self.cert = os.path.join(folder, "pebble.pem")
        self.key = os.path.join(folder, "pebble.key")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj",
             "/CN=pebble", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        self.conf = os.path.join(folder, "pebble.json")
        with open(self.conf, "w") as f:
            json.dump({"pebble": {
                "listenAddress": "127.0.0.1:%d" % self.port,
                "managementListenAddress": "127.0.0.1:%d" % self.mgmt,
                "certificate": self.cert, "privateKey": self.key,
                "httpPort": http_port, "tlsPort": tls_port,
                "ocspResponderURL": "", "externalAccountBindingRequired": False,
                **({"certificateValidityPeriod": validity} if validity else {}),
                **(extra or {})}}, f)
        self.env = dict(os.environ, PEBBLE_VA_NOSLEEP="1",
                        PEBBLE_WFE_NONCEREJECT=str(nonce_reject))
        self.log_path = os.path.join(folder, "pebble.log")
        self.procs = []

    @property
    def directory(self):
        return "https://127.0.0.1:%d/dir" % self.port

    def start(self):
        log = open(self.log_path, "a")
        self.procs.append(subprocess.Popen(
            [CHALLTESTSRV, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
             "-dns01", "127.0.0.1:%d" % self.dns, "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", "127.0.0.1:%d" % self.cts_mgmt],
            stdout=log, stderr=subprocess.STDOUT))
        self.procs.append(subprocess.Popen(
            [PEBBLE, "-config", self.conf, "-dnsserver", "127.0.0.1:%d" % self.dns],
            stdout=log, stderr=subprocess.STDOUT, env=self.env))
        log.close()
        ctx = ssl.create_default_context(cafile=self.cert)
        deadline = time.time() + 15 * SLOW
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.directory, context=ctx, timeout=2).read()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("pebble does not answer:\n" + self.logs())

    def stop(self):
        for p in self.procs:
            p.terminate()
            p.wait(10)
        self.procs = []

    def logs(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def root(self, path):
        """pebble's current root certificate (from its management interface) into path."""
        ctx = ssl.create_default_context(cafile=self.cert)
        pem = urllib.request.urlopen("https://127.0.0.1:%d/roots/0" % self.mgmt,
                                     context=ctx, timeout=5).read()
        with open(path, "wb") as f:
            f.write(pem)
        return path


@unittest.skipUnless(os.access(PEBBLE, os.X_OK) and os.access(CHALLTESTSRV, os.X_OK),
                     "Debian's pebble is not installed (scripts/deps.sh test installs it)")
class AcmeBase(GatewayTest):
    """pebble, an [acme] gateway and the checks of what it serves (test_75 uses them)."""

    def setUp(self):
        super().setUp()
        self.http_port, self.tls_port = free_port(), free_port()
        self.pebbles = []

    def tearDown(self):
        for p in self.pebbles:
            p.stop()
        super().tearDown()

    def pebble(self, **kw):
        p = Pebble(os.path.join(self.tmp, "pebble%d" % len(self.pebbles)), self.http_port,
                   self.tls_port, **kw)
        self.pebbles.append(p)
        return p

    def acme_gateway(self, pebble, name="gw", extra=""):
        g = self.gateway(name)
        g.write_conf("[com.compuware.apm.webserver]\nport = %d\n"
                     "[acme]\ndirectory = %s\ndomains = %s\nca-file = %s\n"
                     "email = ops@example.test\n%s"
                     % (self.http_port, pebble.directory, ", ".join(DOMAINS), pebble.cert,
                        extra))
        return g

    def start(self, g):
        g.start(port=self.tls_port)
        return g

    def wait_issued(self, g, timeout=30):
        if not g.wait_log(r"acme: certificate \S+ issued", timeout):
            self.fail("no certificate was issued:\n%s" % g.logs())

    def verify(self, g, root, name=DOMAINS[1]):
        """openssl s_client verifies the served chain against root and the name."""
        p = s_client(g.port, "-servername", name, "-CAfile", root, "-verify_hostname", name,
                     "-verify_return_error", "-showcerts")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("Verify return code: 0 (ok)", p.stdout)
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", p.stdout, re.S)
        return m.group(0)

    def subject(self, g, name=None):
        """The subject openssl s_client gets with -servername name (None: no SNI)."""
        p = s_client(g.port, *(("-servername", name) if name else ("-noservername",)))
        m = re.search(r"^subject=(.*)$", p.stdout, re.M)
        self.assertIsNotNone(m, p.stdout + p.stderr)
        return m.group(1)


@unittest.skipUnless(os.access(PEBBLE, os.X_OK) and os.access(CHALLTESTSRV, os.X_OK),
                     "Debian's pebble is not installed (scripts/deps.sh test installs it)")
class AcmeTest(AcmeBase):
    def test_issue_restart_api(self):
        ca = self.pebble().start()
        g = self.start(self.acme_gateway(ca))
        token = g.token()
        self.wait_issued(g)
        root = ca.root(os.path.join(self.tmp, "root.pem"))
        leaf = self.verify(g, root)
        # the files: account key 0600 in a 0700 folder, the certificate as a PKCS#12
        acme_dir = os.path.join(g.data_dir, "acme")
        self.assertEqual(os.stat(acme_dir).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(os.path.join(acme_dir, "account.key")).st_mode & 0o777, 0o600)
        name = "acme-%s.p12" % DOMAINS[0]
        self.assertEqual(os.stat(os.path.join(g.ssl_dir, name)).st_mode & 0o777, 0o600)
        # the API: listed with "source":"acme" and its description; delete refused
        auth = {"Authorization": "Api-Token " + token}
        st, _, body = g.request("GET", "/e/myenv/api/v1/certificate/list", headers=auth)
        self.assertEqual(st, 200, body)
        entry = [e for e in json.loads(body) if e["name"] == name]
        self.assertEqual(len(entry), 1, body)
        self.assertEqual(entry[0].get("source"), "acme", body)
        self.assertIn("CN=" + DOMAINS[0], json.dumps(entry[0]))
        st, _, body = g.request("GET", "/e/myenv/api/v1/certificate/%s/list" % name,
                                headers=auth)
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body).get("source"), "acme", body)
        st, _, body = g.request("DELETE", "/e/myenv/api/v1/certificate/" + name, headers=auth)
        self.assertEqual(st, 403, body)
        self.assertIn("[acme]", body.decode())
        self.assertTrue(os.path.exists(os.path.join(g.ssl_dir, name)))
        # check-config names the ACME certificate as the one served (no custom one)
        p = certgate("check-config", "--data-dir", g.data_dir, check=False)
        self.assertIn("would serve: ACME certificate %s for %s (valid to " %
                      (name, ", ".join(DOMAINS)), p.stdout)
        # a restart keeps the account (no second newAccount) and the certificate
        self.assertEqual(g.stop(), 0)
        self.start(g)
        self.assertTrue(g.wait_log(r"acme: %s is served; renewal at" % re.escape(name)),
                        g.logs())
        self.assertEqual(self.verify(g, root), leaf)
        time.sleep(1)
        self.assertNotIn("registered", g.logs())
        self.assertNotIn("ordering", g.logs())
        self.assertEqual(len(re.findall(r"POST /sign-me-up", ca.logs())), 1, ca.logs())

    def test_renewal_before_expiry(self):
        """A 75 s certificate with renew-before = 60 s is renewed 9 to 15 s after it was
        issued; the first one serves until the second is ready."""
        ca = self.pebble(validity=75).start()
        g = self.start(self.acme_gateway(ca, extra="renew-before = 60\n"))
        self.wait_issued(g)
        root = ca.root(os.path.join(self.tmp, "root.pem"))
        first = self.verify(g, root)
        m = re.search(r"issued for 2 names, valid to (\S+); renewal at (\S+)", g.logs())
        self.assertIsNotNone(m, g.logs())
        t_end = time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%SZ"))
        t_renew = time.mktime(time.strptime(m.group(2), "%Y-%m-%dT%H:%M:%SZ"))
        self.assertTrue(60 <= t_end - t_renew <= 67, m.group(0))
        self.assertEqual(self.verify(g, root), first)  # still the first one
        deadline = time.time() + 40 * SLOW
        while time.time() < deadline and len(re.findall(r"acme: certificate \S+ issued",
                                                         g.logs())) < 2:
            time.sleep(0.2)
        self.assertEqual(len(re.findall(r"acme: certificate \S+ issued", g.logs())), 2,
                         g.logs())
        self.assertNotEqual(self.verify(g, root), first)

    def test_status_and_forced_renewal(self):
        """certgate acme status|renew and the API's acme/status and acme/renew (same token
        scope as the certificate API)."""
        ca = self.pebble().start()
        g = self.start(self.acme_gateway(ca))
        token = g.token()
        self.wait_issued(g)
        root = ca.root(os.path.join(self.tmp, "root.pem"))
        first = self.verify(g, root)
        p = certgate("acme", "status", "--data-dir", g.data_dir)
        self.assertIn("state: waiting", p.stdout)
        self.assertIn("file: acme-%s.p12" % DOMAINS[0], p.stdout)
        self.assertIn("domains: %s" % ", ".join(DOMAINS), p.stdout)
        auth = {"Authorization": "Api-Token " + token}
        st, _, body = g.request("GET", "/e/myenv/api/v1/certificate/acme/status", headers=auth)
        self.assertEqual(st, 200, body)
        status = json.loads(body)
        self.assertEqual(status["state"], "waiting")
        self.assertEqual(status["domains"], DOMAINS)
        self.assertIn("nextAttempt", status)
        st, _, body = g.request("GET", "/e/myenv/api/v1/certificate/acme/status")
        self.assertEqual(st, 401, body)
        st, _, body = g.request("GET", "/e/myenv/api/v1/certificate/acme/renew", headers=auth)
        self.assertEqual(st, 405, body)
        # forced through the API: a new certificate at once
        st, _, body = g.request("POST", "/e/myenv/api/v1/certificate/acme/renew", headers=auth)
        self.assertEqual(st, 202, body)
        deadline = time.time() + 30 * SLOW
        while time.time() < deadline and g.logs().count("acme: certificate ") < 2:
            time.sleep(0.2)
        second = self.verify(g, root)
        self.assertNotEqual(second, first)
        # and through the command line, waiting for the result
        p = certgate("acme", "renew", "--data-dir", g.data_dir, "--wait", str(int(30 * SLOW)))
        self.assertIn("renewal requested", p.stdout)
        self.assertIn("state: waiting", p.stdout)
        self.assertEqual(g.logs().count("acme: certificate "), 3, g.logs())
        self.assertNotEqual(self.verify(g, root), second)

    def test_custom_certificate_beside_acme(self):
        """Issue #12: the ACME certificate joins the custom file's served set. A custom
        certificate for another name uploaded (and so activated) through the API serves
        its name and clients without SNI; the ACME names keep the ACME certificate; the
        active file cannot be deleted (403); SIGHUP and a restart keep both served."""
        ca = self.pebble().start()
        g = self.start(self.acme_gateway(ca))
        token = g.token()
        self.wait_issued(g)
        root = ca.root(os.path.join(self.tmp, "root.pem"))
        leaf = self.verify(g, root, DOMAINS[0])
        key, crt = self.pki.self_signed("custom", "custom.example.test",
                                        san="DNS:custom.example.test")
        p12 = self.pki.p12("custom.p12", key, crt, "pw-custom")
        st, _, body = g.upload("custom.p12", p12, "pw-custom", token)
        self.assertEqual(st, 200, body)

        def both_served(when):
            for name in DOMAINS:
                self.assertEqual(self.verify(g, root, name), leaf, when)
            self.assertIn("CN = custom.example.test", self.subject(g, "custom.example.test"),
                          when)
            self.assertIn("CN = custom.example.test", self.subject(g), when)
            self.assertIn("CN = custom.example.test", self.subject(g, "other.example.test"),
                          when)

        both_served("after the upload")
        st, _, body = g.call("DELETE", "custom.p12", token)
        self.assertEqual(st, 403, body)
        self.assertIn("active", body.decode())
        both_served("after the refused DELETE")
        self.assertIn("reloaded; serving custom certificate custom.p12", g.reload())
        both_served("after SIGHUP")
        p = certgate("check-config", "--data-dir", g.data_dir, check=False)
        self.assertIn("would serve: custom certificate custom.p12", p.stdout)
        self.assertIn("and the ACME certificate for its names (SNI)", p.stdout)
        self.assertIn("certificate acme-%s.p12 for %s" % (DOMAINS[0], ", ".join(DOMAINS)),
                      p.stdout)
        self.assertEqual(g.stop(), 0)
        self.start(g)
        self.assertTrue(g.wait_log(r"acme: acme-\S+ is served; renewal at"), g.logs())
        both_served("after a restart")

    def test_half_of_the_nonces_rejected(self):
        ca = self.pebble(nonce_reject=50).start()
        g = self.start(self.acme_gateway(ca))
        self.wait_issued(g, timeout=60)
        self.verify(g, ca.root(os.path.join(self.tmp, "root.pem")))
        n = int(re.search(r"\((\d+) badNonce answers? retried\)", g.logs()).group(1))
        self.assertGreater(n, 0, g.logs())

    def test_ca_not_answering_then_back(self):
        ca = self.pebble()  # not started: nothing answers at the directory URL
        g = self.start(self.acme_gateway(ca))
        self.assertTrue(g.wait_log(r"ERROR +acme: directory: GET https://127\.0\.0\.1:\d+/dir: "
                                   r".*; the served certificate is unchanged; next attempt in "
                                   r"\d+ s", 15), g.logs())
        p = s_client(g.port, "-servername", DOMAINS[0])
        self.assertIn("subject=", p.stdout)
        self.assertNotIn(DOMAINS[0], re.search(r"subject=.*", p.stdout).group(0))
        ca.start()
        self.wait_issued(g, timeout=40)
        self.verify(g, ca.root(os.path.join(self.tmp, "root.pem")))
        # the second attempt waited longer than the first (capped exponential backoff)
        waits = [int(w) for w in re.findall(r"next attempt in (\d+) s", g.logs())]
        self.assertGreaterEqual(len(waits), 1)
        self.assertTrue(all(b > a for a, b in zip(waits, waits[1:])), waits)


if __name__ == "__main__":
    main()
