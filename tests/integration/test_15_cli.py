"""Layer 15: the command line: --help, --version, check-config, and the options of run
(--listen, --threads, --access-log, --log-level)."""
import os
import socket
import time

from harness import SLOW, WEBSERVER, GatewayTest, certgate, free_port, main, run


class HelpVersionTest(GatewayTest):
    def test_help_lists_commands_and_options(self):
        p = certgate("--help")
        self.assertEqual(p.returncode, 0)
        for word in ("certgate run", "--data-dir", "--listen", "HOST:PORT", "--threads",
                     "--access-log", "--log-level", "certgate check-config", "--help",
                     "--version", "SIGHUP", "SIGTERM"):
            self.assertIn(word, p.stdout, "--help does not mention %s" % word)

    def test_help_after_a_command(self):
        for cmd in (["run"], ["check-config"], ["token", "create"], ["fleet", "init"],
                    ["cert", "import"], ["audit"], ["acme", "status"]):
            p = certgate(*cmd, "--help", check=False)
            self.assertEqual(p.returncode, 0, (cmd, p.stderr))
            self.assertIn("certgate %s" % " ".join(cmd), p.stdout, cmd)
            self.assertEqual(p.stderr, "", cmd)

    def test_version(self):
        p = certgate("--version")
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout.strip(), r"^certgate \d+\.\d+\.\d+$")

    def test_unknown_command_fails_and_names_it(self):
        p = certgate("frobnicate", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("frobnicate", p.stderr)
        self.assertEqual(p.stdout, "")

    def test_run_rejects_bad_options(self):
        d = os.path.join(self.tmp, "d")
        for args, word in ((["--threads", "0"], "--threads"), (["--threads", "x"], "--threads"),
                           (["--log-level", "loud"], "--log-level"),
                           (["--listen", "nocolon"], "--listen"), (["--bogus"], "--bogus")):
            p = certgate("run", "--data-dir", d, *args, check=False, timeout=10 * SLOW)
            self.assertNotIn(p.returncode, (0, None), args)
            self.assertIn(word, p.stderr, args)
            self.assertIn(args[-1], p.stderr, args)


class CheckConfigTest(GatewayTest):
    def check(self, g):
        return certgate("check-config", "--data-dir", g.data_dir, check=False, timeout=30 * SLOW)

    def test_no_configuration_would_serve_default(self):
        g = self.gateway()
        p = self.check(g)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("would serve: default self-signed certificate", p.stdout)
        self.assertIn("CN=%s" % socket.gethostname(), p.stdout)
        self.assertIn("https port 9999", p.stdout)

    def test_valid_custom_certificate(self):
        g = self.gateway()
        key, cert = self.pki.self_signed("c", "checked.example")
        g.install(self.pki.p12("c.p12", key, cert, "pw", alias="mykey"))
        g.write_conf("[%s]\nport-ssl = 9443\ncertificate-file = c.p12\n"
                     "certificate-password = pw\ncertificate-alias = mykey\n" % WEBSERVER)
        p = self.check(g)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"would serve: custom certificate c\.p12, alias 'mykey'.*"
                                   r"CN=checked\.example")
        self.assertIn("https port 9443", p.stdout)
        self.assertNotIn("pw\n", p.stdout + p.stderr)

    def test_certificate_error_exit_1_with_reason(self):
        g = self.gateway()
        key, cert = self.pki.self_signed("c", "checked.example")
        g.install(self.pki.p12("c.p12", key, cert, "right-password"))
        g.write_conf("[%s]\ncertificate-file = c.p12\ncertificate-password = Wr0ngPa55\n"
                     % WEBSERVER)
        p = self.check(g)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("c.p12: wrong password", p.stdout + p.stderr)
        self.assertIn("would serve: default self-signed certificate", p.stdout)
        self.assertNotIn("Wr0ngPa55", p.stdout + p.stderr)

    def test_config_error_exit_1_names_file_and_line(self):
        g = self.gateway()
        g.write_conf("# comment\n[%s]\nport-ssl = 9999\nssl-protocols = TLSv1.2, TLSv1.1\n"
                     % WEBSERVER)
        p = self.check(g)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("%s:4: ssl-protocols: 'TLSv1.1' is not supported" % g.conf_path, p.stderr)

    def test_check_config_changes_nothing(self):
        """check-config only looks: it neither obfuscates the password nor creates files."""
        g = self.gateway()
        key, cert = self.pki.self_signed("c", "checked.example")
        g.install(self.pki.p12("c.p12", key, cert, "pw-kept"))
        text = "[%s]\ncertificate-file = c.p12\ncertificate-password = pw-kept\n" % WEBSERVER
        g.write_conf(text)
        before = sorted(os.listdir(g.ssl_dir)), sorted(os.listdir(os.path.dirname(g.conf_path)))
        p = self.check(g)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(g.read_conf(), text)
        after = sorted(os.listdir(g.ssl_dir)), sorted(os.listdir(os.path.dirname(g.conf_path)))
        self.assertEqual(before, after)


