"""Layer 50: signals. SIGTERM/SIGINT stop gracefully (no new connections, in-flight
requests finish within 10 s, exit 0); SIGHUP re-reads custom.properties and the
certificate, keeps serving the current one on any error, and drops no connection."""
import os
import signal
import socket
import threading
import time

from harness import (SLOW, WEBSERVER, GatewayTest, cert_fingerprint, der_fingerprint, main,
                     read_response, wait_closed)

HEALTH = b"GET /rest/health HTTP/1.1\r\nHost: localhost\r\n\r\n"


def start_request(t, f):
    """Sends the header block of a request with a 10-byte body and waits for the
    server's 100 Continue: from then on the server is inside the request."""
    t.sendall(b"GET /rest/health HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
              b"Expect: 100-continue\r\n\r\n")
    line = f.readline()
    if not line.startswith(b"HTTP/1.1 100 "):
        raise AssertionError("expected 100 Continue, got %r" % line)
    f.readline()


class StopTest(GatewayTest):
    def test_sigterm_lets_in_flight_request_finish(self):
        g = self.gateway().start()
        t = g.tls_socket()
        self.addCleanup(t.close)
        f = t.makefile("rb")
        # a request whose body is still on its way
        start_request(t, f)
        t.sendall(b"01234")
        g.send_signal(signal.SIGTERM)
        self.assertTrue(g.wait_log(r"stopping"), g.logs())
        # no new connections while the old one finishes
        deadline = time.time() + 5 * SLOW
        while True:
            try:
                socket.create_connection(("127.0.0.1", g.port), timeout=2).close()
            except ConnectionRefusedError:
                break
            self.assertLess(time.time(), deadline, "still accepting connections after SIGTERM")
            time.sleep(0.05)
        time.sleep(0.3)
        self.assertIsNone(g.proc.poll(), "certgate exited before the in-flight request ended")
        t.sendall(b"56789")
        status, headers, body = read_response(f)
        self.assertEqual((status, body), (200, b"RUNNING"))
        self.assertEqual(headers.get("connection"), "close")
        self.assertEqual(g.proc.wait(5 * SLOW), 0)
        self.assertIn("stopped", g.logs())

    def test_sigint_exits_zero(self):
        g = self.gateway().start()
        self.assertEqual(g.request("GET", "/rest/health")[0], 200)
        self.assertEqual(g.stop(signal.SIGINT), 0)
        self.assertIn("stopped", g.logs())

    def test_idle_connections_do_not_delay_the_stop(self):
        g = self.gateway().start()
        conns = []
        for _ in range(5):
            c = g.connect()
            c.request("GET", "/rest/health")
            c.getresponse().read()
            conns.append(c)  # idle keep-alive connections
        start = time.time()
        self.assertEqual(g.stop(signal.SIGTERM), 0)
        self.assertLess(time.time() - start, 5 * SLOW, "idle connections held the stop up")
        for c in conns:
            c.close()

    def test_stuck_request_is_cut_after_10s(self):
        g = self.gateway().start()
        t = g.tls_socket(timeout=30)
        self.addCleanup(t.close)
        start_request(t, t.makefile("rb"))
        t.sendall(b"0")
        start = time.time()
        g.send_signal(signal.SIGTERM)
        rc = g.proc.wait(20 * SLOW)
        took = time.time() - start
        self.assertEqual(rc, 0)
        self.assertGreater(took, 9, "the in-flight request did not get its 10 s")
        self.assertLess(took, 10 + 5 * SLOW)


