"""Black-box test harness: starts the real certgate binary and drives it with real
clients (curl, openssl s_client, Python's ssl/http.client), with PKCS#12 files made at
test time by openssl and keytool.

Only the standard library is used, so the tests run on a fresh Debian 12 with the
packages scripts/deps.sh installs."""

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("CERTGATE_BIN") or os.path.join(ROOT, "build", "certgate")
TOOLS = os.environ.get("CERTGATE_TOOLS") or os.path.join(ROOT, "build", "tools")
SANITIZED = os.environ.get("CERTGATE_SANITIZED") == "1"
# sanitizers slow everything down; waits scale with this
SLOW = float(os.environ.get("CERTGATE_TEST_SLOW") or (4.0 if SANITIZED else 1.0))

WEBSERVER = "com.compuware.apm.webserver"
SCOPE = "ActiveGateCertManagement"
ENV = "myenv"  # the environment ID the API tests use
TOKEN_RE = re.compile(r"^dt0c01\.[A-Z2-7]{24}\.[A-Z2-7]{64}$")


def run(cmd, check=True, input=None, env=None, cwd=None, timeout=120):
    """Runs a command; returns CompletedProcess with text stdout/stderr."""
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, cwd=cwd,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("command failed (%d): %s\nstdout: %s\nstderr: %s"
                             % (p.returncode, " ".join(cmd), p.stdout, p.stderr))
    return p


def read_text(path):
    """The whole text of a file (closed again at once)."""
    with open(path) as f:
        return f.read()


def certgate(*args, check=True, **kw):
    return run([BIN] + list(args), check=check, **kw)


