"""Layer 70: an expired ACME certificate is never served while a valid one exists (issue
#12), against Debian's pebble with 20 s certificates whose renewal fails (pebble stopped).

- Beside a custom wildcard certificate (*.example.test): before expiry the ACME names get
  the ACME certificate (an exact name beats a wildcard); at expiry the ACME certificate
  leaves the served set and those names get the custom one. A restart with the expired
  ACME certificate stored does not load it, serves the custom one and orders a new
  certificate at once; when the CA is back, the new ACME certificate serves again.
- Without a custom certificate: at expiry the default self-signed certificate serves (the
  choice documented in README "Automatic certificates"), as after a restart."""
import calendar
import os
import re
import time
import unittest

import test_73_acme as t73
from harness import SLOW, certgate, main, s_client

DOMAINS = t73.DOMAINS
VALIDITY = int(20 * min(SLOW, 1.5))  # seconds; a little longer under ASan


@unittest.skipUnless(os.access(t73.PEBBLE, os.X_OK) and os.access(t73.CHALLTESTSRV, os.X_OK),
                     "Debian's pebble is not installed (scripts/deps.sh test installs it)")
class AcmeExpiryTest(t73.AcmeBase):
    def issue_then_stop_ca(self, custom):
        """A gateway (with a custom wildcard certificate when custom) whose 20 s ACME
        certificate was issued; the CA is stopped then. Returns (gateway, CA, root, the
        certificate's end as epoch seconds)."""
        ca = self.pebble(validity=VALIDITY).start()
        g = self.start(self.acme_gateway(ca))
        if custom:
            key, crt = self.pki.self_signed("wild", "*.example.test", san="DNS:*.example.test")
            st, _, body = g.upload("wild.p12", self.pki.p12("wild.p12", key, crt, "pw-w"),
                                   "pw-w", g.token())
            self.assertEqual(st, 200, body)
        self.wait_issued(g)
        root = ca.root(os.path.join(self.tmp, "root.pem"))
        ca.stop()  # every renewal fails from now on
        m = re.search(r"issued for 2 names, valid to (\S+);", g.logs())
        end = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%SZ"))
        return g, ca, root, end

    def wait_expired(self, g, end):
        left = end - time.time()
        self.assertGreater(left, 0, "issued already expired: slow machine?")
        self.assertTrue(g.wait_log(r"ERROR +acme: acme-\S+ has expired and is no longer "
                                   r"served; serving ", left + 10 * SLOW), g.logs())

    def test_expired_acme_gives_way_to_the_custom_certificate(self):
        g, ca, root, end = self.issue_then_stop_ca(custom=True)
        for name in DOMAINS:
            self.verify(g, root, name)  # ACME: the exact names beat the wildcard
        self.assertIn("CN = *.example.test", self.subject(g))
        self.wait_expired(g, end)
        self.assertIn("serving custom certificate wild.p12", g.logs())
        self.assertRegex(g.logs(), r"acme: .*next attempt in \d+ s")  # renewal failed
        for name in DOMAINS + [None]:
            self.assertIn("CN = *.example.test", self.subject(g, name), name)
        # a restart does not load the expired certificate and orders a new one at once
        self.assertEqual(g.stop(), 0)
        self.start(g)
        self.assertTrue(g.wait_log(r"ERROR +acme: directory: GET https://127\.0\.0\.1:\d+/dir"),
                        g.logs())
        tail = g.logs()  # this run's
        self.assertRegex(tail, r"acme: the stored certificate is not served: .*expired")
        self.assertIn("serving custom certificate wild.p12", tail)
        self.assertIn("acme: ordering a certificate", tail)
        for name in DOMAINS + [None]:
            self.assertIn("CN = *.example.test", self.subject(g, name), name)
        p = certgate("check-config", "--data-dir", g.data_dir, check=False)
        self.assertRegex(p.stdout, r"certificate acme-\S+ expired at \S+ \(not served")
        self.assertIn("would serve: custom certificate wild.p12", p.stdout)
        # the CA back (a fresh pebble: new root, the account registered again)
        ca.start()
        before = len(g.logs())
        deadline = time.time() + 40 * SLOW
        while time.time() < deadline and "acme: certificate " not in g.logs()[before:]:
            time.sleep(0.2)
        self.assertIn("acme: certificate ", g.logs()[before:], g.logs())
        root = ca.root(os.path.join(self.tmp, "root2.pem"))
        self.verify(g, root, DOMAINS[0])
        self.assertIn("CN = *.example.test", self.subject(g))

    def test_expired_acme_without_custom_gives_the_default(self):
        g, ca, root, end = self.issue_then_stop_ca(custom=False)
        self.verify(g, root, DOMAINS[0])
        self.assertIn(DOMAINS[0], self.subject(g))  # no SNI: the ACME certificate leads
        self.wait_expired(g, end)
        self.assertIn("serving default self-signed certificate", g.logs())
        for name in (DOMAINS[0], None):
            subject = self.subject(g, name)
            self.assertNotIn("example.test", subject, name)
        p = s_client(g.port, "-servername", DOMAINS[0], "-CAfile", root)
        self.assertNotIn("Verify return code: 10 (certificate has expired)", p.stdout)


if __name__ == "__main__":
    main()