class RunOptionsTest(GatewayTest):
    def test_listen_fixed_port(self):
        port = free_port()
        g = self.gateway(extra_args=())
        g.start(port=port)
        self.assertEqual(g.port, port)
        self.assertEqual(g.request("GET", "/rest/health")[2], b"RUNNING")

    def test_listen_ipv6(self):
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback")
        g = self.gateway(listen_host="[::1]").start()
        p = run(["curl", "-sk", "--max-time", "10", "https://[::1]:%d/rest/health" % g.port],
                check=False)
        self.assertEqual(p.stdout, "RUNNING")

    def test_access_log_file(self):
        g = self.gateway().start()
        g.request("GET", "/rest/health?from=access-test")
        g.request("GET", "/missing-page")
        deadline = time.time() + 5 * SLOW
        text = ""
        while time.time() < deadline:
            text = open(g.access_path).read() if os.path.exists(g.access_path) else ""
            # each worker thread flushes its own lines: either may come first
            if "/missing-page" in text and "access-test" in text:
                break
            time.sleep(0.05)
        self.assertRegex(text, r'"GET /rest/health\?from=access-test" 200 ')
        self.assertRegex(text, r'"GET /missing-page" 503 ')

    def test_access_log_off(self):
        g = self.gateway()
        g.extra_args = ["--access-log", "off"]  # the last --access-log wins
        g.start()
        g.request("GET", "/rest/health?from=off-test")
        time.sleep(0.5 * SLOW)
        self.assertEqual(g.stop(), 0)
        self.assertFalse(os.path.exists(g.access_path) and os.path.getsize(g.access_path),
                         "--access-log off still wrote an access log")
        self.assertNotIn("off-test", g.logs())

    def test_access_log_stdout(self):
        g = self.gateway()
        g.extra_args = ["--access-log", "-"]
        g.start()
        g.request("GET", "/rest/health?from=stdout-test")
        self.assertEqual(g.stop(), 0)
        with open(g.stdout_path) as f:
            self.assertRegex(f.read(), r'"GET /rest/health\?from=stdout-test" 200 ')
        self.assertNotIn("stdout-test", g.logs())

    def test_port_ssl_without_listen(self):
        port = free_port()
        g = self.gateway()
        g.write_conf("[%s]\nport-ssl = %d\n" % (WEBSERVER, port))
        g.start(listen=False)
        self.assertEqual(g.port, port)
        self.assertIn("listening on https://0.0.0.0:%d" % port, g.logs())
        self.assertEqual(g.request("GET", "/rest/health")[2], b"RUNNING")

    def test_log_level_warn_hides_info_debug_shows_more(self):
        port = free_port()
        g = self.gateway(extra_args=["--log-level", "warn"])
        g.start(wait=False, port=port)
        g.wait_answering(port)
        self.assertEqual(g.request("GET", "/rest/health")[0], 200)
        self.assertEqual(g.stop(), 0)
        self.assertNotRegex(g.logs(), r" INFO ", "--log-level warn still logs INFO lines")

        d = self.gateway("dbg", extra_args=["--log-level", "debug"]).start()
        # a failed handshake is logged at debug level only
        run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % d.port, "-tls1_1",
             "-cipher", "DEFAULT@SECLEVEL=0"], check=False, input="", timeout=20)
        self.assertTrue(d.wait_log(r" DEBUG ", timeout=5), d.logs())

    def test_threads_both_serve(self):
        """With --threads 2 each worker has its own listener; many connections at once must
        all be answered (a dead worker would leave about half of them hanging)."""
        import threading
        g = self.gateway(threads=2).start()
        self.assertIn("(2 threads)", g.logs())
        results = []
        lock = threading.Lock()

        def client():
            try:
                c = g.connect(timeout=10)
                for _ in range(3):
                    c.request("GET", "/rest/health")
                    r = c.getresponse()
                    body = r.read()
                    with lock:
                        results.append((r.status, body))
                c.close()
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    results.append(("error", repr(e)))

        ts = [threading.Thread(target=client) for _ in range(40)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60 * SLOW)
        self.assertEqual(len(results), 120)
        self.assertEqual([r for r in results if r != (200, b"RUNNING")], [])
        tasks = os.listdir("/proc/%d/task" % g.proc.pid)
        self.assertGreaterEqual(len(tasks), 3, "expected a main thread and 2 workers")


if __name__ == "__main__":
    main()
