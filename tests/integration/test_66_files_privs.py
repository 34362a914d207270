"""Layer 66: the files certgate trusts, and the user it runs as.

- DIR/ssl/ entries: a symbolic link (to a good file, or dangling), a FIFO, a folder or
  another user's file is refused with a sentence by upload (the name must not be a
  link), activation and description, left out of the list, and not served when
  custom.properties names it; the file a link points to is never read or written.
- tokens.json and secret.key readable by others stop the start with the command that
  fixes them.
- --user NAME (as root): ports bound as root (a privileged port), then every thread
  runs as NAME with NAME's groups and cannot regain root; what the API writes belongs to
  NAME; a data directory NAME does not own is refused. Without --user, root is warned
  about; --user as another user than root is refused unless it names that user.
  The --user tests need root (as CI runs them) and are skipped otherwise."""
import grp
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import unittest

from harness import (BIN, SLOW, GatewayTest, certgate, cert_fingerprint, der_fingerprint,
                     file_sha256, main)

ROOT = os.geteuid() == 0
NOBODY = pwd.getpwnam("nobody")


def privileged_port():
    """A free TCP port below 1024 on 127.0.0.1 (443 when free)."""
    for p in [443] + list(range(1000, 600, -1)):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise unittest.SkipTest("no free port below 1024")


def chown_tree(path, uid, gid):
    os.chown(path, uid, gid)
    for d, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(d, n), uid, gid)