class Pki:
    """Makes keys, certificates and PKCS#12 files with the real openssl and keytool."""

    def __init__(self, folder):
        self.dir = folder
        os.makedirs(folder, exist_ok=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def key(self, name, kind="rsa"):
        out = self.path(name + ".key")
        if kind == "rsa":
            run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", out])
        elif kind == "ec":
            run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", out])
        else:
            raise ValueError(kind)
        return out

    def self_signed(self, name, cn, kind="rsa", days=365, san=None, subj=None):
        """Returns (key, cert) paths of a self-signed certificate."""
        key = self.key(name, kind)
        cert = self.path(name + ".crt")
        cmd = ["openssl", "req", "-x509", "-new", "-key", key, "-out", cert, "-days", str(days),
               "-subj", subj or "/CN=%s" % cn]
        if san:
            cmd += ["-addext", "subjectAltName=" + san]
        run(cmd)
        return key, cert

    def ca(self, name, cn, issuer=None):
        """A CA certificate; signed by issuer (key, cert) or self-signed."""
        key = self.key(name, "ec")
        cert = self.path(name + ".crt")
        if issuer is None:
            run(["openssl", "req", "-x509", "-new", "-key", key, "-out", cert, "-days", "3650",
                 "-subj", "/CN=%s" % cn, "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        else:
            csr = self.path(name + ".csr")
            ext = self.path(name + ".ext")
            with open(ext, "w") as f:
                f.write("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
            run(["openssl", "req", "-new", "-key", key, "-out", csr, "-subj", "/CN=%s" % cn])
            run(["openssl", "x509", "-req", "-in", csr, "-CA", issuer[1], "-CAkey", issuer[0],
                 "-CAcreateserial", "-out", cert, "-days", "3650", "-extfile", ext])
        return key, cert

    def leaf(self, name, cn, issuer, kind="rsa", san=None, ext_lines=()):
        """A certificate signed by issuer (key, cert); ext_lines: more extension lines
        (openssl x509 -extfile syntax)."""
        key = self.key(name, kind)
        csr = self.path(name + ".csr")
        cert = self.path(name + ".crt")
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\nsubjectAltName=%s\n" % (san or "DNS:" + cn))
            f.writelines(line + "\n" for line in ext_lines)
        run(["openssl", "req", "-new", "-key", key, "-out", csr, "-subj", "/CN=%s" % cn])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", issuer[1], "-CAkey", issuer[0],
             "-CAcreateserial", "-out", cert, "-days", "365", "-extfile", ext])
        return key, cert

    def p12(self, name, key, cert, password, alias=None, chain=(), legacy=False):
        """openssl pkcs12 -export; returns the path."""
        out = self.path(name)
        cmd = ["openssl", "pkcs12", "-export", "-inkey", key, "-in", cert, "-out", out,
               "-passout", "pass:" + password]
        if alias:
            cmd += ["-name", alias]
        if chain:
            bundle = out + ".chain.pem"
            with open(bundle, "w") as f:
                for c in chain:
                    f.write(read_text(c))
            cmd += ["-certfile", bundle]
        if legacy:
            cmd += ["-legacy"]
        run(cmd)
        return out

    def p12_twopass(self, name, key, cert, file_password, key_password):
        """A real `openssl pkcs12 -export -twopass` file: the MAC verifies with file_password,
        the bags are encrypted with key_password. openssl reads both from its terminal, so it
        runs in a new session (no controlling tty) and gets them on stdin."""
        out = self.path(name)
        p = subprocess.run(["openssl", "pkcs12", "-export", "-twopass", "-inkey", key, "-in", cert,
                            "-out", out],
                           input="%s\n%s\n%s\n%s\n" % (file_password, file_password, key_password,
                                                          key_password),
                           capture_output=True, text=True, start_new_session=True, timeout=60)
        if p.returncode != 0 or not os.path.exists(out):
            raise AssertionError("openssl pkcs12 -twopass failed: %s" % p.stderr)
        return out

    def forge_p12(self, name, key, cert, macpass, encpass=None, alias=None):
        """A PKCS#12 file that openssl refuses to make (tests/tools/p12forge): the key
        bag need not belong to the certificate, and the bags may be encrypted with
        another password (encpass) than the MAC's (macpass), as -twopass does."""
        out = self.path(name)
        cmd = [tool("p12forge"), "pkcs12", out, key, cert, macpass, encpass or macpass]
        if alias:
            cmd.append(alias)
        run(cmd)
        return out

    def p12_nokey(self, name, cert, password, chain=()):
        """A PKCS#12 file with certificates only (openssl pkcs12 -export -nokeys)."""
        out = self.path(name)
        bundle = out + ".pem"
        with open(bundle, "w") as f:
            for c in (cert,) + tuple(chain):
                with open(c) as src:
                    f.write(src.read())
        run(["openssl", "pkcs12", "-export", "-nokeys", "-in", bundle, "-out", out,
             "-passout", "pass:" + password])
        return out

    def keytool_keypair(self, store, alias, cn, password, keyalg="RSA", keysize=None):
        """Adds a key entry to a PKCS12 keystore made by Java's keytool."""
        path = self.path(store)
        cmd = ["keytool", "-genkeypair", "-noprompt", "-storetype", "PKCS12", "-keystore", path,
               "-storepass", password, "-alias", alias, "-keyalg", keyalg, "-dname", "CN=" + cn,
               "-validity", "365"]
        if keysize:
            cmd += ["-keysize", str(keysize)]
        run(cmd)
        return path


_keytool_cache = {}


def keytool_entries(p12_path, password, tz="UTC"):
    """`keytool -list -v` of a PKCS#12 file, in time zone tz: a list of dicts with alias,
    owner, serial, valid_from, valid_to and the first certificate's SHA-256 (lower-case
    hex, no colons), in keytool's order. Cached by file contents (a JVM start is slow)."""
    key = (file_sha256(p12_path), password, tz)
    if key not in _keytool_cache:
        _keytool_cache[key] = _keytool_entries(p12_path, password, tz)
    return [dict(e) for e in _keytool_cache[key]]


def _keytool_entries(p12_path, password, tz):
    env = dict(os.environ, TZ=tz, LC_ALL="C", LANG="C")
    out = run(["keytool", "-list", "-v", "-storetype", "PKCS12", "-keystore", p12_path,
               "-storepass", password, "-J-Duser.language=en", "-J-Duser.country=US"],
              env=env).stdout
    entries = []
    for block in re.split(r"^Alias name: ", out, flags=re.M)[1:]:
        alias = block.split("\n", 1)[0].strip()
        owner = re.search(r"^Owner: (.*)$", block, re.M).group(1)
        serial = re.search(r"^Serial number: (\S+)$", block, re.M).group(1)
        vf = re.search(r"^Valid from: (.*) until: (.*)$", block, re.M)
        sha = re.search(r"SHA256: ([0-9A-F:]+)", block).group(1).replace(":", "").lower()
        entries.append({"alias": alias, "owner": owner, "serial": serial,
                        "valid_from": vf.group(1), "valid_to": vf.group(2), "sha256": sha})
    return entries


def java_descriptions(p12_path, password, tz="UTC"):
    """{alias: description} as ActiveGate (Java) describes each entry of the file,
    built from keytool's output: Subject:<DN>;Valid from:<date>;Valid to:<date>;Serial number:<hex>."""
    return {e["alias"]: "Subject:%s;Valid from:%s;Valid to:%s;Serial number:%s"
            % (e["owner"], e["valid_from"], e["valid_to"], e["serial"])
            for e in keytool_entries(p12_path, password, tz)}


def tree_snapshot(root, skip=()):
    """{relative path: (kind, mode, size, sha256)} of everything under root (files, folders,
    symlinks); paths whose base name matches one of the regexes in skip are left out."""
    snap = {}
    if not os.path.lexists(root):
        return snap
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, root)
            if any(re.search(p, n) for p in skip):
                continue
            st = os.lstat(full)
            if os.path.islink(full):
                snap[rel] = ("link", 0, 0, os.readlink(full))
            elif os.path.isdir(full):
                snap[rel] = ("dir", st.st_mode & 0o7777, 0, "")
            else:
                with open(full, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                snap[rel] = ("file", st.st_mode & 0o7777, st.st_size, digest)
    return snap


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tool(name):
    """A helper program built from tests/tools/<name>.c."""
    path = os.path.join(TOOLS, name)
    if not os.access(path, os.X_OK):
        raise AssertionError("test tool %s is missing; build the project first" % path)
    return path


def s_client(port, *args, input="", timeout=20, host="127.0.0.1"):
    """openssl s_client against host:port; returns the CompletedProcess (never raises on
    a failed handshake: look at returncode and stdout)."""
    cmd = ["openssl", "s_client", "-connect", "%s:%d" % (host, port)] + list(args)
    try:
        return run(cmd, check=False, input=input, timeout=timeout * SLOW)
    except subprocess.TimeoutExpired:
        raise AssertionError("openssl s_client did not finish: " + " ".join(cmd))


def handshake_ok(p):
    """Whether an s_client run completed a handshake (a protocol and cipher chosen)."""
    return p.returncode == 0 and re.search(r"^(New|Reused), TLSv1\.[23], Cipher is (?!\(NONE\))",
                                           p.stdout, re.M) is not None


def pem_of_der(der):
    return ssl.DER_cert_to_PEM_cert(der)


def der_text(der):
    """openssl x509 -text of a DER certificate."""
    proc = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-text"], input=der,
                          capture_output=True)
    return proc.stdout.decode()


def read_response(f, head=False):
    """Reads one HTTP/1.1 response from a binary file object (sock.makefile("rb")):
    returns (status, headers dict with lower-case names, body bytes). Handles
    Content-Length bodies (and no body for HEAD (head=True), 1xx, 204, 304); raises
    EOFError at EOF."""
    line = f.readline()
    if not line:
        raise EOFError("connection closed before a response")
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", line)
    if not m:
        raise AssertionError("not an HTTP status line: %r" % line)
    status = int(m.group(1))
    headers = {}
    while True:
        h = f.readline()
        if not h:
            raise EOFError("connection closed inside the header block")
        if h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if not head and status >= 200 and status not in (204, 304) and "content-length" in headers:
        n = int(headers["content-length"])
        while len(body) < n:
            chunk = f.read(n - len(body))
            if not chunk:
                raise EOFError("connection closed inside the body")
            body += chunk
    return status, headers, body


def recv_all(sock, size=65536):
    """Reads until the peer closes; returns the bytes."""
    data = b""
    while True:
        chunk = sock.recv(size)
        if not chunk:
            return data
        data += chunk


def wait_closed(sock, timeout):
    """Reads until the peer closes; returns (seconds it took, bytes read), or (None,
    bytes) when it was still open after timeout seconds."""
    start = time.time()
    data = b""
    sock.settimeout(0.05)
    while time.time() - start < timeout:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except (ConnectionResetError, ssl.SSLError, OSError):
            return time.time() - start, data
        if not chunk:
            return time.time() - start, data
        data += chunk
    return None, data


def cert_fingerprint(cert_pem_path):
    out = run(["openssl", "x509", "-in", cert_pem_path, "-noout", "-fingerprint", "-sha256"]).stdout
    return out.strip().split("=", 1)[1].replace(":", "").lower()


def der_fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def der_subject(der):
    """The subject of a DER certificate, RFC 2253 style (openssl x509)."""
    proc = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject",
                           "-nameopt", "RFC2253"], input=der, capture_output=True)
    return proc.stdout.decode().strip().replace("subject=", "")


