"""Layer 30: TLS: protocol versions (1.2 and 1.3 only, ssl-protocols), Mozilla
intermediate ciphers minus excluded-ciphers, server cipher preference, session
resumption (ssl-session-cache, ssl-session-tickets) and ALPN, driven with
openssl s_client, curl and Python's ssl."""
import os
import re

from harness import (SLOW, GatewayTest, client_context, handshake_ok, main,
                     recv_all, run)

REQUEST = "GET /rest/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
# Debian's openssl client will not even offer TLS 1.0/1.1 at its default security level
OLD = ["-cipher", "DEFAULT@SECLEVEL=0"]


def negotiated(p):
    """(protocol, cipher) of an s_client run, e.g. ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")."""
    m = re.search(r"^(?:New|Reused), (TLSv1\.[0-3]|\(NONE\)), Cipher is (\S+)", p.stdout, re.M)
    return (m.group(1), m.group(2)) if m else (None, None)


class TlsTest(GatewayTest):
    def start(self, webserver="", certgate="", rsa=False):
        g = self.gateway()
        if rsa:
            key, cert = self.pki.self_signed("rsa", "rsa.example")
            g.install(self.pki.p12("rsa.p12", key, cert, "pw"))
            webserver += "certificate-file = rsa.p12\ncertificate-password = pw\n"
        g.write_sections(webserver, certgate)
        return g.start()

    def assertHandshake(self, g, *args, proto=None, cipher=None):
        p = g.s_client(*args, input="")
        self.assertTrue(handshake_ok(p), "handshake with %s failed:\n%s%s"
                        % (" ".join(args), p.stdout[-1500:], p.stderr[-1500:]))
        got = negotiated(p)
        if proto:
            self.assertEqual(got[0], proto)
        if cipher:
            self.assertEqual(got[1], cipher)
        return got

    def assertNoHandshake(self, g, *args):
        p = g.s_client(*args, input="")
        self.assertFalse(handshake_ok(p), "handshake with %s succeeded: %s"
                         % (" ".join(args), negotiated(p)))
        return p


class ProtocolTest(TlsTest):
    def test_tls10_and_tls11_refused(self):
        g = self.start()
        for flag in ("-tls1", "-tls1_1"):
            p = self.assertNoHandshake(g, flag, *OLD)
            # the server answered with a protocol_version alert, the client did not give up
            self.assertIn("alert protocol version", p.stdout + p.stderr, flag)
        # the same client settings do work with TLS 1.2
        self.assertHandshake(g, "-tls1_2", *OLD, proto="TLSv1.2")

    def test_tls12_and_tls13_by_default(self):
        g = self.start()
        self.assertHandshake(g, "-tls1_2", proto="TLSv1.2")
        self.assertHandshake(g, "-tls1_3", proto="TLSv1.3")
        code, body = g.curl("--tlsv1.2", "--tls-max", "1.2", g.url("/rest/health"))
        self.assertEqual((code, body), (200, "RUNNING"))

    def test_tls13_only(self):
        g = self.start(webserver="ssl-protocols = TLSv1.3\n")
        self.assertHandshake(g, "-tls1_3", proto="TLSv1.3")
        self.assertNoHandshake(g, "-tls1_2")

    def test_tls12_only(self):
        g = self.start(webserver="ssl-protocols = TLSv1.2\n")
        self.assertHandshake(g, "-tls1_2", proto="TLSv1.2")
        self.assertNoHandshake(g, "-tls1_3")

    def test_both_comma_separated(self):
        g = self.start(webserver="ssl-protocols = TLSv1.3, TLSv1.2\n")
        self.assertHandshake(g, "-tls1_2", proto="TLSv1.2")
        self.assertHandshake(g, "-tls1_3", proto="TLSv1.3")


