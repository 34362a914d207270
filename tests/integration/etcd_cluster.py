"""A real etcd cluster on loopback for the fleet tests (issue 13): Debian's etcd-server
(3.4) started as N member processes on free 127.0.0.1 ports, each with its own data folder.
Members can be stopped (SIGTERM or SIGKILL) and started again with their data."""
import os
import shutil
import signal
import subprocess
import time
import unittest

from harness import SLOW, free_port, run

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def need_etcd():
    """Skips the calling test (with the reason) when etcd is not installed."""
    if not (os.access(ETCD, os.X_OK) and os.access(ETCDCTL, os.X_OK)):
        raise unittest.SkipTest("etcd is not installed (Debian packages etcd-server and "
                                "etcd-client; `scripts/deps.sh test` installs them)")


class EtcdCluster:
    def __init__(self, folder, size=3, tls=None, extra_args=()):
        """tls: None (plain http) or (ca_cert, server_cert, server_key, client_cert,
        client_key): the members then serve https:// with that certificate (for 127.0.0.1)
        and want a client certificate signed by ca_cert (etcdctl uses client_cert).
        extra_args: more etcd options for every member."""
        self.dir = folder
        self.tls = tls
        self.extra_args = list(extra_args)
        self.names = ["m%d" % (i + 1) for i in range(size)]
        self.client = [free_port() for _ in self.names]
        self.peer = [free_port() for _ in self.names]
        self.procs = [None] * size
        self.logs = [os.path.join(folder, n + ".log") for n in self.names]
        os.makedirs(folder, exist_ok=True)

    def url(self, i):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.client[i])

    def endpoints(self, members=None):
        """Comma-separated client URLs of the given members (default all)."""
        return ",".join(self.url(i) for i in (members if members is not None
                                              else range(len(self.names))))

    def _cmd(self, i):
        cluster = ",".join("%s=http://127.0.0.1:%d" % (n, p)
                           for n, p in zip(self.names, self.peer))
        cmd = [ETCD, "--name", self.names[i], "--data-dir",
               os.path.join(self.dir, self.names[i]), "--listen-client-urls", self.url(i),
               "--advertise-client-urls", self.url(i), "--listen-peer-urls",
               "http://127.0.0.1:%d" % self.peer[i], "--initial-advertise-peer-urls",
               "http://127.0.0.1:%d" % self.peer[i], "--initial-cluster", cluster,
               "--initial-cluster-state", "new", "--initial-cluster-token", "certgate-test",
               # short elections keep failover tests quick on loopback
               "--heartbeat-interval", "50", "--election-timeout", "500"]
        if self.tls:
            cmd += ["--client-cert-auth", "--trusted-ca-file", self.tls[0], "--cert-file",
                    self.tls[1], "--key-file", self.tls[2]]
        return cmd + self.extra_args

    def start(self, i=None):
        """Starts member i (default: every member) and waits until the cluster is healthy."""
        for j in ([i] if i is not None else range(len(self.names))):
            log = open(self.logs[j], "ab")
            self.procs[j] = subprocess.Popen(self._cmd(j), stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)
            log.close()
        self.wait_healthy([i] if i is not None else None)

    def etcdctl(self, *args, members=None, check=True):
        cmd = [ETCDCTL, "--endpoints", self.endpoints(members), "--dial-timeout", "2s"]
        if self.tls:
            cmd += ["--cacert", self.tls[0], "--cert", self.tls[3], "--key", self.tls[4]]
        return run(cmd + list(args), check=check, env=dict(os.environ, ETCDCTL_API="3"))

    def wait_healthy(self, members=None, timeout=30):
        deadline = time.time() + timeout * SLOW
        live = [j for j in range(len(self.names)) if self.procs[j]]
        while True:
            p = self.etcdctl("endpoint", "health", members=members or live, check=False)
            if p.returncode == 0:
                return
            for j in live:
                if self.procs[j].poll() is not None:
                    raise AssertionError("etcd member %s exited: %s"
                                         % (self.names[j], open(self.logs[j]).read()[-2000:]))
            if time.time() > deadline:
                raise AssertionError("etcd cluster not healthy: %s %s" % (p.stdout, p.stderr))
            time.sleep(0.1)

    def stop(self, i, sig=signal.SIGTERM):
        p = self.procs[i]
        if p and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs[i] = None

    def close(self):
        for i in range(len(self.names)):
            self.stop(i, signal.SIGKILL)


class SharedEtcd:
    """Mix into a GatewayTest (before it): one 3-member etcd for the whole class
    (cls.cluster), started in setUpClass and removed in tearDownClass; reset_etcd() gives
    a test every member running and an empty keyspace, and sets self.eps."""

    @classmethod
    def setUpClass(cls):
        need_etcd()
        import tempfile
        cls.etcd_dir = tempfile.mkdtemp(prefix="certgate-etcd-")
        cls.cluster = EtcdCluster(cls.etcd_dir)
        try:
            cls.cluster.start()
        except Exception:
            cls.cluster.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()
        shutil.rmtree(cls.etcd_dir, ignore_errors=True)

    def reset_etcd(self):
        for i in range(len(self.cluster.names)):  # a test may have stopped members
            if not self.cluster.procs[i]:
                self.cluster.start(i)
        self.cluster.etcdctl("del", "--prefix", "/")
        self.eps = self.cluster.endpoints()