def client_context(cafile=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Gateway:
    """One certgate process on a free loopback port, with its own data directory."""

    def __init__(self, data_dir, threads=2, extra_args=(), listen_host="127.0.0.1",
                 access_log=None, env=None):
        """access_log: None writes it to self.access_path (--access-log FILE); "default"
        passes no --access-log option; any other value ("off", "-") is passed as it is.
        Standard output goes to self.stdout_path. env: variables added to the process's
        environment."""
        self.data_dir = data_dir
        self.env = dict(env or {})  # extra environment of the process, e.g. {"TZ": ...}
        self.threads = threads
        self.extra_args = list(extra_args)
        self.listen_host = listen_host
        self.proc = None
        self.port = None
        self.log_path = os.path.join(data_dir + ".log")
        self.access_path = os.path.join(data_dir + ".access.log")
        self.stdout_path = os.path.join(data_dir + ".stdout")
        self.access_log = access_log

    # ----- configuration -----

    @property
    def conf_path(self):
        return os.path.join(self.data_dir, "config", "custom.properties")

    @property
    def ssl_dir(self):
        return os.path.join(self.data_dir, "ssl")

    def write_conf(self, text):
        os.makedirs(os.path.dirname(self.conf_path), exist_ok=True)
        with open(self.conf_path, "w", newline="") as f:
            f.write(text)

    def write_sections(self, webserver="", certgate=""):
        """Writes custom.properties with the ActiveGate section and the [certgate] one,
        each only when it has lines; nothing at all when both are empty."""
        text = ""
        if webserver:
            text += "[%s]\n%s" % (WEBSERVER, webserver)
        if certgate:
            text += "[certgate]\n%s" % certgate
        if text:
            self.write_conf(text)

    def read_conf(self):
        with open(self.conf_path, newline="") as f:
            return f.read()

    def read_conf_bytes(self):
        with open(self.conf_path, "rb") as f:
            return f.read()

    def install(self, src, name=None):
        """Copies a file into DIR/ssl/."""
        os.makedirs(self.ssl_dir, exist_ok=True)
        dst = os.path.join(self.ssl_dir, name or os.path.basename(src))
        shutil.copyfile(src, dst)
        return dst

    def token(self, env="myenv", scopes=(SCOPE,), name=None):
        args = ["token", "create", "--data-dir", self.data_dir, "--environment", env]
        for s in scopes:
            args += ["--scope", s]
        if name:
            args += ["--name", name]
        return certgate(*args).stdout.strip()

    # ----- process -----

    def start(self, wait=True, port=0, listen=True):
        """Starts `certgate run` on listen_host:port (port 0: any free one; listen=False:
        no --listen, so custom.properties' port-ssl applies). stderr goes to log_path,
        stdout to stdout_path."""
        args = [BIN, "run", "--data-dir", self.data_dir, "--threads", str(self.threads)]
        if listen:
            args += ["--listen", "%s:%d" % (self.listen_host, port)]
        if self.access_log is None:
            args += ["--access-log", self.access_path]
        elif self.access_log != "default":
            args += ["--access-log", self.access_log]
        args += self.extra_args
        self.log = open(self.log_path, "a")
        self.log_start = self.log.tell()
        with open(self.stdout_path, "ab") as out:
            env = dict(os.environ, **self.env) if self.env else None
            self.proc = subprocess.Popen(args, stdout=out, stderr=self.log, env=env)
        if wait:
            self.wait_ready()
        return self

    def logs(self):
        with open(self.log_path) as f:
            f.seek(self.log_start)
            return f.read()

    def wait_log(self, pattern, timeout=10):
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            if re.search(pattern, self.logs()):
                return True
            if self.proc.poll() is not None and not re.search(pattern, self.logs()):
                time.sleep(0.05)
                return bool(re.search(pattern, self.logs()))
            time.sleep(0.02)
        return False

    def wait_answering(self, port, timeout=15):
        """For a gateway whose log does not say it is ready (e.g. --log-level warn): waits
        until https://127.0.0.1:port/rest/health answers, then uses that port."""
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("certgate exited with %s:\n%s"
                                     % (self.proc.returncode, self.logs()))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    self.port = port
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nothing listens on port %d after %ss" % (port, timeout))

    def wait_ready(self, timeout=15):
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            m = re.search(r"listening on https://\S+:(\d+)", self.logs())
            if m and "ready:" in self.logs():
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                raise AssertionError("certgate exited with %s before it was ready:\n%s"
                                     % (self.proc.returncode, self.logs()))
            time.sleep(0.02)
        raise AssertionError("certgate not ready after %ss:\n%s" % (timeout, self.logs()))

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def memory(self):
        """VmRSS and VmHWM of the process, in KiB (see proc_memory)."""
        return proc_memory(self.proc.pid)

    def access_lines(self, pattern=None, count=1, timeout=5, path=None):
        """Waits until the access log (flushed every 250 ms) holds at least count lines
        matching pattern (all lines when None); returns the matching lines."""
        path = path or self.access_path
        deadline = time.time() + timeout * SLOW
        while True:
            text = read_text(path) if os.path.exists(path) else ""
            lines = [l for l in text.splitlines() if pattern is None or re.search(pattern, l)]
            if len(lines) >= count or time.time() > deadline:
                return lines
            time.sleep(0.05)

    def reload(self, expect="reloaded|reload failed"):
        before = len(self.logs())
        self.send_signal(signal.SIGHUP)
        deadline = time.time() + 10 * SLOW
        while time.time() < deadline:
            tail = self.logs()[before:]
            if re.search(expect, tail):
                return tail
            time.sleep(0.02)
        raise AssertionError("no reload outcome in the log:\n" + self.logs()[before:])

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("certgate did not stop within %ss" % timeout)
        self.log.close()
        return rc

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    # ----- clients -----

    def base(self, scheme="https"):
        return "%s://127.0.0.1:%d" % (scheme, self.port)

    def url(self, path):
        return self.base() + path

    def api(self, rest="", env="myenv"):
        return self.url("/e/%s/api/v1/certificate/%s" % (env, rest))

    def connect(self, timeout=10, cafile=None):
        """A keep-alive http.client connection."""
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout * SLOW,
                                           context=client_context(cafile))

    def request(self, method, path, body=None, headers=None, timeout=10):
        """One request on a new connection; returns (status, headers dict, body bytes)."""
        c = self.connect(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def tls_socket(self, timeout=10, alpn=None, session=None, context=None):
        """A raw TLS socket (Python ssl, no verification) for hand-made requests."""
        ctx = context or client_context()
        if alpn:
            ctx.set_alpn_protocols(alpn)
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout * SLOW)
        return ctx.wrap_socket(s, server_hostname="localhost", session=session)

    def s_client(self, *args, **kw):
        return s_client(self.port, *args, **kw)

    def run_to_exit(self, timeout=15):
        """Starts `certgate run` expecting it to exit on its own (e.g. a configuration
        error); returns its exit status. The log is in self.logs()."""
        self.start(wait=False)
        try:
            rc = self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            raise AssertionError("certgate kept running:\n" + self.logs())
        self.log.close()
        return rc

    def curl(self, *args, check=False):
        """curl -sk with the given arguments; returns (status code, body text)."""
        cmd = ["curl", "-sk", "--max-time", str(int(30 * SLOW)), "-o", "-", "-w",
               "\n%{http_code}"] + list(args)
        p = run(cmd, check=check)
        body, _, code = p.stdout.rpartition("\n")
        return int(code or 0), body

    # ----- certificate API -----

    def api_path(self, rest="", env=ENV):
        return "/e/%s/api/v1/certificate/%s" % (env, rest)

    def call(self, method, rest, token=None, body=None, headers=None, env=ENV, conn=None,
             timeout=30):
        """One certificate API request (Authorization: Api-Token token when given); on conn
        when given (keep-alive), else on a new connection. Returns (status, headers, body)."""
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Api-Token " + token
        path = self.api_path(rest, env)
        if conn is None:
            return self.request(method, path, body=body, headers=h, timeout=timeout)
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def upload(self, name, p12_path, password, token, **kw):
        with open(p12_path, "rb") as f:
            body = f.read()
        h = {"X-Password": password, "Content-Type": "application/octet-stream"}
        return self.call("PUT", name, token, body=body, headers=h, **kw)

    def activate(self, name, password, token, json_body=False, **kw):
        if json_body:
            return self.call("POST", name + "/activate", token,
                             body=json.dumps({"password": password}),
                             headers={"Content-Type": "application/json"}, **kw)
        return self.call("POST", name + "/activate", token, headers={"X-Password": password},
                         **kw)

    def raw(self, data, timeout=10, until_close=True):
        """Sends raw bytes over a new TLS connection; returns what comes back until the
        server closes (or the timeout passes, then what came so far)."""
        ctx = client_context()
        chunks = []
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout * SLOW) as s:
            with ctx.wrap_socket(s) as t:
                t.sendall(data)
                try:
                    while True:
                        b = t.recv(65536)
                        if not b:
                            break
                        chunks.append(b)
                        if not until_close and b"\r\n\r\n" in b"".join(chunks):
                            break
                except (socket.timeout, ssl.SSLError, ConnectionError):
                    pass
        return b"".join(chunks)

    def served_cert(self, server_name=None, timeout=10):
        """DER of the certificate a new TLS handshake gets, and the chain length."""
        ctx = client_context()
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout * SLOW) as s:
            with ctx.wrap_socket(s, server_hostname=server_name) as t:
                return t.getpeercert(binary_form=True)

    def served_chain(self):
        """The subjects of the certificates the server sends (openssl s_client -showcerts)."""
        p = s_client(self.port, "-showcerts", "-servername", "localhost")
        subjects = re.findall(r"^\s*\d+ s:(.*)$", p.stdout, re.M)
        if not subjects:
            raise AssertionError("openssl s_client got no certificate (exit %d):\n%s\n%s"
                                 % (p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
        return subjects


def read_http_response(sock_file):
    """Reads one HTTP/1.1 response (status, {lower-case header: value}, body) from a
    buffered socket file; the body by Content-Length."""
    line = sock_file.readline()
    if not line:
        raise ConnectionError("connection closed before a status line")
    status = int(line.split()[1])
    headers = {}
    while True:
        h = sock_file.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    body = sock_file.read(n) if n else b""
    return status, headers, body


class KeepAliveLoad:
    """Client threads, each with ONE persistent HTTPS connection (http.client), sending
    requests back to back until stop(). A failure is an exception, an unexpected status or
    body, or the connection not being kept alive (http.client would silently reconnect);
    after a failure the client reconnects and goes on. Each client records the
    certificate its connection got at the handshake."""

    def __init__(self, gateway, clients=4, path="/rest/health", status=200, body=b"RUNNING"):
        self.g = gateway
        self.clients = clients
        self.path = path
        self.want = (status, body)
        self.counts = [0] * clients
        self.connections = [0] * clients
        self.peer_certs = [set() for _ in range(clients)]
        self.failures = []
        self._stop = threading.Event()
        self._threads = []
        self._lock = threading.Lock()

    def _fail(self, i, what):
        with self._lock:
            self.failures.append("client %d, request %d: %s" % (i, self.counts[i] + 1, what))

    def _client(self, i):
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self.g.connect(timeout=15)
                    conn.connect()
                    self.connections[i] += 1
                    self.peer_certs[i].add(der_fingerprint(conn.sock.getpeercert(True)))
                sock = conn.sock
                conn.request("GET", self.path)
                r = conn.getresponse()
                body = r.read()
                if (r.status, body) != self.want:
                    self._fail(i, "got %d %r" % (r.status, body[:200]))
                elif conn.sock is not sock or r.will_close:
                    self._fail(i, "the server did not keep the connection alive")
                    conn.close()
                    conn = None
                self.counts[i] += 1
            except Exception as e:  # noqa: BLE001 - every error is a failed request
                self._fail(i, "%s: %s" % (type(e).__name__, e))
                self.counts[i] += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    def start(self):
        for i in range(self.clients):
            t = threading.Thread(target=self._client, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)
        deadline = time.time() + 15 * SLOW
        while min(self.counts) == 0 and time.time() < deadline:
            time.sleep(0.01)
        return self

    @property
    def total(self):
        return sum(self.counts)

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(30 * SLOW)
        return self


_PORTS_GIVEN = set()


def free_port(host="127.0.0.1"):
    """A TCP port that nothing listens on right now (closed again before returning), and
    never one this process was given before: several picked in a row, before any of them
    is bound, must differ (the kernel may hand out a just-closed port again)."""
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def proc_memory(pid):
    """{"VmRSS": KiB, "VmHWM": KiB} from /proc/<pid>/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


class RssSampler:
    """Samples a process's VmRSS every `interval` seconds in a thread; `peak` is the
    largest seen (KiB). Use as a context manager."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def sample(self):
        """Takes one sample; False stops the sampling (the process is gone). Subclasses
        that watch more override it."""
        try:
            self.peak = max(self.peak, proc_memory(self.pid)["VmRSS"])
        except (OSError, KeyError):
            return False
        return True

    def _run(self):
        while not self._stop.is_set():
            if not self.sample():
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def wait_until(predicate, timeout=5, interval=0.02):
    """Polls predicate() until it returns a true value (returned) or timeout*SLOW passes
    (then the last value is returned)."""
    deadline = time.time() + timeout * SLOW
    while True:
        v = predicate()
        if v or time.time() > deadline:
            return v
        time.sleep(interval)


UPSTREAM_SERVER = os.path.join(HERE, "upstream_server.py")


class Upstream:
    """tests/integration/upstream_server.py in its own process on a free loopback port."""

    def __init__(self, name="upstream"):
        self.name = name
        self.proc = None
        self.port = None

    def start(self, port=0):
        """Starts it on port (0: a free one; a given one: e.g. to come back after stop)."""
        import sys
        self.proc = subprocess.Popen([sys.executable, "-B", UPSTREAM_SERVER, str(port), self.name],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline().decode()
        m = re.match(r"ready (\d+)", line)
        if not m:
            self.proc.kill()
            raise AssertionError("upstream_server.py did not start: %r" % line)
        self.port = int(m.group(1))
        # drain its output (tracebacks of broken connections) so it never blocks on a pipe
        self.output = []
        threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True).start()
        return self

    def _drain(self, pipe):
        for line in pipe:
            self.output.append(line.decode(errors="replace"))
            del self.output[:-200]
        pipe.close()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def get(self, path):
        """A request straight to the upstream (not through certgate); returns JSON."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path)
            return json.loads(c.getresponse().read())
        finally:
            c.close()

    def stats(self):
        return self.get("/stats")

    def requests(self, path):
        """How many requests for path (without query) the upstream has seen."""
        return self.stats()["requests"].get(path, 0)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


NGINX = os.environ.get("CERTGATE_NGINX") or "/usr/sbin/nginx"


class Nginx:
    """Debian's nginx as an HTTPS upstream on a free loopback port, with its own
    configuration, logs and temp folders in `folder`. /nginx-info answers JSON about the
    TLS connection (session reused, SNI, Host); everything else is proxied (streaming,
    unbuffered) to `backend` (an Upstream) when given. The access log lines are
    '<r|.> <sni|-> <uri> <status>' ($ssl_session_reused, $ssl_server_name)."""

    def __init__(self, folder, cert, key, backend=None, keepalive_requests=1000,
                 protocols="TLSv1.2 TLSv1.3"):
        self.dir = folder
        self.protocols = protocols
        self.cert = cert
        self.key = key
        self.backend = backend
        self.keepalive_requests = keepalive_requests
        self.proc = None
        self.port = None

    @property
    def access_log(self):
        return os.path.join(self.dir, "access.log")

    @property
    def error_log(self):
        return os.path.join(self.dir, "error.log")

    def _conf(self, port):
        d = self.dir
        proxy = ""
        if self.backend:
            proxy = """
        location / {
            proxy_pass http://127.0.0.1:%d;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }""" % self.backend.port
        return """
worker_processes 1;
error_log %(d)s/error.log info;
events { worker_connections 256; }
http {
    log_format reuse '$ssl_session_reused $ssl_server_name $request_uri $status';
    access_log %(d)s/access.log reuse;
    client_body_temp_path %(d)s/tmp/body;
    proxy_temp_path %(d)s/tmp/proxy;
    fastcgi_temp_path %(d)s/tmp/fastcgi;
    uwsgi_temp_path %(d)s/tmp/uwsgi;
    scgi_temp_path %(d)s/tmp/scgi;
    client_max_body_size 0;
    keepalive_requests %(kr)d;
    server {
        listen 127.0.0.1:%(port)d ssl;
        ssl_protocols %(protocols)s;
        ssl_certificate %(cert)s;
        ssl_certificate_key %(key)s;
        ssl_session_cache shared:SSL:1m;
        ssl_session_tickets on;
        location = /nginx-info {
            default_type application/json;
            return 200 '{"reused": "$ssl_session_reused", "sni": "$ssl_server_name", "host": "$http_host", "protocol": "$ssl_protocol", "uri": "$request_uri", "conn": $connection}';
        }%(proxy)s
    }
}
""" % {"d": d, "kr": self.keepalive_requests, "port": port, "cert": self.cert,
       "key": self.key, "proxy": proxy, "protocols": self.protocols}

    def start(self):
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        for attempt in range(5):
            self.port = free_port()
            with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
                f.write(self._conf(self.port))
            self.proc = subprocess.Popen(
                [NGINX, "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf"), "-g",
                 "daemon off; pid %s/nginx.pid;" % self.dir],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.time() + 10
            while time.time() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
                except OSError:
                    time.sleep(0.05)
            err = self.proc.stderr.read().decode() if self.proc.poll() is not None else ""
            self.stop()
            if "Address already in use" not in err:
                raise AssertionError("nginx did not start: %s\n%s" % (err, self.errors()))
        raise AssertionError("nginx found no free port")

    def errors(self):
        return read_text(self.error_log) if os.path.exists(self.error_log) else ""

    def access_lines(self, count=1, timeout=5):
        """nginx writes its access log line at the end of each request; waits for count."""
        deadline = time.time() + timeout * SLOW
        while True:
            lines = read_text(self.access_log).splitlines() \
                if os.path.exists(self.access_log) else []
            if len(lines) >= count or time.time() > deadline:
                return lines
            time.sleep(0.05)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: lets workers finish
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()


def tls_socket(port, timeout=10, host="127.0.0.1"):
    """A TLS client socket to certgate (certificate not checked)."""
    s = socket.create_connection((host, port), timeout=timeout * SLOW)
    return client_context().wrap_socket(s, server_hostname=None)


def read_head(sock):
    """Reads a response's status line and header block from a socket; returns (status
    line, [(name, value)], bytes already read past the head)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed before the end of the header block: %r"
                                 % buf)
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers.append((k, v.strip()))
    return lines[0], headers, rest


class GatewayTest(unittest.TestCase):
    """Base class: a temp folder per test, a Pki, and gateways stopped at the end."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="certgate-it-")
        self.pki = Pki(os.path.join(self.tmp, "pki"))
        self.gateways = []

    def tearDown(self):
        bad = []
        for g in self.gateways:
            if not g.proc or g.proc.poll() is not None:
                continue
            # a clean stop, so that LeakSanitizer runs in sanitized builds
            g.proc.send_signal(signal.SIGTERM)
            try:
                rc = g.proc.wait(20 * SLOW)
                g.log.close()
                if rc != 0:
                    bad.append("%s exited with %d at the end of the test" % (g.data_dir, rc))
            except subprocess.TimeoutExpired:
                g.proc.kill()
                g.proc.wait()
                g.log.close()
                bad.append("%s did not stop on SIGTERM" % g.data_dir)
        for g in self.gateways:
            if getattr(g, "log", None) and not g.log.closed:
                g.log.close()
            if os.path.exists(g.log_path):
                text = read_text(g.log_path)
                if "ERROR: AddressSanitizer" in text or "runtime error:" in text or \
                        "ERROR: LeakSanitizer" in text:
                    bad.append("sanitizer report in %s:\n%s" % (g.log_path, text[-6000:]))
        shutil.rmtree(self.tmp, ignore_errors=True)
        if bad:
            self.fail("\n".join(bad))

    def gateway(self, name="gw", **kw):
        g = Gateway(os.path.join(self.tmp, name), **kw)
        os.makedirs(g.data_dir, exist_ok=True)
        self.gateways.append(g)
        return g

    def api_gateway(self, name="gw", conf=None, tz="America/New_York", env=None, **kw):
        """A started gateway with a token of scope ActiveGateCertManagement for ENV; a
        non-UTC time zone so that descriptions show local dates. Returns (gateway, token)."""
        e = {"TZ": tz}
        e.update(env or {})
        g = self.gateway(name, env=e, **kw)
        if conf is not None:
            g.write_conf(conf)
        token = g.token()
        g.start()
        return g, token

    def state(self, g):
        """What a failed operation must leave alone: the certificate a new handshake gets,
        the ssl directory and the config directory (names, modes, contents)."""
        return {"served": der_fingerprint(g.served_cert()),
                "ssl": tree_snapshot(g.ssl_dir),
                "config": tree_snapshot(os.path.join(g.data_dir, "config"))}

    def assertTextError(self, resp, status, *words):
        """resp = (status, headers, body): the status, a text/plain body, and each word
        (case-insensitive) in it."""
        code, headers, body = resp
        text = body.decode("utf-8", "replace")
        self.assertEqual(code, status, "expected %d, got %d: %s" % (status, code, text))
        self.assertTrue(headers.get("content-type", "").startswith("text/plain"),
                        "failure answers are text/plain, got %r" % headers.get("content-type"))
        self.assertTrue(text.strip(), "the failure answer names no reason")
        for w in words:
            self.assertIn(w.lower(), text.lower(), "reason %r not in %r" % (w, text))
        return text

    def assertApiError(self, resp, status, *words):
        """resp = (status, headers, body) of the certificate API: the status, Dynatrace's
        envelope {"error":{"code":status,"message":"..."}} as application/json, and each
        word (case-insensitive) in the message. Returns the message."""
        code, headers, body = resp
        text = body.decode("utf-8", "replace")
        self.assertEqual(code, status, "expected %d, got %d: %s" % (status, code, text))
        self.assertTrue(headers.get("content-type", "").startswith("application/json"),
                        "API errors are application/json, got %r: %s"
                        % (headers.get("content-type"), text))
        try:
            j = json.loads(body)
        except ValueError:
            self.fail("API error body is not JSON: %r" % text)
        self.assertEqual(set(j), {"error"}, j)
        self.assertEqual(set(j["error"]), {"code", "message"}, j)
        self.assertEqual(j["error"]["code"], status, j)
        msg = j["error"]["message"]
        self.assertIsInstance(msg, str)
        self.assertTrue(msg.strip(), "the error message is empty")
        for w in words:
            self.assertIn(w.lower(), msg.lower(), "reason %r not in %r" % (w, msg))
        return msg

    def assertJson(self, resp, status=200):
        code, headers, body = resp
        self.assertEqual(code, status, body.decode("utf-8", "replace"))
        self.assertTrue(headers.get("content-type", "").startswith("application/json"),
                        headers.get("content-type"))
        return json.loads(body)

    def upstream(self, name="upstream"):
        """A started upstream_server.py, stopped at the end of the test."""
        u = Upstream(name)
        self.addCleanup(u.stop)  # also when setUp fails after this
        return u.start()

    def nginx(self, cert, key, backend=None, **kw):
        """A started nginx HTTPS upstream (see Nginx), stopped at the end of the test."""
        n = Nginx(tempfile.mkdtemp(prefix="nginx-", dir=self.tmp), cert, key, backend, **kw)
        self.addCleanup(n.stop)
        return n.start()

    def proxy_gateway(self, upstream_url, extra="", name="gw", **kw):
        """A gateway whose [upstream] url is upstream_url (plus `extra` lines of that
        section), started."""
        g = self.gateway(name, **kw)
        g.write_conf("[upstream]\nurl = %s\n%s" % (upstream_url, extra))
        return g.start()

    def assertServes(self, g, cert_path, msg=None):
        """The certificate of a new handshake is cert_path (compared by fingerprint)."""
        self.assertEqual(der_fingerprint(g.served_cert()), cert_fingerprint(cert_path), msg)


def main():
    unittest.main(verbosity=2)


# ----- added for test_85_proxy_faults.py -----

def reset_close(sock):
    """Closes a (TLS or plain) socket with SO_LINGER {1, 0}: the peer gets a TCP reset,
    no close_notify, and whatever was not sent yet is dropped."""
    import struct
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def clean_close(sock):
    """Closes a TLS socket as a well-behaved client does: close_notify (without waiting for
    the peer's), then a FIN (shutdown SHUT_WR), then close. (The kernel still answers with
    a reset whatever the peer sends after that, as for any closed socket.)"""
    try:
        sock.settimeout(0)
        if isinstance(sock, ssl.SSLSocket):
            sock.unwrap()  # sends close_notify; then wants to read the peer's: WantRead
    except (ssl.SSLError, OSError, ValueError):
        pass
    try:
        socket.socket.shutdown(sock, socket.SHUT_WR)
    except OSError:
        pass
    sock.close()


def death_report(g):
    """None while the gateway's process runs; else "gateway died: exit code N (SIGNAME)"
    and the sanitizer report from its stderr (or the tail of its stderr)."""
    rc = g.proc.poll() if g.proc else None
    if rc is None:
        return None
    text = read_text(g.log_path) if os.path.exists(g.log_path) else ""
    i = text.find("ERROR: AddressSanitizer")
    if i < 0:
        i = text.find("runtime error:")
    tail = text[max(0, i - 200):i + 8000] if i >= 0 else "\n".join(text.splitlines()[-40:])
    name = ""
    if rc < 0:
        try:
            name = " (%s)" % signal.Signals(-rc).name
        except ValueError:
            pass
    return "gateway died: exit code %d%s\n--- tail of its stderr (%s):\n%s" % (
        rc, name, g.log_path, tail)


# ----- shared by test_71_crash.py and test_91_abuse.py -----

def conf_value(text, key):
    """The value of the last `key = value` line of a custom.properties text, or None."""
    m = None
    for m in re.finditer(r"(?m)^\s*%s\s*[=:]\s*(.*?)\s*$" % re.escape(key), text):
        pass
    return m.group(1) if m else None


class CertSet:
    """PKCS#12 files made for crash and race tests, and the check of what is on disk.
    certs[i] = (p12 path, password, certificate fingerprint, file sha256)."""

    def __init__(self, pki, count, prefix, password=None):
        self.certs = []
        for i in range(count):
            key, crt = pki.self_signed("%s%d" % (prefix, i), "%s-%d" % (prefix, i), kind="ec")
            pw = password or "%s-pw-%d" % (prefix, i)
            p12 = pki.p12("%s%d.p12" % (prefix, i), key, crt, pw)
            self.certs.append((p12, pw, cert_fingerprint(crt), file_sha256(p12)))

    def index_of(self, path):
        """Which of the files path holds (by content), or None."""
        sha = file_sha256(path)
        for i, c in enumerate(self.certs):
            if c[3] == sha:
                return i
        return None

    def disk_state(self, tc, g, temp_ok=True):
        """(files {name: cert index}, active name or None) of gateway g's data directory,
        asserting (on the TestCase tc) that every file in ssl/ is one of the set, whole
        (never half-written), and that custom.properties names an existing file with its
        obfuscated password. temp_ok=False: no temp file (.tmp-*) may be left either."""
        files = {}
        for n in os.listdir(g.ssl_dir):
            if n.startswith("."):
                # the default certificate and temp files (removed at start)
                if not temp_ok:
                    tc.assertFalse(n.startswith(".tmp-"), "temp file %s left in ssl/" % n)
                continue
            idx = self.index_of(os.path.join(g.ssl_dir, n))
            tc.assertIsNotNone(idx, "%s is not one of the uploaded files (partial write?)" % n)
            files[n] = idx
        active = None
        if os.path.exists(g.conf_path):
            text = g.read_conf()
            active = conf_value(text, "certificate-file")
            if active is not None:
                tc.assertIn(active, files, "custom.properties names %s, which is not in ssl/"
                            % active)
                tc.assertTrue(conf_value(text, "certificate-password-encr"))
        return files, active