class ReloadTest(GatewayTest):
    def make_p12(self, name, cn, password):
        key, cert = self.pki.self_signed(name, cn)
        return self.pki.p12(name + ".p12", key, cert, password), cert

    def configure(self, g, p12name, password, extra=""):
        g.write_conf("# reload test\n[%s]\ncertificate-file = %s\ncertificate-password = %s\n%s"
                     % (WEBSERVER, p12name, password, extra))

    def start_with_a(self):
        g = self.gateway()
        p12, cert_a = self.make_p12("a", "a.example", "pa")
        g.install(p12)
        self.configure(g, "a.p12", "pa")
        g.start()
        self.assertServes(g, cert_a)
        return g, cert_a

    def open_keepalive(self, g):
        c = g.connect()
        c.request("GET", "/rest/health")
        self.assertEqual(c.getresponse().read(), b"RUNNING")
        self.addCleanup(c.close)
        return c

    def assertStillWorks(self, c, sock, cert):
        c.request("GET", "/rest/health")
        r = c.getresponse()
        self.assertEqual((r.status, r.read()), (200, b"RUNNING"))
        self.assertIs(c.sock, sock, "the keep-alive connection was dropped")
        self.assertEqual(der_fingerprint(c.sock.getpeercert(True)), cert_fingerprint(cert))

    def test_sighup_switches_certificate_keepalive_survives(self):
        g, cert_a = self.start_with_a()
        c = self.open_keepalive(g)
        sock = c.sock
        p12, cert_b = self.make_p12("b", "b.example", "pb")
        g.install(p12)
        self.configure(g, "b.p12", "pb")
        tail = g.reload()
        self.assertRegex(tail, r"reloaded; serving custom certificate b\.p12")
        self.assertServes(g, cert_b, "a new handshake does not get the new certificate")
        chain = g.served_chain()
        self.assertEqual(chain, ["CN = b.example"])
        # the old connection keeps its certificate and keeps working
        self.assertStillWorks(c, sock, cert_a)
        self.assertStillWorks(c, sock, cert_a)

    def test_sighup_picks_up_a_replaced_file(self):
        """Renewal: the same file name with new content, then SIGHUP."""
        g, cert_a = self.start_with_a()
        c = self.open_keepalive(g)
        sock = c.sock
        p12, cert_new = self.make_p12("renewed", "a.example", "pa")
        g.install(p12, "a.p12")
        self.assertIn("reloaded", g.reload())
        self.assertServes(g, cert_new)
        self.assertStillWorks(c, sock, cert_a)

    def test_request_in_flight_across_sighup(self):
        g, cert_a = self.start_with_a()
        t = g.tls_socket()
        self.addCleanup(t.close)
        f = t.makefile("rb")
        t.sendall(b"GET /rest/health HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
        p12, _ = self.make_p12("b", "b.example", "pb")
        g.install(p12)
        self.configure(g, "b.p12", "pb")
        self.assertIn("reloaded", g.reload())
        t.sendall(b"def")
        self.assertEqual(read_response(f)[::2], (200, b"RUNNING"))
        t.sendall(HEALTH)
        self.assertEqual(read_response(f)[::2], (200, b"RUNNING"))

    def test_sighup_applies_http_timeouts_to_new_connections(self):
        g, _ = self.start_with_a()
        text = g.read_conf()
        g.write_conf(text + "[certgate]\nkeepalive-timeout = 0.5\n")
        self.assertIn("reloaded", g.reload())
        t = g.tls_socket()
        self.addCleanup(t.close)
        f = t.makefile("rb")
        t.sendall(HEALTH)
        self.assertEqual(read_response(f)[0], 200)
        took, _ = wait_closed(t, 5 * SLOW)
        self.assertIsNotNone(took, "the reloaded keepalive-timeout was not applied")

    def test_sighup_back_to_default(self):
        g, cert_a = self.start_with_a()
        c = self.open_keepalive(g)
        sock = c.sock
        g.write_conf("[%s]\n" % WEBSERVER)
        self.assertIn("reloaded; serving default self-signed certificate", g.reload())
        self.assertServes(g, os.path.join(g.ssl_dir, ".default-certificate.pem"))
        self.assertStillWorks(c, sock, cert_a)

    def test_sighup_config_error_keeps_serving(self):
        g, cert_a = self.start_with_a()
        c = self.open_keepalive(g)
        sock = c.sock
        g.write_conf("[%s]\nssl-protocols = TLSv1.0\ncertificate-file = a.p12\n" % WEBSERVER)
        tail = g.reload()
        self.assertIn("reload failed, still serving the previous configuration: %s:2: "
                      "ssl-protocols: 'TLSv1.0' is not supported" % g.conf_path, tail)
        self.assertServes(g, cert_a)
        self.assertStillWorks(c, sock, cert_a)
        self.assertEqual(g.request("GET", "/rest/health")[0], 200)

    def test_sighup_certificate_error_keeps_serving(self):
        g, cert_a = self.start_with_a()
        c = self.open_keepalive(g)
        sock = c.sock
        p12, cert_b = self.make_p12("b", "b.example", "right")
        g.install(p12)
        self.configure(g, "b.p12", "WrongPw-4471")
        tail = g.reload()
        self.assertIn("reload failed, still serving the previous configuration: b.p12: "
                      "wrong password", tail)
        self.assertNotIn("WrongPw-4471", g.logs())
        self.assertServes(g, cert_a)
        self.assertStillWorks(c, sock, cert_a)
        # each refusal reason is reported the same way on reload
        self.configure(g, "b.p12", "right", extra="certificate-alias = nosuch\n")
        tail = g.reload()
        self.assertIn("reload failed, still serving the previous configuration: b.p12: alias "
                      "'nosuch' not found; the file's key aliases are: '1'", tail)
        self.assertServes(g, cert_a)
        g.write_conf("[%s]\ncertificate-file = missing.p12\n" % WEBSERVER)
        self.assertIn("missing.p12: cannot open", g.reload())
        self.assertServes(g, cert_a)

    def test_sighup_applies_tls_settings(self):
        g, cert_a = self.start_with_a()
        t = g.tls_socket()  # negotiated before the reload, TLS 1.3 by default
        self.addCleanup(t.close)
        f = t.makefile("rb")
        t.sendall(HEALTH)
        self.assertEqual(read_response(f)[0], 200)
        self.assertTrue(g.s_client("-tls1_2", input="").returncode == 0)
        text = g.read_conf()
        g.write_conf(text + "ssl-protocols = TLSv1.3\n")
        self.assertIn("reloaded", g.reload())
        p = g.s_client("-tls1_2", input="")
        self.assertNotEqual(p.returncode, 0, "TLS 1.2 still accepted after the reload")
        self.assertEqual(g.s_client("-tls1_3", input="").returncode, 0)
        t.sendall(HEALTH)
        self.assertEqual(read_response(f)[0], 200)

    def test_no_connection_dropped_by_reloads(self):
        g, cert_a = self.start_with_a()
        p12, cert_b = self.make_p12("b", "b.example", "pb")
        g.install(p12)
        stop = threading.Event()
        errors, counts = [], []
        lock = threading.Lock()

        def keepalive_client():
            n = 0
            try:
                c = g.connect()
                while not stop.is_set():
                    c.request("GET", "/rest/health")
                    r = c.getresponse()
                    if (r.status, r.read()) != (200, b"RUNNING"):
                        raise AssertionError("bad answer %d" % r.status)
                    n += 1
                c.close()
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append("keep-alive client: %r" % e)
            with lock:
                counts.append(n)

        def new_connection_client():
            n = 0
            try:
                while not stop.is_set():
                    status, _, body = g.request("GET", "/rest/health")
                    if (status, body) != (200, b"RUNNING"):
                        raise AssertionError("bad answer %d" % status)
                    n += 1
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append("new-connection client: %r" % e)
            with lock:
                counts.append(n)

        threads = [threading.Thread(target=keepalive_client) for _ in range(3)] + \
                  [threading.Thread(target=new_connection_client) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for i in range(6):
                if i % 2 == 0:
                    self.configure(g, "b.p12", "pb")
                else:
                    self.configure(g, "a.p12", "pa")
                self.assertIn("reloaded", g.reload())
                time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join(30 * SLOW)
        self.assertEqual(errors, [])
        self.assertEqual(len(counts), 5)
        self.assertTrue(all(n > 0 for n in counts), counts)
        self.assertServes(g, cert_a)


if __name__ == "__main__":
    main()
