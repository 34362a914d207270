"""A controllable raw-socket HTTP/1.1 upstream for the fault tests (test_85_proxy_faults.py).

It runs inside the test process (a listener thread and one thread per connection), so a
test can wait on what it has seen and read its counters directly. Standard library only.

Each request says what the upstream does with it, in its query string:

  id=ID            names the request; everything seen of it is kept in records(ID)
                   (a request retried by the gateway has one record per try)
  ans=sized|chunked|eof   the answer's framing: Content-Length (default), chunked, or
                   close-delimited (no length; the connection's end ends the body)
  size=N           answer body bytes (default 16); chunk=N: chunk size (default 4096)
  close=1          the answer says Connection: close, and the connection ends after it
  delay=S          wait S seconds before answering (noticing a peer that goes away)
  step=N, pace=S   send the answer body N bytes at a time (default 256 KiB), pausing S
                   seconds after each (default 0)
  cut=reset|close|stall   a fault at the phase `at`: reset (SO_LINGER {1, 0}, then close:
                   a TCP RST), close (shutdown(SHUT_WR), then close: a FIN), or stall
                   (stop, and wait until the peer gives up)
  at=head          ...after the request line, before reading the rest of the head
  at=body          ...after reading `after` bytes of the request body (default 1)
  at=wait          ...after the whole request, without answering (after `delay`)
  at=resphead      ...after sending half of the answer's header block
  at=answer        ...after sending `after` bytes of the answer body (on the wire)
  at=idle          ...`after` ms after a complete answer, while the connection is idle
  nodrain=1        a reset does not wait for the bytes sent so far to be acknowledged first
                   (they arrive together with the reset, or are lost)
  reuse=reset|close  cut right after the head when the request is not the first one of
                   its connection (a pooled connection that dies on reuse)

Without a query, GET / answers 2,000 chunks of 4 KiB (issue 9's reproduction).

Counters (stats()): connections (accepted), open (open now), max_open (the most open at
once), busy (open and not idle:
idle means waiting for the next request after a complete answer; a new connection is busy
until it has been answered once), requests (all tries); busy_conns: the numbers of the
busy connections.
"""
import fcntl
import select
import socket
import struct
import termios
import threading
import time
import urllib.parse

PATTERN = bytes(range(256)) * 256  # 64 KiB, the same pattern as upstream_server.py's /big
REPRO_SIZE = 2000 * 4096

BIG = PATTERN * 160  # 10 MiB: bodies are slices of it
_bodies = {}
_bodies_lock = threading.Lock()


def body_bytes(size):
    """The first size bytes of the repeating pattern (a memoryview for up to 10 MiB)."""
    if size <= len(BIG):
        return memoryview(BIG)[:size]
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def chunked_wire(size, chunk):
    """size bytes of the pattern as chunks of `chunk` bytes, with the last chunk."""
    with _bodies_lock:
        w = _bodies.get(("chunked", size, chunk))
    if w is None:
        raw = body_bytes(size)
        parts = []
        for off in range(0, size, chunk):
            piece = raw[off:off + chunk]
            parts.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
        parts.append(b"0\r\n\r\n")
        w = b"".join(parts)
        with _bodies_lock:
            _bodies[("chunked", size, chunk)] = w
    return w


class PeerGone(Exception):
    """The gateway closed or reset the connection."""


class Cut(Exception):
    """This side ended the connection on purpose (a fault)."""


class Record:
    """What the upstream saw of one try of a request."""

    def __init__(self, rid, conn, reqno, method, target):
        self.id = rid
        self.conn = conn          # the connection's number (1, 2, ...)
        self.reqno = reqno        # the request's number on its connection (1: new connection)
        self.method = method
        self.target = target
        self.head_done = False    # the whole header block was read
        self.body_read = 0        # request body bytes read so far
        self.body_done = False
        self.sent = 0             # answer bytes sent (after the header block)
        # None while in progress; then "answered", "cut" (a fault as asked), or
        # "gone:<phase>" (the peer went away during head, body, wait or answer)
        self.outcome = None

    def __repr__(self):
        return "<%s conn %d #%d body %d%s sent %d: %s>" % (
            self.id, self.conn, self.reqno, self.body_read, "/done" if self.body_done else "",
            self.sent, self.outcome)


