"""Layer 94: [com.compuware.apm.webserver] included-ciphers, ActiveGate's (Jetty's)
IncludeCipherSuites: only the built-in ciphers whose OpenSSL or IANA (Java) name contains
one of its comma-separated entries are offered, and excluded-ciphers is applied after it.
Driven with openssl s_client offering one cipher at a time."""
import re

from harness import WEBSERVER, GatewayTest, handshake_ok, main


def negotiated(p):
    m = re.search(r"^(?:New|Reused), (TLSv1\.[0-3]|\(NONE\)), Cipher is (\S+)", p.stdout, re.M)
    return (m.group(1), m.group(2)) if m else (None, None)


class IncludedCiphersTest(GatewayTest):
    def start(self, webserver):
        g = self.gateway()
        g.write_sections(webserver)
        return g.start()

    def accepts(self, g, version, cipher):
        flag = "-cipher" if version == "-tls1_2" else "-ciphersuites"
        p = g.s_client(version, flag, cipher, input="")
        if not handshake_ok(p):
            return False
        self.assertEqual(negotiated(p)[1], cipher)
        return True

    def test_java_names_only_those_offered(self):
        g = self.start("included-ciphers = TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, "
                       "TLS_AES_128_GCM_SHA256\n")
        self.assertTrue(self.accepts(g, "-tls1_2", "ECDHE-ECDSA-AES256-GCM-SHA384"))
        for c in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
            self.assertFalse(self.accepts(g, "-tls1_2", c), c)
        self.assertTrue(self.accepts(g, "-tls1_3", "TLS_AES_128_GCM_SHA256"))
        for s in ("TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"):
            self.assertFalse(self.accepts(g, "-tls1_3", s), s)

    def test_included_then_excluded(self):
        # AES_256 includes one TLS 1.2 cipher per key type and TLS_AES_256_GCM_SHA384;
        # CHACHA20 two more; excluded-ciphers then takes ECDSA-CHACHA20 out again
        g = self.start("included-ciphers = AES_256, CHACHA20\n"
                       "excluded-ciphers = ECDHE-ECDSA-CHACHA20\n")
        self.assertTrue(self.accepts(g, "-tls1_2", "ECDHE-ECDSA-AES256-GCM-SHA384"))
        self.assertFalse(self.accepts(g, "-tls1_2", "ECDHE-ECDSA-CHACHA20-POLY1305"))
        self.assertFalse(self.accepts(g, "-tls1_2", "ECDHE-ECDSA-AES128-GCM-SHA256"))
        self.assertTrue(self.accepts(g, "-tls1_3", "TLS_AES_256_GCM_SHA384"))
        self.assertTrue(self.accepts(g, "-tls1_3", "TLS_CHACHA20_POLY1305_SHA256"))
        self.assertFalse(self.accepts(g, "-tls1_3", "TLS_AES_128_GCM_SHA256"))

    def test_empty_means_all(self):
        g = self.start("included-ciphers =\n")
        self.assertTrue(self.accepts(g, "-tls1_2", "ECDHE-ECDSA-CHACHA20-POLY1305"))
        self.assertTrue(self.accepts(g, "-tls1_3", "TLS_AES_128_GCM_SHA256"))

    def assert_start_fails(self, text, message):
        g = self.gateway()
        g.write_conf(text)
        self.assertEqual(g.run_to_exit(), 1, g.logs())
        self.assertIn(message.replace("PATH", g.conf_path), g.logs())
        self.assertNotIn("ready:", g.logs())

    def test_nothing_left_for_a_version(self):
        # only TLS 1.2 ciphers included while TLS 1.3 is on: a clear start error
        self.assert_start_fails(
            "[%s]\n\nincluded-ciphers = TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n" % WEBSERVER,
            "PATH:3: included-ciphers leaves no cipher for TLSv1.3; include one of its "
            "ciphers (e.g. TLS_AES_128_GCM_SHA256) or remove TLSv1.3 from ssl-protocols")
        self.assert_start_fails(
            "[%s]\nincluded-ciphers = GCM\nexcluded-ciphers = DHE\n" % WEBSERVER,
            "PATH:3: included-ciphers and excluded-ciphers leave no cipher for TLSv1.2")
        # with TLS 1.3 off, a TLS 1.2-only list is fine
        g = self.start("ssl-protocols = TLSv1.2\n"
                       "included-ciphers = TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n")
        self.assertTrue(self.accepts(g, "-tls1_2", "ECDHE-ECDSA-AES128-GCM-SHA256"))

    def test_reload_keeps_running_ciphers_on_error(self):
        g = self.start("included-ciphers = AES_128\n")
        g.write_conf("[%s]\nincluded-ciphers = nothing-matches\n" % WEBSERVER)
        g.reload(expect="reload failed")
        self.assertIn("included-ciphers leaves no cipher", g.logs())
        self.assertTrue(self.accepts(g, "-tls1_3", "TLS_AES_128_GCM_SHA256"))
        self.assertFalse(self.accepts(g, "-tls1_3", "TLS_AES_256_GCM_SHA384"))


if __name__ == "__main__":
    main()
