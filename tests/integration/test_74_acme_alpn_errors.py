"""Layer 70: ACME with tls-alpn-01 (RFC 8737) against Debian's pebble: the validator's
handshake offering ALPN "acme-tls/1" on certgate's own TLS port gets the challenge
certificate (the ClientHello hook of tls.c), everything else the served one; the issued
certificate is verified with openssl s_client against pebble's root. The plain listener
is off: tls-alpn-01 does not need it. Also External Account Binding, and bad input: a CA
whose certificate does not verify, a CA that refuses the order, a challenge that fails:
each a log line naming the step and the CA's problem, the error metric, and the served
certificate unchanged."""
import os
import re
import unittest
import urllib.request

import test_73_acme as t73
from harness import free_port, main, s_client
from test_73_acme import CHALLTESTSRV, DOMAINS, PEBBLE


@unittest.skipUnless(os.access(PEBBLE, os.X_OK) and os.access(CHALLTESTSRV, os.X_OK),
                     "Debian's pebble is not installed (scripts/deps.sh test installs it)")
class AcmeAlpnTest(t73.AcmeTest):
    # only the tests of this class run here (the base class's run in test_73)
    test_issue_restart_api = test_half_of_the_nonces_rejected = None
    test_ca_not_answering_then_back = test_renewal_before_expiry = None
    test_status_and_forced_renewal = None

    def alpn_gateway(self, ca):
        g = self.gateway("gw")
        g.write_conf("[acme]\ndirectory = %s\ndomains = %s\nca-file = %s\n"
                     "challenge = tls-alpn-01\nkey-type = rsa-2048\n"
                     % (ca.directory, ", ".join(DOMAINS), ca.cert))
        return g

    def test_issue_with_tls_alpn_01(self):
        ca = self.pebble().start()
        g = self.start(self.alpn_gateway(ca))
        self.wait_issued(g)
        self.assertEqual(len(re.findall(r"validated with tls-alpn-01", g.logs())), 2, g.logs())
        leaf = self.verify(g, ca.root(os.path.join(self.tmp, "root.pem")))
        p = s_client(g.port, "-servername", DOMAINS[0], input="")
        self.assertIn("Server public key is 2048 bit", p.stdout)
        self.assertIn("subject=CN = " + DOMAINS[0], p.stdout)
        # with no challenge pending, acme-tls/1 gets the served certificate, no ALPN
        p = s_client(g.port, "-servername", DOMAINS[0], "-alpn", "acme-tls/1", input="")
        self.assertIn("No ALPN negotiated", p.stdout)
        self.assertIn("subject=CN = " + DOMAINS[0], p.stdout)
        self.assertTrue(leaf)

    def assertRefused(self, g, pattern):
        """The failure is logged with its step, the metric counts it, the default
        certificate still serves."""
        if not g.wait_log(r"ERROR +acme: " + pattern + r".*; the served certificate is "
                          r"unchanged; next attempt in \d+ s", 20):
            self.fail("expected a logged failure matching %r:\n%s" % (pattern, g.logs()))
        p = s_client(g.port, "-servername", DOMAINS[0], input="")
        self.assertNotIn("subject=CN = " + DOMAINS[0], p.stdout)
        self.assertFalse(os.path.exists(os.path.join(g.ssl_dir, "acme-%s.p12" % DOMAINS[0])))

    def metrics_gateway(self, ca, extra=""):
        self.metrics_port = free_port()
        g = self.acme_gateway(ca, extra=extra)
        with open(g.conf_path, "a") as f:
            f.write("[certgate]\nmetrics-listen = 127.0.0.1:%d\n" % self.metrics_port)
        return self.start(g)

    def acme_errors(self):
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                      timeout=5).read().decode()
        return int(re.search(r'^certgate_acme_orders_total\{result="error"\} (\d+)$', text,
                             re.M).group(1))

    def test_ca_certificate_not_verified(self):
        ca = self.pebble().start()
        other = self.pki.self_signed("other", "Not Pebble")[1]
        g = self.acme_gateway(ca)
        g.write_conf(g.read_conf().replace(ca.cert, other))
        self.start(g)
        self.assertRefused(g, r"directory: GET https://127\.0\.0\.1:\d+/dir: SSL certificate "
                              r"problem")

    def test_ca_refuses_the_order(self):
        ca = self.pebble(extra={"domainBlocklist": [DOMAINS[1]]}).start()
        g = self.metrics_gateway(ca)
        self.assertRefused(g, r"newOrder: https://\S+ answered 400: "
                              r"urn:ietf:params:acme:error:rejectedIdentifier")
        self.assertGreaterEqual(self.acme_errors(), 1)

    def test_challenge_fails(self):
        # pebble validates http-01 on a port where nothing listens
        ca = t73.Pebble(os.path.join(self.tmp, "pebble"), free_port(), self.tls_port)
        self.pebbles.append(ca)
        ca.start()
        g = self.start(self.acme_gateway(ca))
        self.assertRefused(g, r"validation: https://\S+ is invalid: "
                              r"urn:ietf:params:acme:error:connection")

    def test_external_account_binding(self):
        key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
        ca = self.pebble(extra={"externalAccountBindingRequired": True,
                                "externalAccountMACKeys": {"kid-1": key}}).start()
        g = self.start(self.acme_gateway(ca, name="noeab"))
        self.assertRefused(g, r"newAccount: the CA requires External Account Binding")
        g.stop()
        g2 = self.start(self.acme_gateway(ca, name="eab",
                                          extra="eab-kid = kid-1\neab-hmac-key = %s\n" % key))
        self.wait_issued(g2)
        self.verify(g2, ca.root(os.path.join(self.tmp, "root.pem")))
        self.assertNotIn(key, g2.logs())


if __name__ == "__main__":
    main()
