"""Layer 77: ACME in a fleet (issue 13): a 3-member etcd on loopback, Debian's pebble, and
three gateways with [fleet] + [acme] for the same domains. Exactly one member takes the
etcd lock (<prefix>/<env>/acme/lock) and orders (one newOrder in pebble's log); the
certificate reaches the others through <prefix>/<env>/acme/certificate and every member
serves it (verified against pebble's root); restarts do not order again. pebble's
validations go through a small TCP relay to a member that did NOT order, which answers
from the challenge shared under <prefix>/<env>/acme/http01/ (http-01 and tls-alpn-01).
The lock holder killed with SIGKILL in the middle of its order: another member takes the
lock once the lease ends (acme-lock-ttl 5 s) and the certificate still arrives."""
import base64
import json
import os
import re
import select
import shutil
import socket
import tempfile
import threading
import time
import unittest

from etcd_cluster import EtcdCluster, SharedEtcd, need_etcd
from harness import SLOW, WEBSERVER, GatewayTest, certgate, free_port, main, s_client, wait_until
from test_73_acme import CHALLTESTSRV, DOMAINS, PEBBLE, Pebble

TOOK = "acme: took the fleet's ACME lock"


class Relay:
    """A TCP relay on a free loopback port: each connection goes to the port
    choose() returns at that moment (None: held open without an answer)."""

    def __init__(self, choose):
        self.choose = choose
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.sent_to = []  # the target port of each connection (None: held)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        port = self.choose()
        self.sent_to.append(port)
        try:
            if port is None:
                while not self.closed and self.choose() is None:
                    time.sleep(0.1)
                return
            u = socket.create_connection(("127.0.0.1", port), timeout=10)
            with u:
                socks = [c, u]
                while not self.closed:
                    r, _, _ = select.select(socks, [], [], 0.5)
                    for s in r:
                        data = s.recv(65536)
                        if not data:
                            return
                        (u if s is c else c).sendall(data)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.closed = True
        self.sock.close()


@unittest.skipUnless(os.access(PEBBLE, os.X_OK) and os.access(CHALLTESTSRV, os.X_OK),
                     "Debian's pebble is not installed (scripts/deps.sh test installs it)")
