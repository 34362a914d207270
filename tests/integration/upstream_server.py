"""A small HTTP/1.1 upstream for the proxy tests (standard library only).

Run: python3 upstream_server.py PORT [NAME]
  (prints "ready PORT" when listening; PORT 0 picks one; NAME, default "upstream", is
  reported as "server" by /echo, /conn and /stats so a test can tell upstreams apart)

Routes:
  /echo...            JSON: method, path (with query), headers, body length and sha256
  /status/N           answers status N with a short body
  /chunked            a chunked answer of several chunks
  /big?bytes=N[&chunked=1]   N bytes of a repeating pattern (Content-Length or chunked)
  /sink               reads the request body (sized or chunked); JSON: length, sha256
  /slow?s=S           waits S seconds, then answers; notices (and counts in /stats as
                      slow_aborted) a peer that closes the connection while it waits
  /close              closes the connection without answering
  /flaky...           answers the first request of a connection; closes without answering
                      on any later request of the same connection
  /conn               the number of the TCP connection this request came on
  /headers            answers with several custom headers, Set-Cookie twice
  /bare               a minimal answer without Date and Server headers
  /eof                an answer without Content-Length or chunking: the body ends with the
                      connection (close-delimited)
  /hop                an answer with hop-by-hop headers (Connection naming X-Hop-Secret,
                      X-Hop-Secret, Keep-Alive, Proxy-Authenticate) and an end-to-end X-Kept
  /sink?pause=S       as /sink, but waits S seconds before reading the body
  /truncate           promises 1000000 bytes (Content-Length), sends 1000, closes
  /garbage            answers something that is not HTTP
  /stats              JSON counters: connections (accepted), open (now), open_proxied (open
                      now and having carried a request other than /stats), requests (by
                      path without query), slow_aborted, slow_done; not counted itself
Paths under /prefix/ are routed as without it (for [upstream] url path prefixes); the
reported path keeps it. Any method works; HEAD gets the headers of GET.
"""
import hashlib
import json
import select
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATTERN = bytes(range(256)) * 256  # 64 KiB
conn_counter = [0]
lock = threading.Lock()
NAME = "upstream"
stats = {"connections": 0, "open": 0, "open_proxied": 0, "requests": {}, "slow_aborted": 0,
         "slow_done": 0}


def count(key, path=None):
    with lock:
        if path is None:
            stats[key] += 1
        else:
            stats[key][path] = stats[key].get(path, 0) + 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "upstream-test"

    def setup(self):
        super().setup()
        with lock:
            conn_counter[0] += 1
            self.conn_id = conn_counter[0]
            stats["connections"] += 1
            stats["open"] += 1
        self.requests_on_conn = 0
        self.proxied = False

    def finish(self):
        try:
            super().finish()
        finally:
            with lock:
                stats["open"] -= 1
                if self.proxied:
                    stats["open_proxied"] -= 1

    def peer_closed(self):
        """True when the peer has closed the connection (or reset it)."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def log_message(self, fmt, *args):
        pass

    def read_body(self):
        h = hashlib.sha256()
        n = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline()
                size = int(line.strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    h.update(chunk)
                    n += len(chunk)
                    left -= len(chunk)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
                left -= len(chunk)
        return n, h.hexdigest()

    def send_json(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        self.requests_on_conn += 1
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        p = u.path
        if p == "/stats":
            self.read_body()
            with lock:
                snap = json.loads(json.dumps(stats))
            snap["server"] = NAME
            self.send_json(snap)
            return
        count("requests", p)
        if not self.proxied:
            self.proxied = True
            count("open_proxied")
        if p.startswith("/prefix/"):
            p = p[len("/prefix"):]
        if p.startswith("/flaky") and self.requests_on_conn > 1:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if p == "/close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if p == "/sink" and "pause" in q:
            time.sleep(float(q["pause"][0]))
        n, digest = self.read_body()
        if p.startswith("/echo") or p.startswith("/flaky"):
            self.send_json({"method": self.command, "path": self.path,
                            "headers": [[k, v] for k, v in self.headers.items()],
                            "body_len": n, "body_sha256": digest, "conn": self.conn_id,
                            "server": NAME})
        elif p.startswith("/status/"):
            code = int(p.split("/")[2])
            body = ("status %d\n" % code).encode()
            self.send_response(code)
            if code not in (204, 304):
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and code not in (204, 304):
                self.wfile.write(body)
        elif p == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                for i in range(5):
                    part = ("chunk %d\n" % i).encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
        elif p == "/big":
            total = int(q.get("bytes", ["1048576"])[0])
            chunked = q.get("chunked", ["0"])[0] == "1"
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(total))
            self.end_headers()
            if self.command == "HEAD":
                return
            left = total
            while left:
                part = PATTERN[:min(left, len(PATTERN))]
                if chunked:
                    self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
                else:
                    self.wfile.write(part)
                left -= len(part)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        elif p == "/sink":
            self.send_json({"length": n, "sha256": digest})
        elif p == "/slow":
            deadline = time.time() + float(q.get("s", ["5"])[0])
            while time.time() < deadline:
                if self.peer_closed():
                    count("slow_aborted")
                    self.close_connection = True
                    return
                time.sleep(0.02)
            count("slow_done")
            self.send_json({"slept": True})
        elif p == "/conn":
            self.send_json({"conn": self.conn_id, "server": NAME})
        elif p == "/bare":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 5\r\nX-Bare: yes\r\n\r\n")
            if self.command != "HEAD":
                self.wfile.write(b"bare\n")
        elif p == "/eof":
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Connection: close\r\n\r\n")
            if self.command != "HEAD":
                for i in range(3):
                    self.wfile.write(b"until the end %d\n" % i)
                    self.wfile.flush()
        elif p == "/truncate":
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
        elif p == "/garbage":
            self.close_connection = True
            self.wfile.write(b"THIS IS NOT HTTP\r\n\r\n")
        elif p == "/hop":
            body = b"hop\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "X-Hop-Secret")
            self.send_header("X-Hop-Secret", "must not pass")
            self.send_header("Keep-Alive", "timeout=5")
            self.send_header("Proxy-Authenticate", "Basic realm=x")
            self.send_header("X-Kept", "passes")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        elif p == "/headers":
            body = b"with headers\n"
            self.send_response(201, "Made It")
            self.send_header("Content-Type", "text/plain")
            self.send_header("X-Custom", "one")
            self.send_header("Set-Cookie", "a=1; Path=/")
            self.send_header("Set-Cookie", "b=2; Path=/")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        else:
            self.send_json({"error": "no such route", "path": self.path}, 404)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    global NAME
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if len(sys.argv) > 2:
        NAME = sys.argv[2]
    srv = Server(("127.0.0.1", port), Handler)
    print("ready %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
