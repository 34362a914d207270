"""Layer 95: `certgate check-config` reports every error of custom.properties at once,
each with its `custom.properties:N:` line, sorted by line: malformed lines, NUL bytes,
wrong values in every section, and cipher lists that leave a protocol without a cipher.
`run` and SIGHUP still stop at (and name) the first one, leaving the running
configuration as it was."""
import signal

from harness import WEBSERVER, GatewayTest, certgate, main, SLOW

BAD = ("# a comment\n"                                  # 1
       "[%s]\n"                                         # 2
       "port-ssl = 70000\n"                             # 3
       "this line has no equals sign\n"                 # 4
       "ssl-protocols = TLSv1.1\n"                      # 5
       "included-ciphers = CHACHA20\n"                  # 6
       "excluded-ciphers = DHE\n"                       # 7
       "[certgate]\n"                                   # 8
       "max-upload-size = 1G\n"                         # 9
       "api-queue = many\n"                             # 10
       "header-timeout = soon\n"                        # 11
       "[upstream]\n"                                   # 12
       "url = ftp://backend\n"                          # 13
       "verify = maybe\n"                               # 14
       "trusted-proxies = 10.0.0.0/8, not-an-address\n" # 15
       "[\n"                                            # 16
       % WEBSERVER)

EXPECTED = [
    (3, "port-ssl: '70000' is out of range"),
    (4, "expected 'key = value', '[section]' or a comment"),
    (5, "ssl-protocols: 'TLSv1.1' is not supported"),
    (7, "included-ciphers and excluded-ciphers leave no cipher for TLSv1.2"),
    (9, "max-upload-size: '1G' is not a size"),
    (10, "api-queue: 'many' is not a number"),
    (11, "header-timeout: 'soon' is not a number of seconds"),
    (13, "url: 'ftp://backend' does not start with http:// or https://"),
    (14, "verify: 'maybe' is not a switch"),
    (15, "trusted-proxies: 'not-an-address' is not an address"),
    (16, "expected 'key = value', '[section]' or a comment"),
]


class CheckConfigAllTest(GatewayTest):
    def check(self, g):
        return certgate("check-config", "--data-dir", g.data_dir, check=False, timeout=30 * SLOW)

    def test_every_error_with_its_line(self):
        g = self.gateway()
        g.write_conf(BAD)
        p = self.check(g)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        lines = [l for l in p.stderr.splitlines() if l.startswith("configuration error: ")]
        self.assertEqual(len(lines), len(EXPECTED), p.stderr)
        for got, (n, what) in zip(lines, EXPECTED):
            self.assertTrue(got.startswith("configuration error: %s:%d: %s"
                                           % (g.conf_path, n, what)), (got, n, what))
        self.assertIn("%s: %d errors" % (g.conf_path, len(EXPECTED)), p.stderr)
        self.assertNotIn("would serve", p.stdout)
        self.assertEqual(g.read_conf(), BAD)  # nothing written

    def test_nul_byte_and_later_errors(self):
        g = self.gateway()
        g.write_conf("[%s]\nport = x\x00y\nport-ssl = 0\n" % WEBSERVER)
        p = self.check(g)
        self.assertEqual(p.returncode, 1)
        self.assertIn("%s:2: the line contains a NUL byte" % g.conf_path, p.stderr)
        self.assertIn("%s:3: port-ssl: '0' is out of range" % g.conf_path, p.stderr)
        self.assertIn("2 errors", p.stderr)

    def test_one_error_says_one(self):
        g = self.gateway()
        g.write_conf("[certgate]\nmin-rate = fast\n")
        p = self.check(g)
        self.assertEqual(p.returncode, 1)
        self.assertIn("%s:2: min-rate: 'fast' is not a number of bytes per second"
                      % g.conf_path, p.stderr)
        self.assertIn("%s: 1 error\n" % g.conf_path, p.stderr)

    def test_fleet_errors_with_their_lines(self):
        # issue 13: [fleet] is checked like the other sections, every error at once
        g = self.gateway()
        g.write_conf("[fleet]\n"                                  # 1
                     "etcd = http://127.0.0.1:2379, etcd2:2379\n"  # 2
                     "prefix = certgate/\n"                        # 3
                     "key-file = /etc/etcd/client.key\n"           # 4
                     "member-id = gw 1\n")                         # 5
        p = self.check(g)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        lines = [l for l in p.stderr.splitlines() if l.startswith("configuration error: ")]
        want = [(2, "etcd: 'etcd2:2379' does not start with http:// or https://"),
                (3, "prefix: 'certgate/' does not start with '/'"),
                (4, "key-file: is the private key of the client certificate for etcd, but "
                    "cert-file is missing (the fleet key is fleet-key-file)"),
                (5, "member-id: 'gw 1' is not a member id")]
        self.assertEqual(len(lines), len(want), p.stderr)
        for got, (n, what) in zip(lines, want):
            self.assertTrue(got.startswith("configuration error: %s:%d: %s"
                                           % (g.conf_path, n, what)), (got, n, what))
        # a [fleet] without etcd is named too; a valid one passes
        g.write_conf("[fleet]\nprefix = /x\n")
        p = self.check(g)
        self.assertEqual(p.returncode, 1)
        self.assertIn("%s:2: prefix: [fleet] has no etcd key" % g.conf_path, p.stderr)
        g.write_conf("[fleet]\netcd = http://127.0.0.1:2379\nmember-id = gw1\n")
        p = self.check(g)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_valid_file_still_ok(self):
        g = self.gateway()
        g.write_conf("[%s]\nincluded-ciphers = AES\nport = 8080\n[upstream]\nurl = "
                     "http://127.0.0.1:1\n" % WEBSERVER)
        p = self.check(g)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("configuration: %s: OK" % g.conf_path, p.stdout)

    def test_run_and_reload_name_the_first_error(self):
        g = self.gateway()
        g.write_conf(BAD)
        self.assertEqual(g.run_to_exit(), 1)
        self.assertIn("%s:4: expected 'key = value'" % g.conf_path, g.logs())
        self.assertNotIn(":5:", g.logs())
        g2 = self.gateway(name="gw2").start()
        g2.write_conf(BAD.replace("this line has no equals sign\n", "# fine\n")
                      .replace("[\n", "# fine\n"))
        g2.send_signal(signal.SIGHUP)
        self.assertTrue(g2.wait_log("reload failed"))
        self.assertIn("%s:3: port-ssl: '70000' is out of range" % g2.conf_path, g2.logs())
        self.assertEqual(g2.request("GET", "/rest/health")[0], 200)


if __name__ == "__main__":
    main()
