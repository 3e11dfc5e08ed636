#!/usr/bin/python3
"""The quarry cluster test of issue #24, run by tests/cluster/cluster_test.sh (`make cluster-test`).

With tests/cluster/harness.sh's cluster up in DIR (etcd, two PostgreSQL under Patroni, HAProxy) and
a slapd fixture exported in QUARRY_TEST_LDAP_*, it ingests a corpus into PostgreSQL with
`quarry ingest` (store.backend = postgres), starts three `quarry serve` nodes on the ports the
harness reserved for them (HAProxy's quarry frontend checks them on /readyz), each with a data
directory of its own, and runs the six tests of the issue:

  freshness   documents written through node 1, searchable on nodes 2 and 3 (p50/p99), and the
              background feed's lag (each node's own store counter, read from its quarry.db)
  revocation  1,000 ACL revocations through node 1, each followed at once by searches as the
              user on nodes 2 and 3; 200 deletes; 200 revocations with node 3's feed paused
  ordering    8 concurrent writers over nodes 1-3; every node's (counter, chunks, ACL rows)
              equals the primary's
  bootstrap   a fourth node started from an empty data directory during an ingest ends with the
              same counter and top-10 of 100 queries as the others
  cut         node 2 cut from PostgreSQL fails its searches closed and /readyz, and recovers;
              etcd stopped 30 s: writes fail, searches go on, nothing acknowledged is lost
  failover    writes through every node and HAProxy's quarry frontend while the leader's Patroni and
              PostgreSQL are SIGKILLed: every acknowledged document is on the new primary and
              searchable on every node

and per-node search latency beside one `quarry serve` on the SQLite backend with the same corpus.

Node 2 reaches PostgreSQL, and node 3 its feed (store.postgres_read), through a TCP relay run here
on loopback (Relay): blocking a relay closes its connections and refuses new ones, as a firewall
rule would, for that node alone. That is how node 2 is cut and how node 3's feed is paused: its
background follower then cannot read the standby, while its searches' fences still reach the
primary (store_route.c: the feed is applied "from the standby, then from the primary").

The last line is the summary `cluster: lost=N stale=N fresh_p99_ms=N order_mismatch=N
bootstrap_mismatch=N failover_s=N ...`; the exit status is 1 when lost, stale, missed, a mismatch
is non-zero or a step failed.
"""
import argparse
import base64
import contextlib
import http.client
import json
import os
import random
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
ADMIN = ("dave", "p@ss, w0rd (*)")  # group ops: the administrators (auth.admin_groups)
USER = ("alice", "Alice-pw-1")  # group eng-backend
ACLS = ["group:eng-backend", "group:eng-frontend", "group:staff", "public"]
HTTP_TIMEOUT = 15.0


def say(msg):
    print("cluster: %s" % msg, flush=True)


def load_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = line.split("=", 1)
            words = shlex.split(v)  # secrets.env is written with printf %q
            env[k] = words[0] if words else ""
    return env


