"""The three servers under test, configured alike, and the shared upstream (bench/run.sh).

Each server runs in the foreground with its own files in a temporary folder, pinned to
CPU 0 with taskset (every thread and child process inherits the pinning), on a free port of
127.0.0.1. What "alike" means, for every case:

- the same certificate and key (PKCS#12 for certgate, PEM for nginx and HAProxy);
- TLS 1.2 and 1.3, Mozilla intermediate ciphers with the server's order, TLS 1.3 suites
  AES-128-GCM, AES-256-GCM, ChaCha20 in that order, groups X25519, P-256, P-384;
- one worker: certgate --threads 1, nginx worker_processes 1, HAProxy nbthread 1;
- access logs off; keep-alive with a 75 s idle timeout and no request limit;
- deferred accept (certgate always uses TCP_DEFER_ACCEPT);
- session cache off everywhere; session tickets on or off by case, one ticket per
  handshake when on (certgate's setting), none at all when off;
- /rest/health answers 200 text/plain "RUNNING" with Date, Server, Content-Type,
  Content-Length and X-Session-Reused: 0|1;
- with an upstream: everything else goes to it over keep-alive connections (at most 32
  idle ones per worker), with X-Forwarded-For/-Proto/-Host, streamed with bounded buffers.
"""

import os
import signal
import socket
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")

MOZ_TLS12 = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
             "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
             "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
             "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")
MOZ_TLS13 = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
P12_PASSWORD = "benchpass"
MAX_CONNS = 9000  # nginx worker_connections, HAProxy maxconn (case 5 holds 5,000)
UPSTREAM_IDLE = 32  # idle upstream connections kept: certgate's default max-connections