class FaultUpstream:
    def __init__(self, name="fault-upstream"):
        self.name = name
        self.cond = threading.Condition()
        self.port = None
        self._records = {}
        self._conns = set()
        self._stop = threading.Event()
        self.connections = 0
        self.open = 0
        self.max_open = 0  # the most connections open at once
        self.busy = 0
        self.busy_conns = set()  # the numbers of the busy connections
        self.requests = 0
        self.errors = []  # unexpected exceptions in handlers (bugs of this server)

    # ----- control -----

    def start(self):
        self.lst = socket.socket()
        self.lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lst.bind(("127.0.0.1", 0))
        self.lst.listen(1024)
        self.lst.settimeout(0.2)
        self.port = self.lst.getsockname()[1]
        self._t = threading.Thread(target=self._accept_loop, daemon=True,
                                   name="fault-upstream-accept")
        self._t.start()
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        self._stop.set()
        try:
            self.lst.close()
        except OSError:
            pass
        with self.cond:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._t.join(5)

    def stats(self):
        with self.cond:
            return {"connections": self.connections, "open": self.open, "busy": self.busy,
                    "max_open": self.max_open,
                    "requests": self.requests, "busy_conns": sorted(self.busy_conns)}

    def records(self, rid):
        with self.cond:
            return list(self._records.get(rid, ()))

    def all_records(self):
        with self.cond:
            return {k: list(v) for k, v in self._records.items()}

    def wait(self, predicate, timeout):
        """Waits until predicate() (called under the lock) is true; returns its value."""
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def wait_record(self, rid, predicate=lambda r: True, timeout=10):
        """Waits until a try of rid satisfies predicate(record); returns it or None."""
        def check():
            for r in self._records.get(rid, ()):
                if predicate(r):
                    return r
            return None
        return self.wait(check, timeout)

    def in_progress(self):
        """Records without an outcome yet."""
        with self.cond:
            return [r for v in self._records.values() for r in v if r.outcome is None]

    # ----- serving -----

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self.lst.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.cond:
                self.connections += 1
                self.open += 1
                self.max_open = max(self.max_open, self.open)
                self.busy += 1
                n = self.connections
                self.busy_conns.add(n)
                self._conns.add(c)
                self.cond.notify_all()
            threading.Thread(target=self._serve, args=(c, n), daemon=True,
                             name="fault-upstream-%d" % n).start()

    def _update(self, fn):
        with self.cond:
            fn()
            self.cond.notify_all()

    def _serve(self, c, n):
        st = {"busy": True, "buf": b"", "reqno": 0, "rec": None, "phase": "head"}

        def set_busy(b):
            if st["busy"] != b:
                st["busy"] = b
                with self.cond:
                    self.busy += 1 if b else -1
                    (self.busy_conns.add if b else self.busy_conns.discard)(n)
                    self.cond.notify_all()

        c.settimeout(60)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle: see _fault
        try:
            while not self._stop.is_set():
                if not self._one_request(c, n, st, set_busy):
                    break
        except (PeerGone, Cut):
            pass
        except OSError:
            pass
        except Exception as e:  # noqa: BLE001 - a bug here must show in the test
            self.errors.append("connection %d: %s: %s" % (n, type(e).__name__, e))
        finally:
            rec = st["rec"]
            if rec is not None and rec.outcome is None:
                self._update(lambda: setattr(rec, "outcome", "gone:" + st["phase"]))
            try:
                c.close()
            except OSError:
                pass
            with self.cond:
                self.open -= 1
                if st["busy"]:
                    self.busy -= 1
                    self.busy_conns.discard(n)
                self._conns.discard(c)
                self.cond.notify_all()

    # the request/answer cycle of one request; False: the connection ends (cleanly)
    def _one_request(self, c, n, st, set_busy):
        st["rec"] = None
        st["phase"] = "head"
        # the request line (waiting idle for it)
        line = self._read_line(c, st, idle_ok=True)
        if line is None:
            return False  # closed while idle
        set_busy(True)
        st["reqno"] += 1
        parts = line.decode("latin-1").split(" ")
        if len(parts) != 3:
            raise PeerGone("not a request line: %r" % line)
        method, target = parts[0], parts[1]
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
        p = {k: v[0] for k, v in q.items()}
        rid = p.get("id", target)
        rec = Record(rid, n, st["reqno"], method, target)
        st["rec"] = rec
        st["drain"] = p.get("nodrain") != "1"
        with self.cond:
            self._records.setdefault(rid, []).append(rec)
            self.requests += 1
            self.cond.notify_all()
        cut = p.get("cut")
        at = p.get("at")
        after = int(p.get("after", "1"))
        if cut and at == "head":
            self._fault(c, cut, st)
        if p.get("reuse") and st["reqno"] > 1:
            self._fault(c, p["reuse"], st)
        # the rest of the head
        headers = {}
        while True:
            h = self._read_line(c, st)
            if h == b"":
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        self._update(lambda: setattr(rec, "head_done", True))
        # the body
        st["phase"] = "body"
        cut_body = cut if at == "body" else None

        def got(k):
            rec.body_read += k
            self._update(lambda: None)
            if cut_body and rec.body_read >= after:
                self._fault(c, cut_body, st)

        if headers.get("transfer-encoding", "").lower() == "chunked":
            self._read_chunked(c, st, got)
        else:
            left = int(headers.get("content-length") or 0)
            while left:
                data = self._take(c, st, left)
                left -= len(data)
                got(len(data))
        self._update(lambda: setattr(rec, "body_done", True))
        # waiting
        st["phase"] = "wait"
        delay = float(p.get("delay", "0"))
        if delay:
            self._wait_peer(c, delay)
        if cut and at == "wait":
            self._fault(c, cut, st)
        # the answer
        if target.split("?")[0] == "/" and not q:
            ans, size, chunk = "chunked", REPRO_SIZE, 4096
        else:
            ans = p.get("ans", "sized")
            size = int(p.get("size", "16"))
            chunk = int(p.get("chunk", "4096"))
        close = p.get("close") == "1" or ans == "eof"
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Id: %s\r\n" \
            % rid.encode("latin-1", "replace")
        if ans == "sized":
            head += b"Content-Length: %d\r\n" % size
            wire = body_bytes(size)
        elif ans == "chunked":
            head += b"Transfer-Encoding: chunked\r\n"
            wire = chunked_wire(size, chunk)
        elif ans == "eof":
            wire = body_bytes(size)
        else:
            raise ValueError("ans=" + ans)
        if close:
            head += b"Connection: close\r\n"
        head += b"\r\n"
        st["phase"] = "answer"
        if method == "HEAD":
            wire = b""
        if cut and at == "resphead":
            self._send(c, head[:len(head) // 2])
            self._fault(c, cut, st)
        self._send(c, head)
        limit = len(wire)
        if cut and at == "answer":
            limit = min(after, len(wire))
        view = memoryview(wire)
        off = 0
        step = int(p.get("step", str(256 * 1024)))
        pace = float(p.get("pace", "0"))
        while off < limit:
            k = min(step, limit - off)
            self._send(c, view[off:off + k])
            off += k
            self._update(lambda: setattr(rec, "sent", off))
            if pace:
                time.sleep(pace)
        if cut and at == "answer":
            self._fault(c, cut, st)
        self._update(lambda: setattr(rec, "outcome", "answered"))
        st["phase"] = "idle"
        if close:
            try:
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._wait_peer(c, 10)  # until the gateway closes (or 10 s)
            return False
        set_busy(False)
        if cut and at == "idle":
            time.sleep(after / 1000.0)
            st["rec"] = None
            self._fault(c, cut, st, idle=True)
        return True

    # ----- socket helpers -----

    def _recv(self, c):
        try:
            data = c.recv(65536)
        except (ConnectionError, socket.timeout, OSError) as e:
            raise PeerGone(str(e))
        if not data:
            raise PeerGone("end of stream")
        return data

    def _read_line(self, c, st, idle_ok=False):
        """A line without its CRLF; None when idle_ok and the peer closed before a byte."""
        while b"\n" not in st["buf"]:
            if len(st["buf"]) > 65536:
                raise PeerGone("line too long")
            try:
                data = self._recv(c)
            except PeerGone:
                if idle_ok and not st["buf"]:
                    return None
                raise
            st["buf"] += data
        line, _, st["buf"] = st["buf"].partition(b"\n")
        return line.rstrip(b"\r")

    def _take(self, c, st, most):
        if not st["buf"]:
            st["buf"] = self._recv(c)
        data, st["buf"] = st["buf"][:most], st["buf"][most:]
        return data

    def _read_chunked(self, c, st, got):
        while True:
            size = int(self._read_line(c, st).split(b";")[0].strip(), 16)
            if size == 0:
                while self._read_line(c, st) != b"":
                    pass
                return
            left = size
            while left:
                data = self._take(c, st, left)
                left -= len(data)
                got(len(data))
            self._read_line(c, st)

    def _send(self, c, data):
        try:
            c.sendall(data)
        except (ConnectionError, socket.timeout, OSError) as e:
            raise PeerGone(str(e))

    def _wait_peer(self, c, seconds):
        """Waits up to seconds, returning early when the peer closes or resets (also behind
        bytes not read: POLLRDHUP); raises PeerGone then."""
        poller = select.poll()
        poller.register(c, select.POLLRDHUP)  # POLLERR and POLLHUP come anyway
        deadline = time.time() + seconds
        while not self._stop.is_set():
            left = deadline - time.time()
            if left <= 0:
                return
            if poller.poll(min(100, left * 1000)):
                raise PeerGone("the peer closed")

    def _drain(self, c, seconds):
        """Waits until the send queue is empty (sent and acknowledged), or seconds pass."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            queued = struct.unpack("i", fcntl.ioctl(c.fileno(), termios.TIOCOUTQ,
                                                    b"\0\0\0\0"))[0]
            if queued == 0:
                return
            time.sleep(0.001)

    def _fault(self, c, how, st, idle=False):
        rec = st["rec"]
        if how == "stall":
            # stop and wait for the gateway to give up (its read-timeout)
            self._wait_peer(c, 30)
            if rec is not None:
                self._update(lambda: setattr(rec, "outcome", "stalled 30 s, peer stayed"))
            raise Cut(how)
        if how == "reset":
            # a reset drops what is not sent yet: let the bytes sent so far arrive first,
            # so that the phase is the one asked for (bounded: the peer may not read)
            if st.get("drain", True) or idle:
                self._drain(c, 0.2)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "close":
            try:
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        else:
            raise ValueError("cut=" + how)
        if rec is not None:
            self._update(lambda: setattr(rec, "outcome", "cut"))
        raise Cut(how)