def percentile(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, timeout, fn, interval=0.05):
    """Polls fn until it returns a true value, which is returned; raises after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise StepError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class StepError(Exception):
    pass


class Interrupted(BaseException):
    """SIGINT or SIGTERM: not an Exception, so that no step swallows it on the way out."""


def on_signal(signum, frame):
    # once: a second signal (the slapd fixture forwards the one it got) must not cut the teardown
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


# ---- the corpus ---------------------------------------------------------------------------------

class Corpus:
    """A fixed vocabulary of pseudo-words (seeded, so every run has the same text)."""

    def __init__(self, seed=24):
        self.rng = random.Random(seed)
        syl = "ba ce di fo gu ha je ki lo mu na pe ri so tu va we xi yo zu".split()
        words = set()
        while len(words) < 1500:
            words.add("".join(self.rng.choice(syl) for _ in range(2 + self.rng.randrange(3))))
        self.vocab = sorted(words)

    def text(self, n):
        # a skewed draw, so that some words are common and others rare (BM25 has work to do)
        return " ".join(self.vocab[int(self.rng.random() ** 2 * len(self.vocab))] for _ in range(n))

    def query(self):
        return " ".join(self.rng.choice(self.vocab[:600]) for _ in range(2))

    def write_jsonl(self, path, n):
        with open(path, "w") as f:
            for d in range(n):
                doc = {"_id": "corpus-%05d" % d, "title": self.text(3), "text": self.text(40 + self.rng.randrange(80)),
                       "acl": [ACLS[d % len(ACLS)]]}
                f.write(json.dumps(doc) + "\n")


# ---- HTTP ---------------------------------------------------------------------------------------

class Client:
    """Keep-alive HTTP connections, one per thread and port. Every answer of 400 or more (and every
    failed connection, status 0) is tallied by port, route and status with its first message, so
    that a step can say what the nodes answered."""

    def __init__(self):
        self.local = threading.local()
        self.lock = threading.Lock()
        self.errors = {}  # (port, method, route, status) -> [count, first message]

    def tally(self, port, method, path, status, body):
        parts = path.split("?")[0].split("/")
        if len(parts) > 3 and parts[1:3] == ["v1", "documents"]:
            parts[3] = "{id}"
        route = "/".join(parts)
        msg = ""
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            msg = str(body["error"].get("message", ""))[:300]
        with self.lock:
            e = self.errors.setdefault((port, method, route, status), [0, msg])
            e[0] += 1

    def take_errors(self):
        with self.lock:
            e, self.errors = self.errors, {}
        return e

    def request(self, port, method, path, body=None, token=None, basic=None, timeout=HTTP_TIMEOUT):
        """(status, parsed JSON or None); status 0 when the connection failed."""
        conns = self.local.__dict__.setdefault("conns", {})
        headers = {}
        if token:
            headers["Authorization"] = "Bearer " + token
        elif basic:
            headers["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % basic).encode()).decode()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            c = conns.get(port)
            if c is None:
                c = conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            try:
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
                raw = r.read()
            except (OSError, http.client.HTTPException):
                c.close()
                del conns[port]
                if attempt == 0:
                    continue  # a kept-alive connection the server closed meanwhile: once more
                if path not in ("/readyz", "/v1/status"):
                    self.tally(port, method, path, 0, None)
                return 0, None
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            if r.getheader("Connection", "").lower() == "close":
                c.close()
                del conns[port]
            if r.status >= 400 and path not in ("/readyz", "/v1/status"):  # the steps read these themselves
                self.tally(port, method, path, r.status, parsed)
            return r.status, parsed
        return 0, None


# ---- a TCP relay that can be blocked ------------------------------------------------------------

class Relay:
    """127.0.0.1:port -> 127.0.0.1:upstream. block() closes every relayed connection and refuses
    new ones (accepted and closed at once) until unblock()."""

    def __init__(self, upstream, name):
        self.upstream = upstream
        self.name = name
        self.blocked = False
        self.lock = threading.Lock()
        self.socks = set()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            if self.blocked:
                c.close()
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.socks.update((c, u))
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    def _pump(self, a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            for s in (a, b):
                if s in self.socks:
                    self.socks.discard(s)
                    s.close()

    def block(self):
        self.blocked = True
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def unblock(self):
        self.blocked = False

    def close(self):
        self.stopping = True
        self.block()
        self.ls.close()


# ---- quarry nodes -------------------------------------------------------------------------------

class Node:
    def __init__(self, t, name, port, write_port, read_port, backend="postgres", member_ports=None):
        self.t = t
        # every PostgreSQL member, directly (store.postgres_members): searches go on without a primary
        self.member_ports = member_ports if member_ports is not None else t.member_ports()
        self.name = name
        self.port = port
        self.data = os.path.join(t.dir, "quarry", name)
        self.backend = backend
        self.write_port = write_port
        self.read_port = read_port
        self.proc = None
        self.db = None
        self.log = os.path.join(t.dir, "logs", "quarry-%s.log" % name)

    def env(self):
        e = dict(self.t.base_env)
        e.update({"QUARRY_DATA_DIR": self.data, "QUARRY_SERVER_LISTEN": "127.0.0.1:%d" % self.port,
                  "QUARRY_STORE_BACKEND": self.backend})
        if self.backend == "postgres":
            e["QUARRY_STORE_POSTGRES"] = self.t.conninfo(self.write_port, self.name)
            e["QUARRY_STORE_POSTGRES_READ"] = self.t.conninfo(self.read_port, self.name + "-feed")
            e["QUARRY_STORE_POSTGRES_MEMBERS"] = self.t.conninfo(self.member_ports, self.name + "-members")
        return e

    def start(self):
        os.makedirs(self.data, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.t.quarry, "--data", self.data, "serve"], env=self.env(),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        with open(os.path.join(self.t.dir, "quarry-pids", self.name), "w") as f:
            f.write("%d\n" % self.proc.pid)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=5):
        try:
            with open(self.log, errors="replace") as f:
                return " | ".join(line.strip() for line in f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def ready(self):
        if not self.alive():
            raise StepError("node %s exited (status %s): %s" % (self.name, self.proc.returncode, self.log_tail()))
        st, _ = self.t.http.request(self.port, "GET", "/readyz", timeout=3)
        return st == 200

    def wait_ready(self, timeout=60):
        try:
            wait_until("node %s to answer 200 on /readyz" % self.name, timeout, self.ready, 0.1)
        except StepError as e:
            raise StepError("%s; its checks: %s" % (e, json.dumps(self.t.checks(self)))) from None

    def stop(self):
        if self.db is not None:
            self.db.close()
            self.db = None
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def store_state(self):
        """(counter, {chunk id: doc_id}, {(doc_id, principal)}) of this node's own SQLite store, read
        in one read-only transaction."""
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.data, "quarry.db"), uri=True, timeout=10)
        try:
            db.execute("BEGIN")
            counter = db.execute("SELECT value FROM meta WHERE key = 'change_counter'").fetchone()[0]
            chunks = dict(db.execute("SELECT c.id, d.doc_id FROM chunks c JOIN documents d ON d.id = c.doc"))
            acl = set(db.execute("SELECT d.doc_id, a.principal FROM acl a JOIN documents d ON d.id = a.doc"))
            db.execute("COMMIT")
        finally:
            db.close()
        return int(counter), chunks, acl

    def counter(self):
        """This node's own store's change counter (a read-only connection kept open: each call
        is a read transaction of its own, which sees the latest commit)."""
        if self.db is None:
            self.db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.data, "quarry.db"), uri=True,
                                      timeout=10, check_same_thread=False)
        return int(self.db.execute("SELECT value FROM meta WHERE key = 'change_counter'").fetchone()[0])


# ---- the run ------------------------------------------------------------------------------------

class Test:
    def __init__(self, a):
        self.a = a
        self.dir = os.path.realpath(a.dir)
        self.quarry = os.path.realpath(a.quarry)
        self.env = load_env(os.path.join(self.dir, "cluster.env"))
        self.env.update(load_env(os.path.join(self.dir, "secrets.env")))
        self.http = Client()
        self.corpus = Corpus()
        self.relays = []
        self.nodes = []
        self.failed = []  # (step, message)
        self.m = {}  # summary figures
        for k in ("QUARRY_TEST_LDAP_URI", "QUARRY_TEST_LDAP_BIND_DN", "QUARRY_TEST_LDAP_BIND_PW",
                  "QUARRY_TEST_LDAP_BASE"):
            if k not in os.environ:
                raise SystemExit("cluster: error: %s is not set: run under tests/fixtures/slapd-fixture.sh "
                                 "(tests/cluster/cluster_test.sh does)" % k)
        base = os.environ["QUARRY_TEST_LDAP_BASE"]
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith("QUARRY_")}
        self.base_env.update({
            "QUARRY_LDAP_URI": os.environ["QUARRY_TEST_LDAP_URI"],
            "QUARRY_LDAP_BIND_DN": os.environ["QUARRY_TEST_LDAP_BIND_DN"],
            "QUARRY_LDAP_BIND_PASSWORD": os.environ["QUARRY_TEST_LDAP_BIND_PW"],
            "QUARRY_LDAP_USER_BASE": "ou=people," + base, "QUARRY_LDAP_GROUP_BASE": "ou=groups," + base,
            "QUARRY_AUTH_ADMIN_GROUPS": "ops",
            # no auth.token_secret: the nodes share the one generated in PostgreSQL (quarry.shared)
            # every request comes from this one address and mostly as one user
            "QUARRY_SERVER_PER_IP_CONNECTIONS": "0", "QUARRY_SERVER_USER_SHARE": "1024",
            "QUARRY_SERVER_AUDIT_LOG": "off", "QUARRY_LOG_LEVEL": "warn",
            # several chunks per document, so that chunk ids and their order are exercised
            "QUARRY_CHUNK_MAX_TOKENS": "48",
            "QUARRY_STORE_MAX_LAG_MS": str(a.max_lag_ms),
            # long enough for a search to wait out a leader Patroni demotes when etcd is gone
            # (stopped and started again as a standby: 1.5 s on a quiet machine, 3.5 s in a CI run)
            "QUARRY_STORE_FENCE_MS": "6000",
            "PGPASSWORD": self.env["PATRONI_SUPERUSER_PASSWORD"],
            "OMP_NUM_THREADS": "1",
        })
        os.makedirs(os.path.join(self.dir, "quarry"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "quarry-pids"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)

    def conninfo(self, port, name):
        """A libpq connection string to port on loopback, or to each of a list of ports."""
        ports = port if isinstance(port, list) else [port]
        return ("host=%s port=%s user=%s dbname=postgres connect_timeout=2 application_name=quarry-%s"
                % (",".join(["127.0.0.1"] * len(ports)), ",".join(str(p) for p in ports),
                   self.env["PATRONI_SUPERUSER_USERNAME"], name))

    def member_ports(self):
        return [int(self.env["PG1_PORT"]), int(self.env["PG2_PORT"])]

    def pg(self, port_key="PG_WRITE_PORT", timeout=3):
        c = psycopg2.connect(host="127.0.0.1", port=int(self.env[port_key]),
                             user=self.env["PATRONI_SUPERUSER_USERNAME"],
                             password=self.env["PATRONI_SUPERUSER_PASSWORD"], dbname="postgres",
                             connect_timeout=timeout, application_name="quarry-cluster-test")
        c.autocommit = True
        return c

    def doc_ids_on_primary(self, prefix, within=20):
        """The doc_ids starting with prefix that the primary holds, read through the write port. Right
        after a failover HAProxy can still route a new connection to the old leader, which closes it:
        that is the harness's read failing, not quarry, so it is tried again for up to `within` s."""
        deadline = time.monotonic() + within
        tries = 0
        while True:
            tries += 1
            try:
                with contextlib.closing(self.pg(timeout=5)) as c, c.cursor() as cur:
                    cur.execute("SELECT doc_id FROM quarry.documents WHERE doc_id LIKE %s", (prefix + "%",))
                    present = {r[0] for r in cur.fetchall()}
                if tries > 1:
                    say("read of the primary's %s* documents answered at try %d" % (prefix, tries))
                return present
            except psycopg2.OperationalError as e:
                if time.monotonic() >= deadline:
                    raise StepError("the primary could not be read for %d s (%d tries): %s"
                                    % (within, tries, str(e).strip()))
                time.sleep(0.5)

    def primary_state(self):
        with contextlib.closing(self.pg()) as c, c.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute("SELECT value FROM quarry.counter")
            counter = cur.fetchone()[0]
            cur.execute("SELECT c.id, d.doc_id FROM quarry.chunks c JOIN quarry.documents d ON d.key = c.doc")
            chunks = dict(cur.fetchall())
            cur.execute("SELECT d.doc_id, a.principal FROM quarry.acl a JOIN quarry.documents d ON d.key = a.doc")
            acl = set(cur.fetchall())
            cur.execute("COMMIT")
        return int(counter), chunks, acl

    def primary_counter(self, conn):
        with conn.cursor() as cur:
            cur.execute("SELECT value FROM quarry.counter")
            return int(cur.fetchone()[0])

    def harness(self, *args, timeout=120):
        r = subprocess.run([os.path.join(HERE, "harness.sh"), args[0], self.dir] + list(args[1:]),
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise StepError("harness.sh %s failed: %s" % (" ".join(args), r.stderr.strip()[-400:]))
        return r.stdout

    def token(self, port, who):
        st, body = self.http.request(port, "POST", "/v1/auth/token", basic=who)
        if st != 200 or not body or "access_token" not in body:
            raise StepError("POST /v1/auth/token as %s on port %d: %s %s" % (who[0], port, st, body))
        return body["access_token"]

    # -- requests --

    def put(self, node, doc_id, text, acl, title=None):
        st, body = self.http.request(node.port, "PUT", "/v1/documents/" + doc_id,
                                     {"title": title or doc_id, "text": text, "acl": acl}, token=self.admin)
        return st, body

    def search(self, node, query, token, k=10, filters=None):
        body = {"query": query, "k": k, "mode": "bm25"}
        if filters:
            body["filters"] = filters
        st, res = self.http.request(node.port, "POST", "/v1/search", body, token=token)
        hits = [(h["chunk_id"], h["doc_id"]) for h in res.get("results", [])] if st == 200 and res else None
        return st, hits

    def status(self, node):
        st, body = self.http.request(node.port, "GET", "/v1/status", token=getattr(node, "admin", self.admin), timeout=5)
        return body if body else {}

    def checks(self, node):
        """The node's readiness checks in detail (GET /v1/status), for failure messages."""
        if not getattr(self, "admin", None):
            st, body = self.http.request(node.port, "GET", "/readyz", timeout=3)
            return {"readyz": st, "body": body}
        return self.status(node).get("checks", {})

    def settled(self, node):
        """Whether the node's indexes are warm and its maintainer idle; an index that keeps
        failing will not settle: that fails at once."""
        checks = self.status(node).get("checks", {})
        idx = checks.get("indexes", {})
        if "failing" in (idx.get("bm25"), idx.get("vector")):
            raise StepError("node %s's indexes are failing: %s" % (node.name, json.dumps(checks)))
        return idx.get("bm25") == "warm" and idx.get("vector") in ("warm", "exact") and idx.get("maintainer_busy") is False

    def leader(self):
        """(PostgreSQL port, timeline) of the primary behind HAProxy's write port; None when none
        answers."""
        try:
            with contextlib.closing(self.pg(timeout=2)) as c, c.cursor() as cur:
                cur.execute("SELECT inet_server_port(), substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
                port, tli = cur.fetchone()
                return port, int(tli, 16)
        except psycopg2.Error:
            return None

    def step(self, name, fn, fails_over=False):
        """Runs one test; a failure is recorded and the run goes on. Unless the step fails the
        cluster over on purpose, it starts once a leader has a synchronous standby and fails when
        the leader changed meanwhile (Patroni demotes a leader that cannot reach etcd for
        retry_timeout, which a loaded machine can cause: the patroni logs say so)."""
        t0 = time.monotonic()
        say("--- %s" % name)
        self.http.take_errors()
        before = None
        try:
            if name != "setup":
                wait_until("a leader with a streaming synchronous standby", 90, self.sync_standby, 0.5)
                before = self.leader()
            fn()
            after = self.leader()
            if not fails_over and before and after != before:
                raise StepError("the PostgreSQL leader changed during the step (port, timeline %s -> %s): an "
                                "unplanned failover; see %s/logs/patroni-*.log" % (before, after, self.dir))
        except StepError as e:
            self.failed.append((name, str(e)))
            say("%s: FAILED: %s" % (name, e))
        except Exception as e:  # a bug here or an unexpected answer: the step fails, the run goes on
            self.failed.append((name, "%s: %s" % (type(e).__name__, e)))
            say("%s: FAILED: %s: %s" % (name, type(e).__name__, e))
        names = {n.port: n.name for n in self.nodes + [getattr(self, "single", None), getattr(self, "front", None)]
                 if n is not None}
        for (port, method, route, status), (count, msg) in sorted(self.http.take_errors().items(), key=str):
            say("%s: %s answered %s %s %s %d times%s" % (name, names.get(port, port), method, route,
                                                         status or "(no connection)", count,
                                                         ": " + msg if msg else ""))
        say("%s: %.1f s" % (name, time.monotonic() - t0))

    # -- setup --

    def setup(self):
        jsonl = os.path.join(self.dir, "quarry", "corpus.jsonl")
        self.corpus.write_jsonl(jsonl, self.a.docs)
        # quarry ingest writes to PostgreSQL like any node; its own data directory follows the feed
        cli = Node(self, "ingest-cli", 0, int(self.env["PG_WRITE_PORT"]), int(self.env["PG_READ_PORT"]))
        t0 = time.monotonic()
        r = subprocess.run([self.quarry, "--data", cli.data, "ingest", "--jsonl", jsonl], env=cli.env(),
                           capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise StepError("quarry ingest --jsonl into PostgreSQL failed (%d): %s" % (r.returncode, r.stderr.strip()[-600:]))
        say("ingested %d documents into PostgreSQL with quarry ingest in %.1f s" % (self.a.docs, time.monotonic() - t0))
        single = Node(self, "single-sqlite", free_port(), 0, 0, backend="sqlite")
        r = subprocess.run([self.quarry, "--data", single.data, "ingest", "--jsonl", jsonl], env=single.env(),
                           capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise StepError("quarry ingest --jsonl into SQLite failed (%d): %s" % (r.returncode, r.stderr.strip()[-600:]))
        self.single = single

        w, rd = int(self.env["PG_WRITE_PORT"]), int(self.env["PG_READ_PORT"])
        r2w, r2r, r3r = Relay(w, "node2-write"), Relay(rd, "node2-read"), Relay(rd, "node3-read")
        # node 2 reaches the members through relays of its own too, so that cutting it cuts them
        r2m = [Relay(p, "node2-member%d" % (i + 1)) for i, p in enumerate(self.member_ports())]
        self.relays = [r2w, r2r, r3r] + r2m
        self.relay2 = [r2w, r2r] + r2m
        self.relay3 = r3r
        self.n1 = Node(self, "node1", int(self.env["QUARRY1_PORT"]), w, rd)
        self.n2 = Node(self, "node2", int(self.env["QUARRY2_PORT"]), r2w.port, r2r.port,
                       member_ports=[r.port for r in r2m])
        self.n3 = Node(self, "node3", int(self.env["QUARRY3_PORT"]), w, r3r.port)
        self.nodes = [self.n1, self.n2, self.n3]
        # HAProxy's quarry frontend (never started here: it balances over nodes 1-3 while /readyz
        # says they are ready)
        self.front = Node(self, "haproxy", int(self.env["QUARRY_HTTP_PORT"]), 0, 0)
        t0 = time.monotonic()
        for n in self.nodes + [single]:
            n.start()
        for n in self.nodes + [single]:
            n.wait_ready(90)
        say("nodes 1-3 and the single SQLite node ready in %.1f s" % (time.monotonic() - t0))
        self.admin = self.token(self.n1.port, ADMIN)
        self.user = self.token(self.n1.port, USER)
        # the shared secret: node 1's tokens are good everywhere
        for n in self.nodes[1:]:
            st, _ = self.http.request(n.port, "GET", "/v1/me", token=self.user)
            if st != 200:
                raise StepError("node %s refuses node 1's token: %s" % (n.name, st))
        self.shared_keys()
        # the SQLite node has a token secret of its own (in its data directory)
        single.admin, single.user = self.token(single.port, ADMIN), self.token(single.port, USER)
        for n in self.nodes + [single]:
            wait_until("node %s's indexes to settle" % n.name, 120, lambda n=n: self.settled(n), 0.2)

    def shared_keys(self):
        """API keys are shared through PostgreSQL: one created on node 1 works on nodes 2 and 3 at
        once, and once revoked on node 3 it fails on node 2 at once."""
        st, body = self.http.request(self.n1.port, "POST", "/v1/keys", {"name": "cluster-test", "scopes": ["search"]},
                                     token=self.admin)
        if st != 201 or not body or "key" not in body:
            raise StepError("POST /v1/keys on node 1: %s %s" % (st, body))
        key, kid = body["key"], body["id"]
        for n in self.nodes[1:]:
            st, _ = self.search(n, "probe", key)
            if st != 200:
                raise StepError("node %s refuses an API key node 1 created: %s" % (n.name, st))
        st, _ = self.http.request(self.n3.port, "DELETE", "/v1/keys/" + kid, token=self.admin)
        if st not in (200, 204):
            raise StepError("DELETE /v1/keys/%s on node 3: %s" % (kid, st))
        st, _ = self.search(self.n2, "probe", key)
        if st != 401:
            raise StepError("node 2 answered %s with an API key node 3 had revoked" % st)
        say("keys: an API key created on node 1 worked on nodes 2 and 3; revoked on node 3, node 2 refused it at once")

    # -- 3. freshness --

    def freshness(self):
        # searchable: after node 1 acknowledged the write, nodes 2 and 3 search for it at once and
        # again until it is found (each search fences first, so this is what a user sees)
        searchable = []
        errors = []
        for i in range(self.a.fresh):
            doc = "fresh-%d" % i
            word = "freshword%dq" % i
            st, _ = self.put(self.n1, doc, "%s %s" % (word, self.corpus.text(20)), ["public"])
            if st not in (200, 201):
                errors.append("PUT %s: %s" % (doc, st))
                continue
            t_ack = time.monotonic()
            found = {}

            def poll(n):
                deadline = t_ack + 5
                while time.monotonic() < deadline:
                    s, hits = self.search(n, word, self.admin)
                    if s == 200 and any(d == doc for _, d in hits):
                        found[n.name] = (time.monotonic() - t_ack) * 1000
                        return
                    if s != 200:
                        errors.append("search %s on %s: %s" % (word, n.name, s))
                    time.sleep(0.005)

            ts = [threading.Thread(target=poll, args=(n,)) for n in (self.n2, self.n3)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            for n in (self.n2, self.n3):
                if n.name in found:
                    searchable.append(found[n.name])
                else:
                    errors.append("%s not searchable on %s within 5 s" % (doc, n.name))
        # the background feed alone: no search on nodes 2 and 3 meanwhile, only their store's counter
        feed = []
        conn = self.pg()
        try:
            for i in range(self.a.fresh // 2):
                doc = "feed-%d" % i
                st, _ = self.put(self.n1, doc, self.corpus.text(20), ["public"])
                if st not in (200, 201):
                    errors.append("PUT %s: %s" % (doc, st))
                    continue
                t_ack = time.monotonic()
                c = self.primary_counter(conn)
                for n in (self.n2, self.n3):
                    t = wait_until("%s's feed to reach counter %d" % (n.name, c), 5, lambda n=n: n.counter() >= c, 0.003)
                    if t:
                        feed.append((time.monotonic() - t_ack) * 1000)
                time.sleep(0.02)
        finally:
            conn.close()
        self.m["fresh_p50_ms"] = percentile(searchable, 50)
        self.m["fresh_p99_ms"] = percentile(searchable, 99)
        say("freshness: searchable on nodes 2 and 3 after node 1's acknowledgement: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d)"
            % (percentile(searchable, 50), percentile(searchable, 99), max(searchable or [float("nan")]), len(searchable)))
        # feed: from node 1's acknowledgement until each follower's own store had the write, measured
        # after the primary's counter was read, so a few ms of this are that read
        self.m["feed_p50_ms"] = percentile(feed, 50)
        self.m["feed_p99_ms"] = percentile(feed, 99)
        say("freshness: background feed applied on nodes 2 and 3 (their quarry.db counter): p50 %.1f ms, p99 %.1f ms (%d)"
            % (percentile(feed, 50), percentile(feed, 99), len(feed)))
        if errors:
            raise StepError("%d errors, first: %s" % (len(errors), errors[0]))

    # -- 2. revocation --

    def probe(self, nodes, word, doc):
        """Searches as the user on every node at once; {node name: True/False found, or an HTTP status}."""
        out = {}

        def one(n):
            st, hits = self.search(n, word, self.user)
            out[n.name] = any(d == doc for _, d in hits) if st == 200 else st

        ts = [threading.Thread(target=one, args=(n,)) for n in nodes]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return out

    def revocation(self):
        doc, word = "rev-secret", "revcanaryword"
        text = "%s %s" % (word, self.corpus.text(20))
        st, _ = self.put(self.n1, doc, text, ["user:alice"])
        if st not in (200, 201):
            raise StepError("PUT %s: %s" % (doc, st))
        stale = missed = 0
        errors = []
        tally = {}

        def count(kind, out, expect_found):
            nonlocal stale, missed
            for name, v in out.items():
                if v is True and not expect_found:
                    stale += 1
                    say("STALE: %s returned %s to alice on %s after the %s was acknowledged" % (kind, doc, name, kind))
                elif v is False and expect_found:
                    missed += 1
                elif v is not True and v is not False:
                    tally[(kind, name, v)] = tally.get((kind, name, v), 0) + 1

        def acl(a):
            st, _ = self.http.request(self.n1.port, "PATCH", "/v1/documents/%s/acl" % doc, {"acl": a}, token=self.admin)
            if st != 200:
                errors.append("PATCH acl %s: %s" % (a, st))
            return st == 200

        n23 = (self.n2, self.n3)
        for _ in range(self.a.revocations):
            if acl(["group:ops"]):
                count("revocation", self.probe(n23, word, doc), False)
            if acl(["user:alice"]):
                count("grant", self.probe(n23, word, doc), True)
        for _ in range(self.a.deletes):
            st, _ = self.http.request(self.n1.port, "DELETE", "/v1/documents/" + doc, token=self.admin)
            if st == 200:
                count("delete", self.probe(n23, word, doc), False)
            else:
                errors.append("DELETE %s: %s" % (doc, st))
            st, _ = self.put(self.n1, doc, text, ["user:alice"])
            if st in (200, 201):
                count("re-add", self.probe(n23, word, doc), True)
            else:
                errors.append("PUT %s: %s" % (doc, st))
        # node 3's feed paused: its relay to the read port blocked, so its background follower
        # cannot read the standby; its searches' fences still reach the primary
        self.relay3.block()
        try:
            c_before = self.n3.counter()
            for i in range(self.a.paused):
                if i % 2:
                    st, _ = self.http.request(self.n1.port, "DELETE", "/v1/documents/" + doc, token=self.admin)
                    if st == 200:
                        count("paused-delete", self.probe(n23, word, doc), False)
                    self.put(self.n1, doc, text, ["user:alice"])
                elif acl(["group:ops"]):
                    count("paused-revocation", self.probe(n23, word, doc), False)
                    acl(["user:alice"])
                count("paused-grant", self.probe(n23, word, doc), True)
            feed = self.status(self.n3).get("checks", {})
            say("revocation: node 3 with its feed paused: counter %d -> %d, feed %s, feed_detail %s"
                % (c_before, self.n3.counter(), feed.get("feed"), json.dumps(feed.get("feed_detail"))))
            # the pause must have held: node 3's follower says it cannot read its feed
            if not (feed.get("feed_detail") or {}).get("error"):
                errors.append("node 3's follower reports no error with its read port blocked: the pause did not hold")
        finally:
            self.relay3.unblock()
        self.m["stale"] = self.m.get("stale", 0) + stale
        self.m["missed"] = self.m.get("missed", 0) + missed
        say("revocation: %d revocations, %d deletes, %d changes with node 3's feed paused: stale=%d missed=%d"
            % (self.a.revocations, self.a.deletes, self.a.paused, stale, missed))
        for (kind, name, v), k in sorted(tally.items()):
            say("revocation: %s probes on %s answered HTTP %s %d times" % (kind, name, v, k))
        if errors:
            raise StepError("%d write errors, first: %s" % (len(errors), errors[0]))
        if tally:
            raise StepError("%d probes did not answer 200" % sum(tally.values()))

    # -- 4. ordering --

    def ordering(self):
        errors = []

        def writer(w):
            n = self.nodes[w % 3]
            rng = random.Random(w)
            for j in range(self.a.ops):
                doc = "ord-shared-%d" % (j % 6) if j % 3 == 0 else "ord-%d-%d" % (w, j % 8)
                op = rng.random()
                if op < 0.7:
                    st, _ = self.put(n, doc, self.corpus.text(30 + rng.randrange(100)), [rng.choice(ACLS)])
                    ok = st in (200, 201)
                elif op < 0.85:
                    st, _ = self.http.request(n.port, "DELETE", "/v1/documents/" + doc, token=self.admin)
                    ok = st in (200, 404)
                else:
                    st, _ = self.http.request(n.port, "PATCH", "/v1/documents/%s/acl" % doc,
                                              {"acl": rng.sample(ACLS, 2)}, token=self.admin)
                    ok = st in (200, 404)
                if not ok:
                    errors.append("writer %d on %s: %s %s" % (w, n.name, doc, st))

        ts = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        say("ordering: 8 writers, %d operations each, in %.1f s" % (self.a.ops, time.monotonic() - t0))
        self.m["order_mismatch"] = self.compare(self.nodes, "ordering")
        if errors:
            raise StepError("%d writes failed, first: %s" % (len(errors), errors[0]))

    def compare(self, nodes, what):
        """Number of nodes whose (counter, chunks, ACL rows) differ from the primary's, after a
        search on each (its fence brings the node to the primary's counter)."""
        primary = self.primary_state()
        bad = 0
        for n in nodes:
            st, _ = self.search(n, "fence", self.admin)
            if st != 200:
                say("%s: search on %s answered %s" % (what, n.name, st))
            state = n.store_state()
            if state == primary:
                say("%s: %s equals the primary: counter %d, %d chunks, %d ACL rows"
                    % (what, n.name, state[0], len(state[1]), len(state[2])))
                continue
            bad += 1
            pc, pch, pacl = primary
            nc, nch, nacl = state
            only_p = sorted(set(pch.items()) - set(nch.items()))[:5]
            only_n = sorted(set(nch.items()) - set(pch.items()))[:5]
            ready, _ = self.http.request(n.port, "GET", "/readyz", timeout=3)
            say("%s: MISMATCH on %s: counter %d vs primary %d; chunks only on the primary %s, only on the node %s; "
                "ACL rows differing %d; its /readyz answers %s" % (what, n.name, nc, pc, only_p, only_n,
                                                                  len(pacl ^ nacl), ready))
        return bad

    # -- 5. bootstrap --

    def bootstrap(self):
        errors = []
        done = threading.Event()

        def ingest():
            for i in range(self.a.bootstrap_docs):
                st, _ = self.put(self.n1, "boot-%d" % i, self.corpus.text(40 + i % 60), [ACLS[i % len(ACLS)]])
                if st not in (200, 201):
                    errors.append("PUT boot-%d: %s" % (i, st))
            done.set()

        t = threading.Thread(target=ingest)
        t.start()
        time.sleep(1.0)
        n4 = Node(self, "node4", free_port(), int(self.env["PG_WRITE_PORT"]), int(self.env["PG_READ_PORT"]))
        self.nodes.append(n4)
        self.n4 = n4
        n4.start()
        started = time.monotonic()
        t.join(180)
        if t.is_alive():
            raise StepError("the ingest during the bootstrap did not finish in 180 s")
        try:
            n4.wait_ready(45)
        except StepError:
            self.m["bootstrap_mismatch"] = 1  # it never got to serve: it matches nothing
            raise
        say("bootstrap: node 4 ready %.1f s after it started from an empty directory; ingest done: %s"
            % (time.monotonic() - started, done.is_set()))
        for n in self.nodes:
            wait_until("node %s's indexes to settle" % n.name, 120, lambda n=n: self.settled(n), 0.2)
        bad = self.compare(self.nodes, "bootstrap")
        rng = random.Random(5)
        queries = [" ".join(rng.choice(self.corpus.vocab[:600]) for _ in range(2)) for _ in range(100)]
        differ = 0
        for q in queries:
            ref = None
            for n in self.nodes:
                st, hits = self.search(n, q, self.user)
                if st != 200:
                    errors.append("search %r on %s: %s" % (q, n.name, st))
                    continue
                if ref is None:
                    ref = hits
                elif hits != ref:
                    differ += 1
                    if differ <= 3:
                        say("bootstrap: top-10 of %r differs on %s: %s vs node 1 %s" % (q, n.name, hits, ref))
        say("bootstrap: 100 queries on 4 nodes: %d top-10 lists differ from node 1's" % differ)
        self.m["bootstrap_mismatch"] = bad + differ
        if errors:
            raise StepError("%d errors, first: %s" % (len(errors), errors[0]))

    # -- per-node search latency --

    def latency(self):
        rng = random.Random(7)
        queries = [" ".join(rng.choice(self.corpus.vocab[:600]) for _ in range(2)) for _ in range(self.a.searches)]
        figures = []
        failed = []
        for n in self.nodes + [self.single]:
            ms = []
            user = getattr(n, "user", self.user)
            for q in queries[:20]:  # warm the connection and the caches
                self.search(n, q, user)
            for q in queries:
                t0 = time.perf_counter()
                st, _ = self.search(n, q, user)
                if st == 200:
                    ms.append((time.perf_counter() - t0) * 1000)
            if len(ms) < len(queries):
                failed.append("%s: %d of %d searches failed" % (n.name, len(queries) - len(ms), len(queries)))
            figures.append((n.name, percentile(ms, 50), percentile(ms, 99)))
            say("latency: %s (%s): %d searches as alice, p50 %.2f ms, p99 %.2f ms"
                % (n.name, n.backend, len(ms), percentile(ms, 50), percentile(ms, 99)))
        self.m["search_p50_ms"] = "/".join("%.1f" % f[1] for f in figures[:-1])
        self.m["single_p50_ms"] = "%.1f" % figures[-1][1]
        if failed:
            raise StepError("; ".join(failed))

    # -- 6. a node cut from PostgreSQL; etcd down --

    def haproxy_state(self, server):
        try:
            c = http.client.HTTPConnection("127.0.0.1", int(self.env["HAPROXY_STATS_PORT"]), timeout=2)
            c.request("GET", "/;csv")
            rows = c.getresponse().read().decode(errors="replace").splitlines()
            c.close()
        except (OSError, http.client.HTTPException):
            return None
        for row in rows:
            f = row.split(",")
            if len(f) > 17 and f[0] == "quarry" and f[1] == server:
                return f[17]
        return None

    def cut(self):
        problems = []
        self.n2.wait_ready(30)
        for r in self.relay2:
            r.block()
        t_cut = time.monotonic()
        try:
            served = []
            for i in range(20):
                st, _ = self.search(self.n2, self.corpus.query(), self.user)
                served.append(st)
                time.sleep(0.05)
            opened = [s for s in served if s == 200]
            say("cut: node 2 cut from PostgreSQL: searches answered %s" % sorted(set(served)))
            if opened:
                problems.append("node 2 answered %d of 20 searches with 200 while cut from PostgreSQL" % len(opened))
            if any(s != 503 for s in served):
                problems.append("node 2 answered %s while cut (expected 503)" % sorted(set(served)))
            wait_until("node 2's /readyz to fail", self.a.max_lag_ms / 1000.0 + 15, lambda: not self.n2.ready(), 0.1)
            say("cut: node 2's /readyz failed %.1f s after the cut (store.max_lag_ms %d)"
                % (time.monotonic() - t_cut, self.a.max_lag_ms))
            try:
                wait_until("HAProxy to mark quarry2 DOWN", 15, lambda: (self.haproxy_state("quarry2") or "").startswith("DOWN"), 0.2)
                say("cut: HAProxy marked quarry2 DOWN %.1f s after the cut" % (time.monotonic() - t_cut))
            except StepError as e:
                problems.append(str(e))
            # a write elsewhere meanwhile, which node 2 must find once it is back
            st, _ = self.put(self.n1, "cut-1", "cutwordq " + self.corpus.text(10), ["public"])
            if st not in (200, 201):
                problems.append("PUT through node 1 while node 2 was cut: %s" % st)
        finally:
            for r in self.relay2:
                r.unblock()
        t_back = time.monotonic()
        self.n2.wait_ready(30)
        say("cut: node 2 ready again %.1f s after it was reconnected" % (time.monotonic() - t_back))
        st, hits = self.search(self.n2, "cutwordq", self.admin)
        if st != 200 or not any(d == "cut-1" for _, d in hits or []):
            problems.append("node 2 does not find the write made while it was cut: %s %s" % (st, hits))
        self.m["cut"] = "ok" if not problems else "fail"
        if problems:
            raise StepError("; ".join(problems))

    def etcd_down(self):
        stop = threading.Event()
        lock = threading.Lock()
        acked, wfail, sok, sfail = {}, [], [], []

        def writer():
            i = 0
            while not stop.is_set():
                i += 1
                doc = "etcd-%d" % i
                st, _ = self.put(self.n1, doc, "etcdword%dq %s" % (i, self.corpus.text(10)), ["public"])
                t = time.monotonic()
                with lock:
                    if st in (200, 201):
                        acked[doc] = t
                    else:
                        wfail.append((t, st))
                if st not in (200, 201):
                    time.sleep(0.05)

        def searcher(n):
            while not stop.is_set():
                st, _ = self.search(n, self.corpus.query(), self.user)
                with lock:
                    (sok if st == 200 else sfail).append((time.monotonic(), n.name, st))
                time.sleep(0.02)

        ts = [threading.Thread(target=writer)] + [threading.Thread(target=searcher, args=(n,)) for n in self.nodes[:3]]
        for t in ts:
            t.start()
        t_back = None
        try:
            time.sleep(2)
            self.harness("stop", "etcd")
            t_stop = time.monotonic()
            say("etcd: stopped for %.0f s" % self.a.etcd_hold)
            time.sleep(self.a.etcd_hold)
            self.harness("start", "etcd")
            t_start = time.monotonic()
            deadline = t_start + 60
            while time.monotonic() < deadline and t_back is None:
                with lock:
                    back = [t for t in acked.values() if t > t_start]
                t_back = min(back) if back else None
                time.sleep(0.05)
            time.sleep(1)
        finally:
            stop.set()
            for t in ts:
                t.join()
        during_wfail = [s for t, s in wfail if t_stop <= t <= t_start]
        during_acks = sorted(t - t_stop for t in acked.values() if t_stop <= t <= t_start)
        during_sfail = [(name, s) for t, name, s in sfail if t_stop <= t <= t_start]
        during_sok = [1 for t, _, _ in sok if t_stop <= t <= t_start]
        present = self.doc_ids_on_primary("etcd-")
        lost = sorted(set(acked) - present)
        self.m["lost"] = self.m.get("lost", 0) + len(lost)
        self.m["etcd_write_fail"] = len(during_wfail)
        self.m["etcd_search_fail"] = len(during_sfail)
        self.m["etcd_search_ok"] = len(during_sok)
        say("etcd: writes acknowledged until +%.1f s after etcd stopped; %d writes failed meanwhile (statuses %s)"
            % (during_acks[-1] if during_acks else 0.0, len(during_wfail), sorted(set(during_wfail))))
        say("etcd: searches while etcd was down: %d answered 200, %d failed (%s)"
            % (len(during_sok), len(during_sfail), sorted(set(during_sfail))))
        say("etcd: writes acknowledged again %s after etcd came back; %d acknowledged in all, %d lost"
            % ("%.1f s" % (t_back - t_start) if t_back else "NOT within 60 s", len(acked), len(lost)))
        problems = []
        if lost:
            problems.append("acknowledged writes lost: %s" % lost[:10])
        if t_back is None:
            problems.append("no write acknowledged within 60 s of etcd's return")
        if during_sfail:
            problems.append("%d searches failed while etcd was down (the issue: searches go on)" % len(during_sfail))
        if not during_wfail:
            problems.append("no write failed while etcd was down for %.0f s" % self.a.etcd_hold)
        if problems:
            raise StepError("; ".join(problems))

    def sync_standby(self):
        try:
            with contextlib.closing(self.pg(timeout=2)) as c, c.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'sync'")
                return cur.fetchone()[0] == 1
        except psycopg2.Error:
            return False

    # -- 1. failover --

    def failover(self):
        stop = threading.Event()
        lock = threading.Lock()
        acked = {}
        fails = []

        def writer(n):
            i = 0
            while not stop.is_set():
                i += 1
                doc = "fo-%s-%d" % (n.name, i)
                sent = time.monotonic()
                st, _ = self.put(n, doc, "failoverprobe %s" % self.corpus.text(8), ["public"])
                with lock:
                    if st in (200, 201):
                        acked[doc] = (sent, time.monotonic())
                    else:
                        fails.append((time.monotonic(), n.name, st))
                if st not in (200, 201):
                    time.sleep(0.05)

        ts = [threading.Thread(target=writer, args=(n,)) for n in self.nodes[:3] + [self.front]]
        for t in ts:
            t.start()
        first_after = None
        try:
            time.sleep(4)
            t_call = time.monotonic()
            out = self.harness("kill-leader")
            t_kill = time.monotonic()
            say("failover: %s (%.0f ms to kill)" % (out.strip(), (t_kill - t_call) * 1000))
            deadline = t_kill + 60
            while time.monotonic() < deadline and first_after is None:
                # a write sent after the kill: one sent before it can still be answered after it
                with lock:
                    after = [done for sent, done in acked.values() if sent > t_kill]
                first_after = min(after) if after else None
                time.sleep(0.05)
            if first_after is not None:
                time.sleep(3)
        finally:
            stop.set()
            for t in ts:
                t.join()
        t_end = time.monotonic()
        before = [done for _, done in acked.values() if done <= t_call]
        last_before = max(before) if before else None
        present = self.doc_ids_on_primary("fo-")
        lost = sorted(set(acked) - present)
        # searchable on every node: batches of 100 ids (the largest k) under a doc_ids filter, again
        # until found or 5 s after the writes stopped and the harness could read the primary (its own
        # read-back can wait on HAProxy, and that wait is not the nodes')
        t_end = max(t_end, time.monotonic())
        ids = sorted(acked)
        unsearchable = 0
        for n in self.nodes:
            missing = set(ids)
            deadline = t_end + 5
            while missing and time.monotonic() < deadline:
                for k in range(0, len(ids), 100):
                    batch = [d for d in ids[k:k + 100] if d in missing]
                    if not batch:
                        continue
                    st, hits = self.search(n, "failoverprobe", self.admin, k=100, filters={"doc_ids": batch})
                    if st == 200:
                        missing -= {d for _, d in hits}
                if missing:
                    time.sleep(0.1)
            if missing:
                say("failover: %d acknowledged documents not searchable on %s within 5 s, e.g. %s"
                    % (len(missing), n.name, sorted(missing)[:5]))
            else:
                say("failover: all %d acknowledged documents searchable on %s %.1f s after the writes stopped "
                    "and the primary was read"
                    % (len(ids), n.name, time.monotonic() - t_end))
            unsearchable += len(missing)
        failover_s = first_after - last_before if first_after is not None and last_before is not None else None
        self.m["failover_s"] = "%.1f" % failover_s if failover_s is not None else "none"
        self.m["lost"] = self.m.get("lost", 0) + len(lost)
        self.m["unsearchable"] = unsearchable
        kinds = sorted({(name, s) for _, name, s in fails})
        say("failover: %d writes acknowledged through nodes 1-3 and HAProxy's quarry frontend (%d through it), "
            "%d failed (%s); failover %s s; lost %d"
            % (len(acked), len([d for d in acked if d.startswith("fo-haproxy-")]), len(fails), kinds[:8],
               self.m["failover_s"], len(lost)))
        problems = []
        if lost:
            problems.append("acknowledged documents missing on the new primary: %s" % lost[:10])
        if failover_s is None:
            problems.append("no write acknowledged within 60 s after the kill")
        if unsearchable:
            problems.append("%d acknowledged documents not searchable within 5 s" % unsearchable)
        if problems:
            raise StepError("; ".join(problems))

    def teardown(self):
        for n in self.nodes + [getattr(self, "single", None)]:
            if n is not None:
                n.stop()
        for r in self.relays:
            r.close()

    def run(self):
        try:
            self.step("setup", self.setup)
            if not self.failed:
                self.step("3. freshness", self.freshness)
                self.step("2. revocation", self.revocation)
                self.step("4. ordering", self.ordering)
                self.step("5. bootstrap", self.bootstrap)
                self.step("latency", self.latency)
                self.step("6. node cut from PostgreSQL", self.cut)
                self.step("6. etcd down", self.etcd_down, fails_over=True)
                self.step("1. failover", self.failover, fails_over=True)
        finally:
            self.teardown()
        for name, msg in self.failed:
            say("FAILED step %s: %s" % (name, msg))
        m = self.m

        def num(k, fmt="%d"):
            v = m.get(k)
            if v is None:
                return "none"
            if isinstance(v, float):
                return "nan" if v != v else ("%.0f" % v if fmt == "%d" else fmt % v)
            return fmt % v if not isinstance(v, str) else v

        print("cluster: lost=%s stale=%s fresh_p99_ms=%s order_mismatch=%s bootstrap_mismatch=%s failover_s=%s "
              "fresh_p50_ms=%s feed_p50_ms=%s feed_p99_ms=%s missed=%s unsearchable=%s search_p50_ms=%s "
              "single_p50_ms=%s cut=%s etcd_write_fail=%s etcd_search_ok=%s etcd_search_fail=%s steps_failed=%d"
              % (num("lost"), num("stale"), num("fresh_p99_ms"), num("order_mismatch"), num("bootstrap_mismatch"),
                 num("failover_s"), num("fresh_p50_ms"), num("feed_p50_ms"), num("feed_p99_ms"), num("missed"),
                 num("unsearchable"), num("search_p50_ms"), num("single_p50_ms"), num("cut"),
                 num("etcd_write_fail"), num("etcd_search_ok"), num("etcd_search_fail"), len(self.failed)), flush=True)
        bad = self.failed or any(m.get(k, 0) for k in ("lost", "stale", "missed", "order_mismatch",
                                                       "bootstrap_mismatch", "unsearchable"))
        return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="the harness's directory (tests/cluster/harness.sh up DIR)")
    ap.add_argument("quarry", help="the quarry binary")
    ap.add_argument("--docs", type=int, default=1000, help="documents of the corpus ingested first")
    ap.add_argument("--fresh", type=int, default=100, help="documents of the freshness test")
    ap.add_argument("--revocations", type=int, default=1000)
    ap.add_argument("--deletes", type=int, default=200)
    ap.add_argument("--paused", type=int, default=200, help="changes with node 3's feed paused")
    ap.add_argument("--ops", type=int, default=40, help="operations of each of the 8 writers")
    ap.add_argument("--bootstrap-docs", type=int, default=300)
    ap.add_argument("--searches", type=int, default=300, help="searches per node for the latency figures")
    ap.add_argument("--etcd-hold", type=float, default=30.0)
    ap.add_argument("--max-lag-ms", type=int, default=3000, help="store.max_lag_ms of the nodes")
    a = ap.parse_args()
    # Ctrl-C, or SIGTERM from the timeout around the run: the nodes are stopped on the way out
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return Test(a).run()
    except Interrupted as e:
        print("cluster: error: interrupted by signal %d; the quarry nodes were stopped" % e.args[0], file=sys.stderr)
        return 128 + e.args[0]


if __name__ == "__main__":
    sys.exit(main())