class CipherTest(TlsTest):
    def test_mozilla_intermediate_only(self):
        g = self.start()  # the default certificate is ECDSA
        for c in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                  "ECDHE-ECDSA-CHACHA20-POLY1305"):
            self.assertHandshake(g, "-tls1_2", "-cipher", c, cipher=c)
        for c in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-GCM-SHA256"):
            self.assertNoHandshake(g, "-tls1_2", "-cipher", c)

    def test_mozilla_intermediate_rsa(self):
        g = self.start(rsa=True)
        for c in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305",
                  "DHE-RSA-AES256-GCM-SHA384"):
            self.assertHandshake(g, "-tls1_2", "-cipher", c, cipher=c)
        for c in ("AES256-SHA", "ECDHE-RSA-AES128-SHA", "DHE-RSA-AES128-SHA256"):
            self.assertNoHandshake(g, "-tls1_2", "-cipher", c)

    def test_excluded_ciphers(self):
        g = self.start(webserver="excluded-ciphers = CHACHA20, ECDHE-ECDSA-AES256\n")
        self.assertNoHandshake(g, "-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305")
        self.assertNoHandshake(g, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384")
        self.assertHandshake(g, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256",
                             cipher="ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertNoHandshake(g, "-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256")
        for s in ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"):
            self.assertHandshake(g, "-tls1_3", "-ciphersuites", s, cipher=s)

    def test_excluded_ciphers_java_style_names(self):
        """ActiveGate is Java: its operators write IANA-style substrings such as AES_256,
        which also name the TLS 1.3 suites."""
        g = self.start(webserver="excluded-ciphers = AES_256\n")
        self.assertNoHandshake(g, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384")
        self.assertNoHandshake(g, "-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384")
        self.assertHandshake(g, "-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305",
                             cipher="ECDHE-ECDSA-CHACHA20-POLY1305")
        self.assertHandshake(g, "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256",
                             cipher="TLS_AES_128_GCM_SHA256")

    def test_tls13_suites_without_exclusions(self):
        g = self.start()
        for s in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                  "TLS_CHACHA20_POLY1305_SHA256"):
            self.assertHandshake(g, "-tls1_3", "-ciphersuites", s, cipher=s)

    def test_server_cipher_preference(self):
        g = self.start()
        # the client prefers ChaCha20; the server's order (AES-128-GCM first) wins
        self.assertHandshake(g, "-tls1_2", "-cipher",
                             "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256",
                             cipher="ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertHandshake(g, "-tls1_3", "-ciphersuites",
                             "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384",
                             cipher="TLS_AES_256_GCM_SHA384")


class ResumptionTest(TlsTest):
    def twice(self, g, version):
        """Two s_client runs sharing a session file; returns the two 'New'/'Reused' words."""
        sess = os.path.join(self.tmp, "session%s.pem" % version)
        if os.path.exists(sess):
            os.remove(sess)
        words = []
        for flag in ("-sess_out", "-sess_in"):
            if flag == "-sess_in" and not os.path.exists(sess):
                # s_client stores nothing when the server offered no way to resume
                words.append("New")
                break
            # -ign_eof: read the answer (and with it the TLS 1.3 ticket) before closing
            p = g.s_client(version, "-ign_eof", flag, sess, input=REQUEST)
            self.assertIn("RUNNING", p.stdout)
            m = re.search(r"^(New|Reused), TLSv", p.stdout, re.M)
            self.assertIsNotNone(m, p.stdout)
            words.append(m.group(1))
        return words

    def test_resumed_tls12_and_tls13(self):
        g = self.start()
        self.assertEqual(self.twice(g, "-tls1_2"), ["New", "Reused"])
        self.assertEqual(self.twice(g, "-tls1_3"), ["New", "Reused"])

    def test_not_resumed_when_cache_and_tickets_off(self):
        g = self.start(certgate="ssl-session-cache = off\nssl-session-tickets = off\n")
        self.assertEqual(self.twice(g, "-tls1_2"), ["New", "New"])
        self.assertEqual(self.twice(g, "-tls1_3"), ["New", "New"])

    def test_tls12_resumed_by_session_cache_alone(self):
        g = self.start(certgate="ssl-session-tickets = off\n")
        self.assertEqual(self.twice(g, "-tls1_2"), ["New", "Reused"])

    def test_resumed_by_tickets_alone(self):
        g = self.start(certgate="ssl-session-cache = off\n")
        self.assertEqual(self.twice(g, "-tls1_2"), ["New", "Reused"])
        self.assertEqual(self.twice(g, "-tls1_3"), ["New", "Reused"])

    def test_python_client_resumes(self):
        g = self.start()
        ctx = client_context()
        with g.tls_socket(context=ctx) as t:
            t.sendall(REQUEST.encode())
            while t.recv(4096):
                pass
            session = t.session
        with g.tls_socket(context=ctx, session=session) as t:
            self.assertTrue(t.session_reused)


class AlpnTest(TlsTest):
    def test_alpn_http11(self):
        g = self.start()
        p = g.s_client("-alpn", "h2,http/1.1", input="")
        self.assertIn("ALPN protocol: http/1.1", p.stdout)
        p = g.s_client("-alpn", "http/1.1", input="")
        self.assertIn("ALPN protocol: http/1.1", p.stdout)

    def test_h2_only_client_gets_no_alpn_but_a_handshake(self):
        g = self.start()
        p = g.s_client("-alpn", "h2", input="")
        self.assertTrue(handshake_ok(p), p.stdout + p.stderr)
        self.assertIn("No ALPN negotiated", p.stdout)
        self.assertNotIn("ALPN protocol: h2", p.stdout)

    def test_python_and_curl_negotiate_http11(self):
        g = self.start()
        with g.tls_socket(alpn=["h2", "http/1.1"]) as t:
            self.assertEqual(t.selected_alpn_protocol(), "http/1.1")
            t.sendall(REQUEST.encode())
            data = recv_all(t)
            self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
        p = run(["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version}",
                 "--max-time", str(int(20 * SLOW)), g.url("/rest/health")], check=False)
        self.assertEqual(p.stdout, "1.1")


if __name__ == "__main__":
    main()
