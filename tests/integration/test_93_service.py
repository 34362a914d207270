"""Layer 93: certgate as an installed service.

- `make install-files` (what `make install` runs after building) with DESTDIR and PREFIX:
  the binary, certgate(8) and the systemd unit, with the right modes and paths.
- certgate(8) is `mandoc -T lint` clean and names every command, option and
  configuration key that `certgate --help` and the README document.
- sd_notify over a fake NOTIFY_SOCKET (a datagram socket of this test, by path and in the
  abstract namespace): READY=1 once serving, RELOADING=1 with MONOTONIC_USEC then READY=1
  on SIGHUP (also when the reload fails), STOPPING=1 on SIGTERM; an unusable
  NOTIFY_SOCKET stops the start with a sentence.
- `systemd-analyze verify` of the installed unit, and its `systemd-analyze security`
  exposure (printed; at most 3.0), when systemd-analyze is installed.
- `make deb`'s package (scripts/mkdeb.sh): its files, control fields, a binary that runs,
  `lintian` clean (when installed), and its postinst run against stub commands: it
  creates the certgate system user and /var/lib/certgate and enables the service."""
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
import unittest

from harness import BIN, ROOT, SLOW, GatewayTest, file_sha256, main, read_text, run

MAN = os.path.join(ROOT, "man", "certgate.8")


def install(destdir="", prefix="/usr/local"):
    return run(["make", "--no-print-directory", "-C", ROOT, "install-files",
                "CERTGATE_BIN=" + BIN, "DESTDIR=" + destdir, "PREFIX=" + prefix])


class Notify:
    """A fake systemd notification socket: a bound AF_UNIX datagram socket."""

    def __init__(self, folder, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "certgate-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            path = os.path.join(folder, "notify.sock")
            self.sock.bind(path)
            self.env = path

    def next(self, timeout=15):
        """The next datagram as a dict of its KEY=VALUE lines."""
        self.sock.settimeout(timeout * SLOW)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n") if line)

    def nothing(self, wait=0.3):
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return True
        raise AssertionError("unexpected notification %r" % data)

    def close(self):
        self.sock.close()


class InstallTest(GatewayTest):
    def test_install_contents(self):
        root = os.path.join(self.tmp, "root")
        install(destdir=root, prefix="/usr")
        files = sorted(os.path.relpath(os.path.join(d, f), root)
                       for d, _, fs in os.walk(root) for f in fs)
        self.assertEqual(files, ["usr/bin/certgate", "usr/lib/systemd/system/certgate.service",
                                 "usr/share/man/man8/certgate.8"])
        b = os.path.join(root, "usr/bin/certgate")
        self.assertEqual(stat.S_IMODE(os.stat(b).st_mode), 0o755)
        self.assertEqual(file_sha256(b), file_sha256(BIN))
        for f in files[1:]:
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode), 0o644, f)
        unit = read_text(os.path.join(root, files[1]))
        self.assertIn("\nExecStart=/usr/bin/certgate run --data-dir /var/lib/certgate", unit)
        self.assertNotIn("/usr/local", "".join(l for l in unit.splitlines(True)
                                               if not l.startswith("#")))
        for line in ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "User=certgate",
                     "StateDirectory=certgate", "ProtectSystem=strict", "NoNewPrivileges=yes",
                     "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                     "AmbientCapabilities=CAP_NET_BIND_SERVICE", "PrivateTmp=yes",
                     "ProtectHome=yes", "SystemCallFilter=@system-service",
                     "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"]:
            self.assertIn("\n" + line + "\n", unit)
        self.assertEqual(read_text(os.path.join(root, files[2])), read_text(MAN))

    def test_man_page_lint_clean(self):
        if not shutil.which("mandoc"):
            self.skipTest("mandoc is not installed (Debian package mandoc)")
        p = run(["mandoc", "-T", "lint", "-W", "style", MAN], check=False)
        # what depends on the manual pages of this machine, not on certgate(8)
        noise = re.compile(r"mandoc\.db|referenced manual not found")
        left = [l for l in (p.stdout + p.stderr).splitlines() if l and not noise.search(l)]
        self.assertEqual(left, [])
        self.assertIn(p.returncode, (0, 1))  # 1: only the style notes filtered above

    def test_man_page_names_everything(self):
        man = read_text(MAN)
        usage = run([BIN, "--help"]).stdout
        options = set(re.findall(r"--[a-z][a-z-]+", usage))
        self.assertGreater(len(options), 10)
        for o in sorted(options):
            self.assertRegex(man, r"\.(?:Op |It |)Fl -%s\b" % re.escape(o[2:]) +
                             r"|Fl -%s\b" % re.escape(o[2:]), o)
        for cmd in ["run", "check-config", "token create", "token list", "token revoke",
                    "cert import"]:
            self.assertIn(".Cm %s" % cmd, man)
        readme = read_text(os.path.join(ROOT, "README.md"))
        conf = readme[readme.index("## Configuration"):readme.index("### PKCS#12 files")]
        keys = set(re.findall(r"^\| `([a-z-]+)` \|", conf, re.M))
        self.assertGreater(len(keys), 25)
        for k in sorted(keys):
            self.assertRegex(man, r"\n\.It Cm %s\n" % re.escape(k), k)
        for sig in ["SIGHUP", "SIGTERM", "SIGINT"]:
            self.assertIn("Dv %s" % sig, man)
        for f in ["custom.properties", "secret.key", "tokens.json", ".default-certificate.pem",
                  "/var/lib/certgate"]:
            self.assertIn(f, man)

    def test_systemd_analyze(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze is not installed")
        prefix = os.path.join(self.tmp, "prefix")
        install(prefix=prefix)
        unit = os.path.join(prefix, "lib/systemd/system/certgate.service")
        env = dict(os.environ, MANPATH=os.path.join(prefix, "share/man"))
        p = run(["systemd-analyze", "verify", unit], check=False, env=env)
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""))
        p = run(["systemd-analyze", "security", "--offline=true", unit], check=False)
        m = re.search(r"Overall exposure level for certgate.service: ([0-9.]+) (\w+)", p.stdout)
        self.assertTrue(m, p.stdout + p.stderr)
        print("\nsystemd-analyze security: exposure %s %s" % (m.group(1), m.group(2)))
        self.assertLessEqual(float(m.group(1)), 3.0)