class AcmeFleetTest(SharedEtcd, GatewayTest):

    def setUp(self):
        super().setUp()
        self.reset_etcd()
        self.members = {}  # name -> (gateway, http port)
        self.dead = set()
        self.hold = False
        self.kind = "http"
        self.relays = [Relay(lambda: self.target("http")), Relay(lambda: self.target("tls"))]
        self.fleet_key = os.urandom(32)
        self.pebble = Pebble(os.path.join(self.tmp, "pebble"), self.relays[0].port,
                             self.relays[1].port).start()

    def tearDown(self):
        self.pebble.stop()
        for r in self.relays:
            r.close()
        super().tearDown()

    def target(self, kind):
        """The port of a live member that has not taken the lock (None while holding)."""
        if self.hold:
            return None
        for name, (g, http_port) in sorted(self.members.items()):
            if name in self.dead or not g.proc or TOOK in g.logs():
                continue
            return http_port if kind == "http" else g.port
        return None

    def member(self, name, challenge="http-01"):
        g = self.gateway(name)
        http_port = free_port()
        g.write_conf("[%s]\nport = %d\n[acme]\ndirectory = %s\ndomains = %s\nca-file = %s\n"
                     "challenge = %s\n[fleet]\netcd = %s\nmember-id = %s\nenvironment = myenv\n"
                     "timeout = 2\nacme-lock-ttl = 5\n"
                     % (WEBSERVER, http_port, self.pebble.directory, ", ".join(DOMAINS),
                        self.pebble.cert, challenge, self.eps, name))
        key = os.path.join(g.data_dir, "config", "fleet.key")
        with open(key, "wb") as f:
            f.write(self.fleet_key)
        os.chmod(key, 0o600)
        self.members[name] = (g, http_port)
        return g

    def issued(self, g):
        return re.search(r"acme: certificate \S+ issued", g.logs())

    def leaf(self, g, root):
        """The leaf g serves for DOMAINS[1], verified by openssl against pebble's root."""
        p = s_client(g.port, "-servername", DOMAINS[1], "-CAfile", root, "-verify_hostname",
                     DOMAINS[1], "-verify_return_error")
        if p.returncode != 0 or "Verify return code: 0 (ok)" not in p.stdout:
            return None
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", p.stdout, re.S)
        return m.group(0) if m else None

    def orders(self):
        return len(re.findall(r"POST /order-plz", self.pebble.logs()))

    def etcd_json(self, key):
        p = self.cluster.etcdctl("get", key, "-w", "json")
        kvs = json.loads(p.stdout).get("kvs", [])
        return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None

    def all_serve(self, gs, root, timeout=30):
        leaves = {}

        def check():
            for g in gs:
                leaves[g] = self.leaf(g, root)
            return all(leaves.values()) and len(set(leaves.values())) == 1

        ok = wait_until(check, timeout * SLOW, interval=0.5)
        self.assertTrue(ok, "\n\n".join("%s:\n%s" % (g.data_dir, g.logs()[-3000:]) for g in gs))
        return leaves[gs[0]]

    def run_fleet(self, challenge):
        gs = [self.member(n, challenge) for n in ("a", "b", "c")]
        # the operator's first step: the fleet's state (here the default certificate)
        certgate("fleet", "init", "--data-dir", gs[0].data_dir, "--environment", "myenv")
        token = gs[1].token()
        for g in gs:
            g.start()
        self.assertTrue(wait_until(lambda: any(self.issued(g) for g in gs), 40 * SLOW),
                        "\n\n".join(g.logs()[-3000:] for g in gs))
        root = self.pebble.root(os.path.join(self.tmp, "root.pem"))
        leaf = self.all_serve(gs, root)
        orderers = [g for g in gs if TOOK in g.logs()]
        self.assertEqual(len(orderers), 1, [g.logs() for g in gs])
        self.assertEqual(sum(1 for g in gs if "acme: ordering a certificate" in g.logs()), 1)
        self.assertEqual(self.orders(), 1, self.pebble.logs())
        orderer = orderers[0]
        oname = os.path.basename(orderer.data_dir)
        others = [g for g in gs if g is not orderer]
        for g in others:
            self.assertIn("acme: the fleet's ACME lock is held by member %s" % oname, g.logs())
            self.assertRegex(g.logs(), r"acme: the fleet's certificate acme-\S+ \(ordered by "
                             r"member %s, valid to \S+\) is served now" % oname)
        # the CA's validations all went to a member that did not order; it answered from
        # the challenge shared through etcd
        sent = [p for r in self.relays for p in r.sent_to]
        self.assertTrue(sent, "pebble validated nothing through the relay")
        not_orderer = {port for g in others
                       for port in (g.port, self.members[os.path.basename(g.data_dir)][1])}
        self.assertTrue(set(sent) <= not_orderer, (sent, not_orderer))
        self.assertTrue(any("acme: answering the challenge for" in g.logs() for g in others))
        # etcd: the certificate record (the password sealed, not in clear), no lock left
        rec = self.etcd_json("/certgate/myenv/acme/certificate")
        self.assertEqual(rec["member"], oname)
        self.assertEqual(rec["domains"], DOMAINS)
        self.assertTrue(rec["password"].startswith("fk1:"), rec["password"])
        self.assertTrue(wait_until(lambda: self.etcd_json("/certgate/myenv/acme/lock") is None,
                                   5 * SLOW))
        self.assertIsNone(self.etcd_json("/certgate/myenv/acme/http01/"))
        # the cache: each member's DIR/ssl holds the same file, certificate.json names it
        name = "acme-%s.p12" % DOMAINS[0]
        for g in gs:
            with open(os.path.join(g.data_dir, "acme", "certificate.json")) as f:
                self.assertEqual(json.load(f)["file"], name)
        # status: fleet status and the API's acme status name the orderer
        p = certgate("fleet", "status", "--data-dir", gs[1].data_dir, check=False)
        print(p.stdout)
        self.assertRegex(p.stdout, r"environment myenv: acme certificate %s, valid to \S+, "
                         r"ordered by member %s" % (re.escape(name), oname))
        st, _, body = gs[1].call("GET", "acme/status", token=token)
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body)["fleet"]["certificate"]["member"], oname, body)
        # restarts (a member that did not order, then the orderer) do not order again
        for g in (others[0], orderer):
            self.assertEqual(g.stop(), 0)
            g.start()
            self.assertTrue(g.wait_log(r"acme: %s is served; renewal at" % re.escape(name)),
                            g.logs())
            self.assertEqual(self.all_serve(gs, root), leaf)
        time.sleep(1)
        self.assertEqual(self.orders(), 1, self.pebble.logs())
        for g in gs:
            self.assertNotIn("ordering", g.logs())
        # fleet init --force from a member that holds the ACME file: that file is not
        # pushed as a certificate file, and the fleet's ACME record stays
        certgate("fleet", "init", "--data-dir", gs[1].data_dir, "--environment", "myenv",
                 "--force")
        p = self.cluster.etcdctl("get", "--prefix", "/certgate/myenv/", "--keys-only")
        self.assertNotIn("/certgate/myenv/certs/" + name, p.stdout)
        self.assertIn("/certgate/myenv/acme/certificate", p.stdout)
        # a tampered record (other bytes, a sealed password altered) is refused and
        # reported; every member keeps serving the certificate it had
        rec["p12"] = base64.b64encode(base64.b64decode(rec["p12"]) + b"\0").decode()
        rec["password"] = rec["password"][:-6] + ("AAAAAA" if rec["password"][-6:] != "AAAAAA"
                                                  else "BBBBBB")
        self.cluster.etcdctl("put", "/certgate/myenv/acme/certificate", json.dumps(rec))
        for g in gs:
            self.assertTrue(g.wait_log(r"acme: the fleet's certificate /certgate/myenv/acme/"
                                       r"certificate is not served here: .*(altered|another)"),
                            g.logs()[-2000:])
        self.assertEqual(self.all_serve(gs, root), leaf)
        return gs

    def test_one_member_orders_http01(self):
        self.run_fleet("http-01")

    def test_one_member_orders_tls_alpn01(self):
        self.run_fleet("tls-alpn-01")

    def test_renewal_by_one_member(self):
        """30 s certificates: the renewal (due at about 20 s on every member, each with its
        own spread) is ordered by one member; the others take its certificate."""
        self.pebble.stop()
        self.pebble = Pebble(os.path.join(self.tmp, "pebble-short"), self.relays[0].port,
                             self.relays[1].port, validity=30).start()
        gs = [self.member(n) for n in ("a", "b", "c")]
        for g in gs:
            g.start()
        self.assertTrue(wait_until(lambda: any(self.issued(g) for g in gs), 40 * SLOW))
        root = self.pebble.root(os.path.join(self.tmp, "root.pem"))
        first = self.all_serve(gs, root)
        self.assertEqual(self.orders(), 1)
        # the renewal: one more order, and every member serves its certificate
        self.assertTrue(wait_until(lambda: sum(len(re.findall(r"acme: certificate \S+ issued",
                                                              g.logs())) for g in gs) == 2,
                                   40 * SLOW), "\n\n".join(g.logs()[-3000:] for g in gs))
        renewed = self.all_serve(gs, root)
        self.assertNotEqual(renewed, first)
        self.assertEqual(self.orders(), 2, self.pebble.logs())
        self.assertEqual(sum(g.logs().count("acme: ordering") for g in gs), 2)

    def test_holder_killed_mid_order(self):
        self.hold = True  # the CA's validations wait: the order stays in progress
        gs = [self.member(n) for n in ("a", "b", "c")]
        for g in gs:
            g.start()
        self.assertTrue(wait_until(lambda: any(TOOK in g.logs() for g in gs), 20 * SLOW))
        holder = [g for g in gs if TOOK in g.logs()][0]
        self.assertTrue(wait_until(lambda: any(r.sent_to for r in self.relays), 20 * SLOW),
                        holder.logs())
        holder.kill9()
        self.dead.add(os.path.basename(holder.data_dir))
        t = time.time()
        self.hold = False
        live = [g for g in gs if g is not holder]
        self.assertTrue(wait_until(lambda: any(self.issued(g) for g in live), 40 * SLOW),
                        "\n\n".join(g.logs()[-3000:] for g in live))
        waited = time.time() - t
        print("\nlock holder killed -> another member's certificate issued: %.1f s" % waited)
        root = self.pebble.root(os.path.join(self.tmp, "root.pem"))
        leaf = self.all_serve(live, root)
        self.assertEqual(sum(1 for g in live if TOOK in g.logs()), 1)
        # the killed member comes back: it takes the fleet's certificate, no order
        holder.start()
        self.assertEqual(self.all_serve(gs, root), leaf)
        self.assertEqual(holder.logs().count("acme: ordering"), 0, holder.logs())


if __name__ == "__main__":
    main()