def which(name):
    for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/sbin"]:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    raise SystemExit("bench: %s is not installed (scripts/deps.sh bench installs it)" % name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pids):
    """utime+stime of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return sorted(out)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def wait_port(port, proc, log, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("server exited (%s): %s" % (proc.returncode, tail(log)))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not listen on %d in %ds: %s" % (port, timeout, tail(log)))


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def write(path, text, mode=0o644):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


class Server:
    """A server process. Subclasses write the configuration and know their processes."""

    name = "?"

    def __init__(self, workdir, pki, opts):
        self.dir = os.path.join(workdir, self.name)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.pki = pki
        self.opts = opts  # cert: "rsa"|"ec", tickets: bool, upstream: port|None
        self.port = free_port()
        self.proc = None
        self.log = os.path.join(self.dir, "server.log")
        self.cmd = None

    def start(self, wrap=None, timeout=15):
        """Configures and starts the server; wrap(cmd), when given, returns the command to
        run instead (e.g. under valgrind)."""
        self.configure()
        if wrap:
            self.cmd = wrap(self.cmd)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                                     cwd=self.dir, start_new_session=True)
        logf.close()
        wait_port(self.port, self.proc, self.log, timeout)

    def pids(self):
        return [self.proc.pid]

    def cpu_s(self):
        return proc_cpu_s(self.pids())

    def rss_pid(self):
        return self.proc.pid

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(12)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    conf_name = None  # the configuration file's name, for the report

    def files(self):
        """The configuration files, for the report."""
        return {self.conf_name: self.conf_text} if self.conf_name else {}


class Certgate(Server):
    name = "certgate"
    conf_name = "custom.properties"

    def __init__(self, workdir, pki, opts, binary):
        super().__init__(workdir, pki, opts)
        self.binary = binary
        self.token = None

    def configure(self):
        os.makedirs(os.path.join(self.dir, "config"), exist_ok=True)
        ssl_dir = os.path.join(self.dir, "ssl")
        os.makedirs(ssl_dir, exist_ok=True)
        os.chmod(ssl_dir, 0o700)
        p12 = os.path.basename(self.pki[self.opts["cert"]]["p12"])
        with open(self.pki[self.opts["cert"]]["p12"], "rb") as src:
            data = src.read()
        with open(os.path.join(ssl_dir, p12), "wb") as dst:
            dst.write(data)
        text = ("[com.compuware.apm.webserver]\n"
                "certificate-file = %s\n"
                "certificate-password = %s\n\n"
                "[certgate]\n"
                "ssl-session-cache = off\n"
                "ssl-session-tickets = %s\n"
                "session-reused-header = on\n"
                % (p12, P12_PASSWORD, "on" if self.opts["tickets"] else "off"))
        if self.opts.get("metrics"):  # bench/metrics_cost.py: the port of metrics-listen
            text += "metrics-listen = 127.0.0.1:%d\n" % self.opts["metrics"]
        if self.opts.get("upstream"):
            text += "\n[upstream]\nurl = http://127.0.0.1:%d\n" % self.opts["upstream"]
        self.conf_text = text
        write(os.path.join(self.dir, "config", "custom.properties"), text, 0o600)
        if self.token is None:
            p = subprocess.run([self.binary, "token", "create", "--data-dir", self.dir,
                                "--environment", "bench", "--scope", "ActiveGateCertManagement"],
                               capture_output=True, text=True, check=True)
            self.token = p.stdout.strip()
        self.cmd = ["taskset", "-c", "0", self.binary, "run", "--data-dir", self.dir, "--listen",
                    "127.0.0.1:%d" % self.port, "--threads", "1", "--access-log", "off",
                    "--log-level", "warn"]


class Nginx(Server):
    name = "nginx"
    conf_name = "nginx.conf"

    def configure(self):
        c = self.pki[self.opts["cert"]]
        self.cert = os.path.join(self.dir, "cert.crt")
        self.key = os.path.join(self.dir, "cert.key")
        self.set_cert(c, reload=False)
        for sub in ("logs", "tmp"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        d = self.dir
        tickets = self.opts["tickets"]
        user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
        if self.opts.get("upstream"):
            upstream = ("    upstream up {\n"
                        "        server 127.0.0.1:%d;\n"
                        "        keepalive %d;\n"
                        "        keepalive_requests 1000000;\n"
                        "        keepalive_timeout 75s;\n"
                        "    }\n" % (self.opts["upstream"], UPSTREAM_IDLE))
            rest = ("        location / {\n"
                    "            proxy_pass http://up;\n"
                    "            proxy_http_version 1.1;\n"
                    "            proxy_set_header Connection \"\";\n"
                    "            proxy_set_header X-Forwarded-For $remote_addr;\n"
                    "            proxy_set_header X-Forwarded-Proto https;\n"
                    "            proxy_set_header X-Forwarded-Host $http_host;\n"
                    "            proxy_buffers 8 32k;\n"
                    "            proxy_max_temp_file_size 0;\n"
                    "        }\n")
        else:
            upstream, rest = "", ""
        self.conf_text = (
            "%s"
            "worker_processes 1;\n"
            "worker_rlimit_nofile 20000;\n"
            "pid %s/nginx.pid;\n"
            "error_log %s/logs/error.log warn;\n"
            "events {\n    worker_connections %d;\n}\n"
            "http {\n"
            "    access_log off;\n"
            "    server_tokens off;\n"
            "    keepalive_timeout 75s;\n"
            "    keepalive_requests 1000000;\n"
            "    client_body_temp_path %s/tmp/body;\n"
            "    proxy_temp_path %s/tmp/proxy;\n"
            "    fastcgi_temp_path %s/tmp/fastcgi;\n"
            "    uwsgi_temp_path %s/tmp/uwsgi;\n"
            "    scgi_temp_path %s/tmp/scgi;\n"
            "    map $ssl_session_reused $session_reused { r 1; default 0; }\n"
            "    ssl_protocols TLSv1.2 TLSv1.3;\n"
            "    ssl_ciphers %s;\n"
            "    ssl_prefer_server_ciphers on;\n"
            "    ssl_conf_command Ciphersuites %s;\n"
            "    ssl_ecdh_curve X25519:prime256v1:secp384r1;\n"
            "    ssl_session_cache off;\n"
            "    ssl_session_tickets %s;\n"
            "    ssl_conf_command NumTickets %d;\n"
            "%s"
            "    server {\n"
            "        listen 127.0.0.1:%d ssl deferred;\n"
            "        ssl_certificate %s;\n"
            "        ssl_certificate_key %s;\n"
            "        location = /rest/health {\n"
            "            default_type text/plain;\n"
            "            add_header X-Session-Reused $session_reused;\n"
            "            return 200 \"RUNNING\";\n"
            "        }\n"
            "%s"
            "    }\n"
            "}\n" % (user, d, d, MAX_CONNS, d, d, d, d, d, MOZ_TLS12, MOZ_TLS13,
                     "on" if tickets else "off", 1 if tickets else 0, upstream, self.port,
                     self.cert, self.key, rest))
        conf = os.path.join(d, "nginx.conf")
        write(conf, self.conf_text)
        self.cmd = ["taskset", "-c", "0", which("nginx"), "-p", d, "-c", conf, "-g",
                    "daemon off;"]

    def set_cert(self, c, reload=True):
        """Puts certificate c in place; with reload, SIGHUP and wait for the new worker."""
        with open(c["crt"]) as f:
            crt = f.read()
        with open(c["key"]) as f:
            key = f.read()
        write(self.key, key, 0o600)
        write(self.cert, crt)
        if not reload:
            return True
        before = set(children(self.proc.pid))
        os.kill(self.proc.pid, signal.SIGHUP)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            if set(children(self.proc.pid)) - before:
                return True
            time.sleep(0.002)
        return False

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def rss_pid(self):
        kids = children(self.proc.pid)
        return kids[-1] if kids else self.proc.pid


class Haproxy(Server):
    name = "haproxy"
    conf_name = "haproxy.cfg"

    def configure(self):
        c = self.pki[self.opts["cert"]]
        self.pem = os.path.join(self.dir, "cert.pem")
        with open(c["pem"]) as f:
            write(self.pem, f.read(), 0o600)
        self.sock = os.path.join(self.dir, "admin.sock")
        d = self.dir
        opts = "ssl-min-ver TLSv1.2" + ("" if self.opts["tickets"] else " no-tls-tickets")
        if self.opts.get("upstream"):
            backend = ("backend up\n"
                       "    http-reuse always\n"
                       "    option forwardfor\n"
                       "    http-request set-header X-Forwarded-Proto https\n"
                       "    http-request set-header X-Forwarded-Host %%[req.hdr(host)]\n"
                       "    server up 127.0.0.1:%d pool-max-conn %d\n"
                       % (self.opts["upstream"], UPSTREAM_IDLE))
        else:
            backend = ("backend up\n"
                       "    http-request return status 503 content-type text/plain "
                       "string \"no upstream\"\n")
        self.conf_text = (
            "global\n"
            "    nbthread 1\n"
            "    maxconn %d\n"
            "    tune.ssl.cachesize 0\n"
            "    tune.ssl.default-dh-param 2048\n"
            "    ssl-default-bind-ciphers %s\n"
            "    ssl-default-bind-ciphersuites %s\n"
            "    ssl-default-bind-curves X25519:P-256:P-384\n"
            "    ssl-default-bind-options %s\n"
            "    stats socket %s/admin.sock mode 600 level admin\n"
            "defaults\n"
            "    mode http\n"
            "    timeout connect 5s\n"
            "    timeout client 75s\n"
            "    timeout server 60s\n"
            "    timeout http-request 20s\n"
            "    timeout http-keep-alive 75s\n"
            "frontend fe\n"
            "    bind 127.0.0.1:%d ssl crt %s defer-accept\n"
            "    http-request set-var(txn.local) bool(true) if { path /rest/health }\n"
            "    http-request return status 200 content-type text/plain string RUNNING "
            "if { var(txn.local) -m bool }\n"
            "    http-after-response set-header Date %%[date,http_date] "
            "if { var(txn.local) -m bool }\n"
            "    http-after-response set-header Server haproxy if { var(txn.local) -m bool }\n"
            "    http-after-response set-header X-Session-Reused %%[ssl_fc_is_resumed] "
            "if { var(txn.local) -m bool }\n"
            "    default_backend up\n"
            "%s" % (MAX_CONNS, MOZ_TLS12, MOZ_TLS13, opts, d, self.port, self.pem, backend))
        conf = os.path.join(d, "haproxy.cfg")
        write(conf, self.conf_text)
        self.cmd = ["taskset", "-c", "0", which("haproxy"), "-db", "-f", conf]

    def admin(self, command, payload=None):
        """One command on the runtime API; returns its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(self.sock)
            msg = command
            if payload is not None:
                msg += " <<\n" + payload.rstrip("\n") + "\n\n"
            else:
                msg += "\n"
            s.sendall(msg.encode())
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        return out.decode(errors="replace")

    def set_cert(self, c):
        with open(c["pem"]) as f:
            pem = f.read()
        a = self.admin("set ssl cert %s" % self.pem, pem)
        b = self.admin("commit ssl cert %s" % self.pem)
        return "Success" in b, (a + b).strip()


