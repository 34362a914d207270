"""Layer 97: `certgate fleet init` and `fleet status` (issue 13, stage 3) against a real
3-member etcd on loopback: the fleet key file, the node's state pushed in one transaction
(certificate files byte for byte, the active record with its password sealed, token hashes
only), the refusal to replace a fleet state without --force, and status telling a wrong
fleet key from a tampered value."""
import base64
import json
import os
import re

from etcd_cluster import EtcdCluster, SharedEtcd, need_etcd
from harness import WEBSERVER, GatewayTest, certgate, free_port, main


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


class FleetInitTest(SharedEtcd, GatewayTest):

    def setUp(self):
        super().setUp()
        self.reset_etcd()

    def etcd_get(self, prefix):
        """{key: value bytes} under prefix, read with etcdctl."""
        p = self.cluster.etcdctl("get", "--prefix", prefix, "-w", "json")
        kvs = json.loads(p.stdout).get("kvs", [])
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
                for kv in kvs}

    def node(self, name="gw", password="p12-secret-Pw"):
        """A data folder with two certificate files (one active, password in plain text in
        custom.properties) and two tokens; returns (gateway, active path, tokens)."""
        g = self.gateway(name)
        key, cert = self.pki.self_signed(name, "%s.example" % name, san="DNS:%s.example" % name)
        active = g.install(self.pki.p12(name + ".p12", key, cert, password, alias="web"),
                           "active.p12")
        g.install(self.pki.p12(name + "-spare.p12", key, cert, "other"), "spare.p12")
        g.write_conf("[%s]\ncertificate-file = active.p12\ncertificate-password = %s\n"
                     "certificate-alias = web\n" % (WEBSERVER, password))
        tokens = [g.token(), g.token(name="second")]
        return g, active, tokens

    def fleet(self, g, *args, check=False):
        return certgate("fleet", args[0], "--data-dir", g.data_dir, *args[1:], check=check)

    def test_init_pushes_the_state(self):
        g, active, tokens = self.node()
        # the first endpoint is down: init goes on with the others
        eps = "http://127.0.0.1:%d,%s" % (free_port(), self.eps)
        p = self.fleet(g, "init", "--etcd", eps)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^fleet /certgate initialized in etcd at revision \d+ \(http://"
                         r"127\.0\.0\.1:\d+\): environment myenv, 2 certificate files, active "
                         r"active\.p12, 2 tokens\n")
        keyfile = os.path.join(g.data_dir, "config", "fleet.key")
        self.assertIn("fleet key: %s (id " % keyfile, p.stdout)
        st = os.stat(keyfile)
        self.assertEqual((st.st_mode & 0o7777, st.st_size), (0o600, 32))
        kv = self.etcd_get("/certgate/")
        self.assertEqual(sorted(kv), sorted(
            ["/certgate/fleet", "/certgate/myenv/active", "/certgate/myenv/certs/active.p12",
             "/certgate/myenv/certs/spare.p12"] +
            ["/certgate/tokens/" + t.rsplit(".", 1)[0] for t in tokens]))
        with open(active, "rb") as f:
            self.assertEqual(kv["/certgate/myenv/certs/active.p12"], f.read())
        rec = json.loads(kv["/certgate/myenv/active"])
        key_id = re.search(r"id ([0-9a-f]{16}), new\)", p.stdout).group(1)
        self.assertEqual((rec["name"], rec["alias"]), ("active.p12", "web"))
        self.assertTrue(rec["password"].startswith("fk1:%s:" % key_id), rec)
        meta = json.loads(kv["/certgate/fleet"])
        self.assertEqual((meta["version"], meta["key_id"]), (1, key_id))
        # no secret in etcd: neither the password nor a token's secret part
        everything = b"".join(kv.values())
        self.assertNotIn(b"p12-secret-Pw", everything)
        for t in tokens:
            self.assertNotIn(t.rsplit(".", 1)[1].encode(), everything)
            entry = json.loads(kv["/certgate/tokens/" + t.rsplit(".", 1)[0]])
            self.assertEqual(entry["environment"], "myenv")
            self.assertRegex(entry["sha256"], r"^[0-9a-f]{64}$")
        # status: the fleet, this member's key, the active record opened
        p = self.fleet(g, "status", "--etcd", self.eps)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("fleet key id %s\n" % key_id, p.stdout)
        self.assertIn("id %s, the fleet's key\n" % key_id, p.stdout)
        self.assertIn("environment myenv: active active.p12 (alias web), password opens with the "
                      "fleet key\n", p.stdout)
        self.assertRegex(p.stdout, r"environment myenv: certificate file spare\.p12, \d+ bytes, "
                         r"revision \d+\n")
        self.assertIn("tokens: 2\nmembers: none registered", p.stdout)
        # a member key under a lease is listed
        lease = re.search(r"lease ([0-9a-f]+) granted",
                          self.cluster.etcdctl("lease", "grant", "60").stdout).group(1)
        self.cluster.etcdctl("put", "--lease", lease, "/certgate/members/gw2:9999",
                             '{"applied":7,"serving":"active.p12"}')
        p = self.fleet(g, "status", "--etcd", self.eps)
        self.assertIn("member gw2:9999: applied revision 7, serving active.p12\n", p.stdout)

    def test_refuses_an_existing_fleet_without_force(self):
        g, _, _ = self.node()
        self.assertEqual(self.fleet(g, "init", "--etcd", self.eps).returncode, 0)
        key1 = read_bytes(os.path.join(g.data_dir, "config", "fleet.key"))
        before = self.etcd_get("/certgate/")
        p = self.fleet(g, "init", "--etcd", self.eps)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"^certgate fleet init: etcd http://127\.0\.0\.1:\d+ holds a "
                         r"fleet state under /certgate already \(6 keys, revision \d+\); this "
                         r"node does not replace it without --force\n$")
        self.assertEqual(self.etcd_get("/certgate/"), before)
        # --force: stale keys go, a member's key stays, the fleet key file is kept
        self.cluster.etcdctl("put", "/certgate/myenv/certs/stale.p12", "old")
        self.cluster.etcdctl("put", "/certgate/members/gw9", "{}")
        os.unlink(os.path.join(g.ssl_dir, "spare.p12"))
        p = self.fleet(g, "init", "--etcd", self.eps, "--force")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("1 certificate file, active active.p12, 2 tokens, replacing the previous "
                      "state (--force)", p.stdout)
        self.assertIn(", existing)", p.stdout)
        after = self.etcd_get("/certgate/")
        self.assertNotIn("/certgate/myenv/certs/stale.p12", after)
        self.assertNotIn("/certgate/myenv/certs/spare.p12", after)
        self.assertIn("/certgate/members/gw9", after)
        self.assertEqual(read_bytes(os.path.join(g.data_dir, "config", "fleet.key")), key1)

    def test_status_names_a_wrong_key_and_a_tampered_value(self):
        g, _, _ = self.node()
        # [fleet] in custom.properties gives etcd and the prefix
        with open(g.conf_path, "a") as f:
            f.write("[fleet]\netcd = %s\nprefix = /prod/cg\nmember-id = gw1\n" % self.eps)
        self.assertEqual(self.fleet(g, "init").returncode, 0)
        self.assertIn("/prod/cg/myenv/active", self.etcd_get("/prod/cg/"))
        self.assertEqual(self.fleet(g, "status").returncode, 0)
        # another member's key file, of another fleet
        keyfile = os.path.join(g.data_dir, "config", "fleet.key")
        good = read_bytes(keyfile)
        with open(keyfile, "wb") as f:
            f.write(os.urandom(32))
        p = self.fleet(g, "status")
        self.assertEqual(p.returncode, 1)
        self.assertIn("NOT the fleet's key: copy the fleet key file from a member of this fleet",
                      p.stdout)
        self.assertRegex(p.stdout, r"error: /prod/cg/myenv/active: sealed with another fleet key "
                         r"\(id [0-9a-f]{16}; this member's fleet key has id [0-9a-f]{16}\)")
        self.assertIn("certgate fleet status: 2 problems found (see above)", p.stderr)
        with open(keyfile, "wb") as f:
            f.write(good)
        # one character of the sealed password changed in etcd
        rec = json.loads(self.etcd_get("/prod/cg/myenv/active")["/prod/cg/myenv/active"])
        pw = rec["password"]
        i = len(pw) - 10
        rec["password"] = pw[:i] + ("A" if pw[i] != "A" else "B") + pw[i + 1:]
        self.cluster.etcdctl("put", "/prod/cg/myenv/active", json.dumps(rec))
        p = self.fleet(g, "status")
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stdout, r"error: /prod/cg/myenv/active: the sealed value does not "
                         r"authenticate under the fleet key \(id [0-9a-f]{16}\): it was altered "
                         r"or moved from another key; refused")
        # a key file others can read is refused
        os.chmod(keyfile, 0o644)
        p = self.fleet(g, "status")
        self.assertIn("has mode 0644, which lets others read it", p.stdout)

    def test_usage_and_unreachable(self):
        g, _, _ = self.node()
        p = self.fleet(g, "init")
        self.assertEqual(p.returncode, 2)
        self.assertIn("no etcd to use: give --etcd URL[,URL...] or set etcd in the [fleet] "
                      "section of", p.stderr)
        dead = "http://127.0.0.1:%d" % free_port()
        p = self.fleet(g, "init", "--etcd", dead)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"^certgate fleet init: etcd: no endpoint answered \(%s: .*"
                         r"Couldn't connect to server\)\n$" % re.escape(dead))
        self.assertFalse(os.path.exists(os.path.join(g.data_dir, "config", "fleet.key")))
        p = self.fleet(g, "status", "--etcd", self.eps)
        self.assertEqual(p.returncode, 1)
        self.assertIn("has no fleet state under /certgate; make it with certgate fleet init",
                      p.stderr)
        # tokens of two environments: the node's one must be named
        g.token(env="otherenv")
        p = self.fleet(g, "init", "--etcd", self.eps)
        self.assertEqual(p.returncode, 1)
        self.assertIn("the API tokens name several environments; give the environment of this "
                      "node's certificates with --environment ENV", p.stderr)
        p = self.fleet(g, "init", "--etcd", self.eps, "--environment", "myenv")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("3 tokens", p.stdout)
        p = self.fleet(g, "init", "--etcd", self.eps, "--environment", "a/b", "--force")
        self.assertEqual(p.returncode, 1)
        self.assertIn("environment 'a/b' is not an environment ID", p.stderr)
        p = certgate("fleet", "join", check=False)
        self.assertEqual(p.returncode, 2)

    def test_quorum_lost(self):
        g, _, _ = self.node()
        self.cluster.stop(1)
        self.cluster.stop(2)
        try:
            p = certgate("fleet", "init", "--data-dir", g.data_dir, "--etcd", self.eps,
                         check=False, timeout=120)
            self.assertEqual(p.returncode, 1, p.stdout)
            self.assertIn("certgate fleet init: etcd: no endpoint answered (", p.stderr)
        finally:
            self.cluster.start(1)
            self.cluster.start(2)
            self.cluster.wait_healthy()


if __name__ == "__main__":
    main()
