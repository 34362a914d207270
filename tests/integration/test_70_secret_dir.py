"""Layer 70: the watched secret directory, `certgate run --tls-secret-dir DIR` (issue 11,
item 4): the layout the Dynatrace operator mounts from a Kubernetes Secret (server.p12,
optional password and alias).

The kubelet's atomic writer is reproduced step by step with real folders, symlinks and
renames: the set goes into a new timestamped folder `..2026_11_30_10_00_00.000000001`, a
symlink `..data_tmp` is pointed at it and renamed over `..data`, the visible names are
links `server.p12 -> ..data/server.p12`, and the old folder is removed. PKCS#12 files are
made by openssl (and keytool); which certificate is served is checked with
`openssl s_client` after each step. Bad sets must be refused with a log line naming the
file and the problem, an audit line and a metric, while the old certificate stays served
and open connections keep working."""
import json
import os
import re
import shutil
import time
import unittest
import urllib.request

from harness import (SLOW, GatewayTest, Pki, cert_fingerprint, free_port, main, run, s_client)

from test_67_warnings_dryrun import ca_signed_dates


class Fixtures:
    """Key stores made once for the whole file: {name: (p12 bytes, certificate fingerprint)}."""
    dir = None
    sets = {}

    @classmethod
    def make(cls, tmp):
        if cls.dir:
            return
        cls.dir = tmp
        pki = Pki(tmp)
        for name in ("a", "b", "c", "d", "e", "f"):
            k, c = pki.self_signed(name, "host-" + name, kind="ec", san="DNS:host-" + name)
            cls.add(name, pki.p12(name + ".p12", k, c, "pw-" + name, alias="key-" + name), c)
        # a keystore with two key entries: the alias file picks one
        k, c = pki.self_signed("two1", "host-two1", kind="ec", san="DNS:host-two1")
        k2, c2 = pki.self_signed("two2", "host-two2", kind="ec", san="DNS:host-two2")
        p1 = pki.p12("two1.p12", k, c, "pw2", alias="first")
        p2 = pki.p12("two2.p12", k2, c2, "pw2", alias="second")
        # merge the second into the first with keytool when java is there
        cls.two = None
        if shutil.which("keytool"):
            run(["keytool", "-importkeystore", "-noprompt", "-srckeystore", p2, "-srcstoretype",
                 "PKCS12", "-srcstorepass", "pw2", "-destkeystore", p1, "-deststoretype",
                 "PKCS12", "-deststorepass", "pw2"])
            with open(p1, "rb") as f:
                cls.two = (f.read(), cert_fingerprint(c), cert_fingerprint(c2))
            path = pki.keytool_keypair("kt.p12", "ktalias", "host-keytool", "ktpass",
                                       keyalg="EC", keysize=256)
            out = run(["keytool", "-exportcert", "-rfc", "-storetype", "PKCS12", "-keystore",
                       path, "-storepass", "ktpass", "-alias", "ktalias"]).stdout
            crt = pki.path("kt.crt")
            with open(crt, "w") as f:
                f.write(out)
            cls.add("keytool", path, crt)
        k, c = ca_signed_dates(pki, "expired", "host-expired", "20200101000000Z",
                               "20210101000000Z")
        cls.add("expired", pki.p12("expired.p12", k, c, "pw-x"), c)
        # the burst: 20 distinct certificates
        for i in range(20):
            k, c = pki.self_signed("burst%d" % i, "burst-%d" % i, kind="ec")
            cls.add("burst%d" % i, pki.p12("burst%d.p12" % i, k, c, "b"), c)

    @classmethod
    def add(cls, name, p12, crt):
        with open(p12, "rb") as f:
            cls.sets[name] = (f.read(), cert_fingerprint(crt))


def p12(name):
    return Fixtures.sets[name][0]


def fp(name):
    return Fixtures.sets[name][1]