STUB = """#!/bin/sh
echo "$(basename "$0") $*" >>"%s"
case "$(basename "$0")" in getent) exit 2;; esac
exit 0
"""


class DebTest(GatewayTest):
    def test_deb_package(self):
        for t in ("dpkg-deb", "dpkg-shlibdeps", "dpkg-buildflags", "cmake"):
            if not shutil.which(t):
                self.skipTest("%s is not installed (Debian package dpkg-dev)" % t)
        deb = run([os.path.join(ROOT, "scripts", "mkdeb.sh")], timeout=900).stdout.strip()
        deb = os.path.join(ROOT, deb)
        listing = run(["dpkg-deb", "-c", deb]).stdout
        files = sorted(l.split()[-1] for l in listing.splitlines() if not l.startswith("d"))
        self.assertEqual(files, ["./lib/systemd/system/certgate.service", "./usr/bin/certgate",
                                 "./usr/share/doc/certgate/changelog.gz",
                                 "./usr/share/doc/certgate/copyright",
                                 "./usr/share/man/man8/certgate.8.gz"])
        self.assertIn("-rwxr-xr-x root/root", [l for l in listing.splitlines()
                                               if l.endswith("/usr/bin/certgate")][0])
        control = run(["dpkg-deb", "-f", deb]).stdout
        self.assertRegex(control, r"(?m)^Package: certgate$")
        self.assertRegex(control, r"(?m)^Depends: .*libssl3.*libuv1.*adduser")
        x = os.path.join(self.tmp, "x")
        run(["dpkg-deb", "-R", deb, x])
        self.assertIn("certgate ", run([os.path.join(x, "usr/bin/certgate"), "--version"]).stdout)
        unit = read_text(os.path.join(x, "lib/systemd/system/certgate.service"))
        self.assertIn("\nExecStart=/usr/bin/certgate run --data-dir /var/lib/certgate", unit)
        if shutil.which("lintian"):
            p = run(["lintian", "--fail-on", "error,warning", deb], check=False, timeout=300)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertNotRegex(p.stdout, r"(?m)^[EW]: ")
        # the postinst against stub commands: nothing on this machine is changed
        stubs, log = os.path.join(self.tmp, "stubs"), os.path.join(self.tmp, "calls")
        os.makedirs(stubs)
        for c in ("getent", "adduser", "mkdir", "chown", "chmod", "deb-systemd-helper",
                  "deb-systemd-invoke", "systemctl"):
            with open(os.path.join(stubs, c), "w") as f:
                f.write(STUB % log)
            os.chmod(os.path.join(stubs, c), 0o755)
        env = dict(os.environ, PATH=stubs + ":/usr/bin:/bin")
        run(["sh", os.path.join(x, "DEBIAN/postinst"), "configure"], env=env)
        calls = read_text(log)
        self.assertIn("getent passwd certgate", calls)
        self.assertRegex(calls, r"adduser --system --group --no-create-home "
                                r"--home /var/lib/certgate .*certgate\n")
        if not os.path.isdir("/var/lib/certgate"):
            self.assertIn("mkdir -p /var/lib/certgate\nchown certgate:certgate "
                          "/var/lib/certgate\nchmod 0700 /var/lib/certgate\n", calls)
        self.assertIn("deb-systemd-helper unmask certgate.service", calls)


