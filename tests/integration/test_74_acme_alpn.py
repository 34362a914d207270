"""Layer 70: ACME with tls-alpn-01 (RFC 8737) against Debian's pebble: the validator's
handshake offering ALPN "acme-tls/1" on certgate's own TLS port gets the challenge
certificate (the ClientHello hook of tls.c), everything else the served one; the issued
certificate is verified with openssl s_client against pebble's root. The plain listener
is off: tls-alpn-01 does not need it."""
import os
import re
import unittest

import test_73_acme as t73
from harness import main, s_client
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


if __name__ == "__main__":
    main()