class Kubelet:
    """The kubelet's AtomicWriter for a Secret volume, in its steps."""

    def __init__(self, folder):
        self.dir = folder
        self.n = 0
        os.makedirs(folder, exist_ok=True)

    def current(self):
        link = os.path.join(self.dir, "..data")
        return os.readlink(link) if os.path.islink(link) else None

    def step_write_folder(self, files):
        """1: the payload goes into a new hidden timestamped folder."""
        self.n += 1
        ts = time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime()) + ".%09d" % self.n
        d = os.path.join(self.dir, ts)
        os.mkdir(d, 0o755)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            os.chmod(os.path.join(d, name), 0o644)
        return ts

    def step_link_tmp(self, ts):
        """2: ..data_tmp points at it."""
        os.symlink(ts, os.path.join(self.dir, "..data_tmp"))

    def step_rename(self):
        """3: ..data_tmp is renamed over ..data (the atomic switch)."""
        os.rename(os.path.join(self.dir, "..data_tmp"), os.path.join(self.dir, "..data"))

    def step_visible_links(self, files):
        """4: user-visible links for new names; names no longer in the Secret go."""
        for name in files:
            p = os.path.join(self.dir, name)
            if not os.path.lexists(p):
                os.symlink(os.path.join("..data", name), p)
        for name in ("server.p12", "password", "alias"):
            p = os.path.join(self.dir, name)
            if name not in files and os.path.islink(p):
                os.unlink(p)

    def step_remove_old(self, old):
        """5: the previous timestamped folder is removed."""
        if old:
            shutil.rmtree(os.path.join(self.dir, old))

    def update(self, files):
        old = self.current()
        ts = self.step_write_folder(files)
        self.step_link_tmp(ts)
        self.step_rename()
        self.step_visible_links(files)
        self.step_remove_old(old)


def secret(name, password=None, alias=None, newline=True):
    """The files of a Secret holding key store `name`."""
    files = {"server.p12": p12(name)}
    if password is not None:
        files["password"] = (password + ("\n" if newline else "")).encode()
    if alias is not None:
        files["alias"] = (alias + "\n").encode()
    return files