class NotifyTest(GatewayTest):
    def notify_cycle(self, abstract):
        n = Notify(self.tmp, abstract=abstract)
        g = self.gateway(env={"NOTIFY_SOCKET": n.env}).start(wait=False)
        msg = n.next()
        self.assertEqual(msg.get("READY"), "1", msg)
        g.wait_ready()
        # READY=1 comes once the port accepts
        socket.create_connection(("127.0.0.1", g.port), timeout=5).close()
        n.nothing()
        for good in (True, False):
            if not good:  # a failing reload ends with READY=1 too
                g.write_conf("[com.compuware.apm.webserver]\nssl-protocols = TLSv1.1\n")
            before = time.monotonic_ns() // 1000
            g.send_signal(signal.SIGHUP)
            msg = n.next()
            after = time.monotonic_ns() // 1000
            self.assertEqual(msg.get("RELOADING"), "1", msg)
            self.assertTrue(before <= int(msg["MONOTONIC_USEC"]) <= after,
                            (before, msg, after))
            msg = n.next()
            self.assertEqual(msg.get("READY"), "1", msg)
            self.assertTrue(g.wait_log("reloaded; serving" if good else "reload failed"))
        g.send_signal(signal.SIGTERM)
        self.assertEqual(n.next().get("STOPPING"), "1")
        self.assertEqual(g.proc.wait(20 * SLOW), 0)
        n.close()

    def test_notify_path(self):
        self.notify_cycle(abstract=False)

    def test_notify_abstract(self):
        self.notify_cycle(abstract=True)

    def test_no_notify_socket(self):
        g = self.gateway().start()
        self.assertNotIn("NOTIFY", g.logs())

    def test_bad_notify_socket(self):
        for bad in ["relative/notify.sock", "/" + "x" * 200]:
            g = self.gateway(name="bad%d" % len(bad), env={"NOTIFY_SOCKET": bad})
            g.start(wait=False)
            self.assertEqual(g.proc.wait(20 * SLOW), 1)
            self.assertIn("NOTIFY_SOCKET", g.logs())

    def test_send_failure_is_logged_not_fatal(self):
        # the socket is gone: the gateway serves anyway and says why
        n = Notify(self.tmp)
        path = n.env
        n.close()
        os.unlink(path)
        g = self.gateway(env={"NOTIFY_SOCKET": path}).start()
        self.assertTrue(g.wait_log("cannot notify systemd"))
        socket.create_connection(("127.0.0.1", g.port), timeout=5).close()


if __name__ == "__main__":
    main()