class FilesTest(GatewayTest):
    def setUp(self):
        super().setUp()
        key, self.a_crt = self.pki.self_signed("a", "a.example", kind="ec")
        self.a = self.pki.p12("a.p12", key, self.a_crt, "pw-a")
        key, self.b_crt = self.pki.self_signed("b", "b.example", kind="ec")
        self.b = self.pki.p12("b.p12", key, self.b_crt, "pw-b")
        self.outside = os.path.join(self.tmp, "outside")
        os.makedirs(self.outside)

    def start(self, conf=None):
        g = self.gateway()
        if conf:
            g.write_conf(conf)
        self.tok = g.token()
        g.start()
        return g

    def link(self, g, name, target):
        path = os.path.join(g.ssl_dir, name)
        os.symlink(target, path)
        return path

    def test_symlink_refused_by_every_operation(self):
        g = self.start()
        self.assertEqual(g.upload("reg.p12", self.a, "pw-a", self.tok)[0], 200)
        served = der_fingerprint(g.served_cert())
        # a link to a good keystore outside ssl/
        target = shutil.copy(self.b, os.path.join(self.outside, "b.p12"))
        digest = file_sha256(target)
        self.link(g, "link.p12", target)
        with self.subTest("activate"):
            self.assertApiError(g.activate("link.p12", "pw-b", self.tok), 403, "symbolic link")
        with self.subTest("activate, JSON password"):
            self.assertApiError(g.activate("link.p12", "pw-b", self.tok, json_body=True), 403,
                                "symbolic link")
        for method in ("GET", "POST"):
            with self.subTest("describe", method=method):
                self.assertApiError(g.call(method, "link.p12/list", self.tok,
                                           headers={"X-Password": "pw-b"}), 403, "symbolic link")
        with self.subTest("upload over the link"):
            self.assertApiError(g.upload("link.p12", self.a, "pw-a", self.tok), 403,
                                "symbolic link")
            self.assertTrue(os.path.islink(os.path.join(g.ssl_dir, "link.p12")))
        with self.subTest("list"):
            names = [e["name"] for e in self.assertJson(g.call("GET", "list", self.tok))]
            self.assertEqual(names, ["reg.p12"])
            self.assertTrue(g.wait_log(r"list leaves out 1 entry .*link\.p12 .*symbolic link"))
        # a dangling link: an upload must not create its target
        self.link(g, "dangling.p12", os.path.join(self.outside, "made.p12"))
        with self.subTest("upload over a dangling link"):
            self.assertApiError(g.upload("dangling.p12", self.a, "pw-a", self.tok), 403,
                                "symbolic link")
            self.assertFalse(os.path.exists(os.path.join(self.outside, "made.p12")))
        self.assertEqual(file_sha256(target), digest, "the link's target was written")
        self.assertEqual(der_fingerprint(g.served_cert()), served)
        self.assertServes(g, self.a_crt)
        # delete removes the link, never its target
        with self.subTest("delete"):
            self.assertEqual(g.call("DELETE", "link.p12", self.tok)[:1], (200,))
            self.assertFalse(os.path.lexists(os.path.join(g.ssl_dir, "link.p12")))
            self.assertEqual(file_sha256(target), digest)

    def test_fifo_folder_and_other_owner_refused(self):
        g = self.start()
        os.mkfifo(os.path.join(g.ssl_dir, "fifo.p12"))
        os.mkdir(os.path.join(g.ssl_dir, "dir.p12"))
        cases = [("fifo.p12", "FIFO"), ("dir.p12", "folder")]
        if ROOT:
            other = shutil.copy(self.a, os.path.join(g.ssl_dir, "other.p12"))
            os.chown(other, NOBODY.pw_uid, NOBODY.pw_gid)
            cases.append(("other.p12", "belongs to uid %d" % NOBODY.pw_uid))
        for name, word in cases:
            with self.subTest(name):
                # a FIFO must not block the worker: the answer comes at once
                self.assertApiError(g.call("GET", name + "/list", self.tok, timeout=5,
                                           headers={"X-Password": "pw-a"}), 403, word)
                self.assertApiError(g.activate(name, "pw-a", self.tok, timeout=5), 403, word)
                self.assertApiError(g.upload(name, self.b, "pw-b", self.tok, timeout=5), 403)
        self.assertEqual(self.assertJson(g.call("GET", "list", self.tok)), [])
        self.assertEqual(g.request("GET", "/rest/health")[0], 200)

    def test_configured_certificate_through_a_link_not_served(self):
        g = self.gateway()
        target = shutil.copy(self.a, os.path.join(self.outside, "a.p12"))
        os.makedirs(g.ssl_dir)
        self.link(g, "cert.p12", target)
        g.write_conf("[com.compuware.apm.webserver]\ncertificate-file = cert.p12\n"
                     "certificate-password = pw-a\n")
        p = certgate("check-config", "--data-dir", g.data_dir, check=False)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("symbolic link", p.stdout + p.stderr)
        g.start()
        self.assertTrue(g.wait_log(r"custom certificate not served: .*symbolic link"))
        self.assertNotEqual(der_fingerprint(g.served_cert()), cert_fingerprint(self.a_crt))
        # an absolute path is the operator's explicit choice: links are followed there
        g.stop()
        g.write_conf("[com.compuware.apm.webserver]\ncertificate-file = %s\n"
                     "certificate-password = pw-a\n" % os.path.join(g.ssl_dir, "cert.p12"))
        g.start()
        self.assertServes(g, self.a_crt)

    def test_tokens_and_key_readable_by_others_refused(self):
        g = self.gateway()
        g.token()
        g.start()
        g.stop()
        store = os.path.join(g.data_dir, "config", "tokens.json")
        key = os.path.join(g.data_dir, "config", "secret.key")
        self.assertEqual(os.stat(store).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        for path, mode in ((store, 0o644), (store, 0o640), (key, 0o640), (key, 0o604)):
            with self.subTest(os.path.basename(path), mode=oct(mode)):
                os.chmod(path, mode)
                self.assertEqual(g.run_to_exit(), 1)
                self.assertIn("chmod 600 %s" % path, g.logs())
                os.chmod(path, 0o600)
        # a store made readable while running: API calls fail (500) rather than use it
        g.start()
        tok = g.token()
        self.assertEqual(g.call("GET", "list", tok)[0], 200)
        os.chmod(store, 0o644)
        self.assertApiError(g.call("GET", "list", tok), 500, "token store")
        self.assertTrue(g.wait_log(r"tokens\.json has mode 0644"))
        # the CLI writes it back private
        g.token()
        self.assertEqual(os.stat(store).st_mode & 0o777, 0o600)
        self.assertEqual(g.call("GET", "list", tok)[0], 200)


class UserTest(GatewayTest):
    def setUp(self):
        super().setUp()
        if not ROOT:
            self.skipTest("--user needs root")
        os.chmod(self.tmp, 0o755)  # nobody must reach the data directory
        key, self.a_crt = self.pki.self_signed("a", "a.example", kind="ec")
        self.a = self.pki.p12("a.p12", key, self.a_crt, "pw-a")

    def nobody_gateway(self, **kw):
        g = self.gateway(extra_args=["--user", "nobody"], **kw)
        g.write_conf("[certgate]\nheader-timeout = 20\n")
        tok = g.token()
        chown_tree(g.data_dir, NOBODY.pw_uid, NOBODY.pw_gid)
        return g, tok

    def status_ids(self, pid):
        """{task id: (Uid, Gid, Groups) lines} of every thread of pid."""
        out = {}
        for task in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/status" % (pid, task)) as f:
                text = f.read()
            ids = [re.search(r"^%s:\s*(.*)$" % k, text, re.M).group(1).split()
                   for k in ("Uid", "Gid", "Groups")]
            out[task] = tuple(tuple(map(int, i)) for i in ids)
        return out

    def test_drops_to_nobody_after_binding_a_privileged_port(self):
        g, tok = self.nobody_gateway()
        port = privileged_port()
        g.start(port=port)
        self.assertEqual(g.port, port)
        self.assertIn("running as user nobody", g.logs())
        self.assertNotIn("running as root", g.logs())
        groups = tuple(sorted(set(os.getgrouplist("nobody", NOBODY.pw_gid))))
        tasks = self.status_ids(g.proc.pid)
        self.assertGreater(len(tasks), 2, "expected worker threads")
        for task, (uid, gid, grps) in tasks.items():
            self.assertEqual(uid, (NOBODY.pw_uid,) * 4, "thread %s Uid" % task)
            self.assertEqual(gid, (NOBODY.pw_gid,) * 4, "thread %s Gid" % task)
            self.assertEqual(tuple(sorted(grps)), groups, "thread %s Groups" % task)
        # served on the privileged port; the API writes files that belong to nobody
        self.assertEqual(g.request("GET", "/rest/health")[:1], (200,))
        self.assertEqual(g.upload("a.p12", self.a, "pw-a", tok)[0], 200)
        self.assertServes(g, self.a_crt)
        for path in (os.path.join(g.ssl_dir, "a.p12"), g.conf_path):
            st = os.stat(path)
            self.assertEqual((st.st_uid, st.st_gid), (NOBODY.pw_uid, NOBODY.pw_gid), path)
        self.assertEqual(os.stat(os.path.join(g.ssl_dir, "a.p12")).st_mode & 0o777, 0o600)
        # SIGHUP still works as nobody
        self.assertIn("reloaded", g.reload())
        self.assertEqual(g.stop(), 0)

    def test_new_data_dir_created_as_the_user(self):
        g = self.gateway(extra_args=["--user", "nobody"])
        os.chown(g.data_dir, NOBODY.pw_uid, NOBODY.pw_gid)  # empty: config/, ssl/ are made
        g.start()
        for sub in ("config", "ssl", "config/secret.key", "ssl/.default-certificate.pem"):
            st = os.stat(os.path.join(g.data_dir, sub))
            self.assertEqual(st.st_uid, NOBODY.pw_uid, sub)
        self.assertEqual(g.request("GET", "/rest/health")[:1], (200,))

    def test_data_dir_of_another_user_refused(self):
        g = self.gateway(extra_args=["--user", "nobody"])
        g.token()  # config/ and tokens.json belong to root
        self.assertEqual(g.run_to_exit(), 1)
        self.assertIn("chown -R nobody: %s" % g.data_dir, g.logs())

    def test_root_without_user_warns(self):
        g = self.gateway()
        g.start()
        self.assertIn("running as root", g.logs())

    def test_bad_user_arguments(self):
        for args, words in ((["--user", "no-such-user-66"], "no such user"),
                            (["--user", "root"], "name an unprivileged user")):
            with self.subTest(args[1]):
                g = self.gateway("gw-" + args[1], extra_args=args)
                self.assertEqual(g.run_to_exit(), 1)
                self.assertIn(words, g.logs())

    def test_user_when_not_root(self):
        """Run as nobody: --user root is refused (it needs root), --user nobody is a
        no-op that starts."""
        data = os.path.join(self.tmp, "nb")
        os.makedirs(data)
        os.chown(data, NOBODY.pw_uid, NOBODY.pw_gid)
        as_nobody = ["setpriv", "--reuid", "nobody", "--regid", str(NOBODY.pw_gid),
                     "--clear-groups", "--"]
        p = subprocess.run(as_nobody + [BIN, "run", "--data-dir", data, "--listen",
                                        "127.0.0.1:0", "--user", "daemon"],
                           capture_output=True, text=True, timeout=30 * SLOW)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("--user daemon needs root", p.stderr)
        proc = subprocess.Popen(as_nobody + [BIN, "run", "--data-dir", data, "--listen",
                                             "127.0.0.1:0", "--user", "nobody",
                                             "--access-log", "off"],
                                stderr=subprocess.PIPE, text=True)
        try:
            for line in proc.stderr:
                if "ready:" in line or "cannot start" in line:
                    break
            self.assertIn("ready:", line)
        finally:
            proc.terminate()
            proc.wait(20 * SLOW)
            proc.stderr.close()
        self.assertEqual(proc.returncode, 0)


if __name__ == "__main__":
    main()