class SecretDirTest(GatewayTest):
    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.fixtures_tmp = tempfile.mkdtemp(prefix="certgate-it70-")
        Fixtures.make(cls.fixtures_tmp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.fixtures_tmp, ignore_errors=True)

    def start(self, files=None, name="gw", metrics=True):
        """A gateway watching self.tmp/secrets (written first by the kubelet when files is
        given)."""
        self.sdir = os.path.join(self.tmp, "secrets")
        self.kubelet = Kubelet(self.sdir)
        if files is not None:
            self.kubelet.update(files)
        g = self.gateway(name, extra_args=["--tls-secret-dir", self.sdir])
        self.mport = free_port() if metrics else None
        if metrics:
            g.write_conf("[certgate]\nmetrics-listen = 127.0.0.1:%d\n" % self.mport)
        g.start()
        self.g = g
        return g

    # ----- observations -----

    def served(self):
        """SHA-256 fingerprint of the leaf a new handshake gets (openssl s_client)."""
        p = s_client(self.g.port, "-servername", "localhost", input="")
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", p.stdout, re.S)
        if not m:
            raise AssertionError("s_client got no certificate:\n%s\n%s" % (p.stdout, p.stderr))
        out = run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
                  input=m.group(0)).stdout
        return out.strip().split("=", 1)[1].replace(":", "").lower()

    def count(self, pattern):
        return len(re.findall(pattern, self.g.logs()))

    def wait_count(self, pattern, n, timeout=10):
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            if self.count(pattern) >= n:
                return
            time.sleep(0.02)
        self.fail("expected %d lines matching %r in the log:\n%s" % (n, pattern, self.g.logs()))

    def applied(self, n):
        self.wait_count(r"tls-secret-dir \S+: changed; serving", n)

    def refused(self, n):
        self.wait_count(r"tls-secret-dir \S+: refused: ", n)

    def audit(self):
        path = os.path.join(self.g.data_dir, "log", "audit.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def metric(self, result):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport,
                                    timeout=10 * SLOW) as r:
            text = r.read().decode()
        m = re.search(r'^certgate_secret_dir_changes_total\{result="%s"\} (\d+)$' % result, text,
                      re.M)
        self.assertIsNotNone(m, text)
        return int(m.group(1))

    # ----- tests -----

    def test_kubelet_writer_step_by_step(self):
        g = self.start(secret("a", "pw-a"))
        self.applied(1)
        self.assertEqual(self.served(), fp("a"))
        # a connection opened before the swap
        conn = g.connect()
        conn.request("GET", "/rest/health")
        self.assertEqual(conn.getresponse().read(), b"RUNNING")
        sock = conn.sock
        old_peer = sock.getpeercert(True)

        files = secret("b", "pw-b")
        old = self.kubelet.current()
        ts = self.kubelet.step_write_folder(files)
        time.sleep(0.5 * SLOW)
        self.assertEqual(self.served(), fp("a"), "served the new set before ..data moved")
        self.kubelet.step_link_tmp(ts)
        time.sleep(0.5 * SLOW)
        self.assertEqual(self.served(), fp("a"), "served the new set before ..data moved")
        self.assertEqual(self.count(r"refused"), 0, g.logs())
        self.kubelet.step_rename()
        self.applied(2)
        self.assertEqual(self.served(), fp("b"))
        self.kubelet.step_visible_links(files)
        self.kubelet.step_remove_old(old)
        time.sleep(0.6 * SLOW)
        self.assertEqual(self.served(), fp("b"))
        self.assertEqual(self.count(r"changed; serving"), 2, "the clean-up steps switched again")
        self.assertEqual(self.count(r"refused"), 0, g.logs())

        # the old connection still works, with the certificate it started with
        conn.request("GET", "/rest/health")
        self.assertEqual(conn.getresponse().read(), b"RUNNING")
        self.assertIs(conn.sock, sock, "the connection was not kept")
        self.assertEqual(sock.getpeercert(True), old_peer)
        conn.close()

        lines = [a for a in self.audit() if a["source"] == "secret-dir"]
        self.assertEqual(len(lines), 2, lines)
        last = lines[-1]
        self.assertEqual((last["operation"], last["name"], last["status"], last["alias"]),
                         ("secret-change", "server.p12", 200, "key-b"))
        self.assertEqual((last["sha256Before"], last["sha256After"]), (fp("a"), fp("b")))
        self.assertNotIn("pw-b", json.dumps(lines))
        self.assertEqual((self.metric("applied"), self.metric("refused")), (2, 0))

        # SIGHUP keeps the Secret's certificate (custom.properties names none: the
        # default one would be served otherwise)
        g.reload("reloaded")
        self.assertEqual(self.served(), fp("b"))

        # the certificate API does not switch while the Secret is the source
        token = g.token()
        with open(self.pki.path("x.p12"), "wb") as f:
            f.write(p12("c"))
        st, _, body = g.upload("c.p12", self.pki.path("x.p12"), "pw-c", token)
        self.assertEqual(st, 409, body)
        self.assertIn(b"--tls-secret-dir", body)
        self.assertFalse(os.path.exists(os.path.join(g.ssl_dir, "c.p12")))
        self.assertEqual(self.served(), fp("b"))
        st, _, body = g.upload("c.p12?dryRun=true", self.pki.path("x.p12"), "pw-c", token)
        self.assertEqual(st, 200, body)  # a dry run changes nothing: still answered
        self.assertEqual(self.served(), fp("b"))

        # keytool's key store with two entries: the alias file picks the second
        if Fixtures.two:
            data, first, second = Fixtures.two
            self.kubelet.update({"server.p12": data, "password": b"pw2\n", "alias": b"Second\n"})
            self.applied(3)
            self.assertEqual(self.served(), second)
            self.kubelet.update({"server.p12": data, "password": b"pw2"})
            self.applied(4)
            self.assertEqual(self.served(), first, "without alias: the first key entry")
            self.kubelet.update(secret("keytool", "ktpass", "ktalias"))
            self.applied(5)
            self.assertEqual(self.served(), fp("keytool"))

    def test_bad_sets_are_refused(self):
        g = self.start(secret("a", "pw-a"))
        self.applied(1)
        cases = [
            (secret("b", "wrong"), r"server\.p12: wrong password \(the password is the content"),
            (secret("b"), r"server\.p12: wrong password \(there is no file password"),
            ({"server.p12": p12("b")[:200], "password": b"pw-b"}, r"server\.p12: not a PKCS#12"),
            ({"password": b"pw-b"}, r"server\.p12: missing"),
            (secret("b", "pw-b", "nosuch"), r"server\.p12: alias 'nosuch' not found"),
            (secret("expired", "pw-x"), r"server\.p12: .*expired"),
            # a half-swapped set: the password of a, the key store of b
            (secret("b", "pw-a"), r"server\.p12: wrong password"),
        ]
        conn = g.connect()
        conn.request("GET", "/rest/health")
        conn.getresponse().read()
        for i, (files, pattern) in enumerate(cases, 1):
            self.kubelet.update(files)
            self.refused(i)
            last = re.findall(r"refused: (.*)", g.logs())[-1]
            self.assertRegex(last, pattern)
            self.assertIn(self.sdir, last, "the log line names the file")
            self.assertIn("still serving", last)
            self.assertEqual(self.served(), fp("a"), "a bad set changed the served certificate")
            a = self.audit()[-1]
            self.assertEqual((a["source"], a["operation"], a["status"]),
                             ("secret-dir", "secret-change", 400))
            self.assertEqual(a["sha256Before"], fp("a"))
            self.assertEqual(a["sha256After"], fp("a"))
            self.assertRegex(a["message"], pattern)
            self.assertEqual(self.metric("refused"), i)
            conn.request("GET", "/rest/health")
            self.assertEqual(conn.getresponse().read(), b"RUNNING")
        self.assertEqual(self.metric("applied"), 1)
        self.assertNotIn("pw-a", g.logs())
        self.assertNotIn("pw-b", g.logs())
        conn.close()
        # a good set after all that
        self.kubelet.update(secret("c", "pw-c"))
        self.applied(2)
        self.assertEqual(self.served(), fp("c"))

    def test_plain_files_written_in_place(self):
        sdir = os.path.join(self.tmp, "plain")
        os.makedirs(sdir)

        def put(name, data):
            with open(os.path.join(sdir, name), "wb") as f:
                f.write(data)

        put("server.p12", p12("a"))
        put("password", b"pw-a\r\n")
        g = self.gateway(extra_args=["--tls-secret-dir", sdir]).start()
        self.g = g
        self.applied(1)
        self.assertEqual(self.served(), fp("a"))
        # password first, then the key store, each rewritten in place (truncate + write)
        put("password", b"pw-b")
        put("server.p12", p12("b"))
        deadline = time.time() + 10 * SLOW
        while self.served() != fp("b") and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.served(), fp("b"), g.logs())
        # an unchanged rewrite switches nothing
        n = self.count(r"changed; serving")
        put("server.p12", p12("b"))
        time.sleep(0.6 * SLOW)
        self.assertEqual(self.count(r"changed; serving"), n)

    def test_folder_removed_and_recreated(self):
        g = self.start(secret("a", "pw-a"))
        self.applied(1)
        conn = g.connect()
        conn.request("GET", "/rest/health")
        conn.getresponse().read()
        shutil.rmtree(self.sdir)
        self.assertTrue(g.wait_log(r"tls-secret-dir \S+: the folder is gone"), g.logs())
        self.assertEqual(self.served(), fp("a"))
        time.sleep(0.5 * SLOW)
        self.assertEqual(self.count(r"refused"), 0, "a folder gone is not a bad set")
        conn.request("GET", "/rest/health")
        self.assertEqual(conn.getresponse().read(), b"RUNNING")
        conn.close()
        self.kubelet = Kubelet(self.sdir)
        self.kubelet.update(secret("d", "pw-d"))
        self.assertTrue(g.wait_log(r"the folder is back"), g.logs())
        self.applied(2)
        self.assertEqual(self.served(), fp("d"))
        # and it is watched again
        self.kubelet.update(secret("e", "pw-e"))
        self.applied(3)
        self.assertEqual(self.served(), fp("e"))

    def test_folder_emptied_slowly_then_removed(self):
        g = self.start(secret("a", "pw-a"))
        self.applied(1)
        for name in os.listdir(self.sdir):
            p = os.path.join(self.sdir, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
        self.refused(1)  # an empty folder is a bad set (server.p12 missing)
        self.assertRegex(g.logs(), r"server\.p12: missing")
        os.rmdir(self.sdir)
        self.assertTrue(g.wait_log(r"the folder is gone"), g.logs())
        self.assertEqual(self.served(), fp("a"))
        os.mkdir(self.sdir)
        self.assertTrue(g.wait_log(r"the folder is back"), g.logs())
        time.sleep(0.5 * SLOW)
        self.assertEqual(self.count(r"refused"), 1, "the same empty folder again is no news")
        self.kubelet = Kubelet(self.sdir)
        self.kubelet.update(secret("b", "pw-b"))
        self.applied(2)
        self.assertEqual(self.served(), fp("b"))

    def test_missing_folder_at_start(self):
        missing = os.path.join(self.tmp, "nope")
        g = self.gateway(extra_args=["--tls-secret-dir", missing])
        self.assertEqual(g.run_to_exit(), 1)
        self.assertIn("cannot start: --tls-secret-dir %s: No such file or directory" % missing,
                      g.logs())

    def test_bad_set_at_start_then_fixed(self):
        g = self.start(secret("a", "nope"), metrics=False)
        self.refused(1)
        self.assertRegex(g.logs(), r"still serving default self-signed certificate")
        self.assertNotEqual(self.served(), fp("a"))
        self.kubelet.update(secret("a", "pw-a"))
        self.applied(1)
        self.assertEqual(self.served(), fp("a"))

    def test_burst_of_swaps_ends_with_the_last(self):
        g = self.start(secret("a", "pw-a"))
        self.applied(1)
        for i in range(20):
            self.kubelet.update(secret("burst%d" % i, "b"))
            time.sleep(0.01)
        deadline = time.time() + 15 * SLOW
        while time.time() < deadline and self.served() != fp("burst19"):
            time.sleep(0.1)
        self.assertEqual(self.served(), fp("burst19"), g.logs())
        time.sleep(0.5 * SLOW)
        self.assertEqual(self.served(), fp("burst19"))
        self.assertEqual(self.count(r"refused"), 0, g.logs())
        # debounced: far fewer switches than writes
        self.assertLess(self.count(r"changed; serving"), 21)
        self.assertEqual(self.metric("refused"), 0)


if __name__ == "__main__":
    main()