class Upstream(Server):
    """The shared upstream of case 4: nginx over plain HTTP, pinned to CPU 1 (with the load
    generator, apart from the server under test), serving a small file and a large one."""

    name = "upstream"
    conf_name = "nginx.conf"

    def __init__(self, workdir, big_bytes):
        super().__init__(workdir, None, {})
        self.big_bytes = big_bytes

    def configure(self):
        d = self.dir
        root = os.path.join(d, "www")
        os.makedirs(root, exist_ok=True)
        os.chmod(root, 0o755)
        for sub in ("logs", "tmp"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        write(os.path.join(root, "small.txt"), ("certgate bench " * 70)[:1023] + "\n")
        big = os.path.join(root, "big.bin")
        with open(big, "wb") as f:
            f.truncate(self.big_bytes)  # sparse: read from the page cache, no disk
        os.chmod(big, 0o644)
        user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
        self.conf_text = (
            "%sworker_processes 1;\n"
            "pid %s/nginx.pid;\n"
            "error_log %s/logs/error.log warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "    access_log off;\n"
            "    sendfile on;\n"
            "    keepalive_timeout 75s;\n"
            "    keepalive_requests 1000000;\n"
            "    client_body_temp_path %s/tmp/body;\n"
            "    proxy_temp_path %s/tmp/proxy;\n"
            "    fastcgi_temp_path %s/tmp/fastcgi;\n"
            "    uwsgi_temp_path %s/tmp/uwsgi;\n"
            "    scgi_temp_path %s/tmp/scgi;\n"
            "    default_type application/octet-stream;\n"
            "    server {\n"
            "        listen 127.0.0.1:%d;\n"
            "        root %s;\n"
            "    }\n"
            "}\n" % (user, d, d, d, d, d, d, d, self.port, root))
        conf = os.path.join(d, "nginx.conf")
        write(conf, self.conf_text)
        self.cmd = ["taskset", "-c", "1", which("nginx"), "-p", d, "-c", conf, "-g",
                    "daemon off;"]

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)
