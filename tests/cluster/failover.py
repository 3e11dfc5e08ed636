#!/usr/bin/python3
"""Failover measurement of the loopback cluster (issue #24), run by tests/cluster/failover.sh.

With tests/cluster/harness.sh's cluster up in DIR: a writer inserts numbered rows through HAProxy's
write port, one row per transaction, and records every acknowledged one; a follower polls
HAProxy's read port (the standby) every 20 ms for the largest id and notes when each row became
visible there; a sampler reads the standby's replay lag from pg_stat_replication. After BEFORE
seconds the leader's Patroni and PostgreSQL are SIGKILLed (harness.sh kill-leader); the writer
keeps retrying through HAProxy. The run reports the failover time (last acknowledgement before
the kill to the first after it) and checks that every acknowledged row is on the new primary.
Its last line is `cluster-infra: failover_s=... lost=N acked=N ...`; it exits 1 when a row was
lost or no write succeeded after the kill within the timeout.

With --fault etcd the same writer and follower run while etcd is stopped for HOLD seconds
instead (harness.sh stop/start DIR etcd): it reports when writes stopped being acknowledged, the
longest gap in acknowledged writes and in successful reads, how soon after etcd's return writes
were acknowledged again, and lost rows (`cluster-infra: fault=etcd ...`).
"""
import argparse
import datetime
import os
import re
import shlex
import subprocess
import sys
import threading
import time

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))


def load_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = line.split("=", 1)
            # Values are written by bash's printf %q: undo its quoting as a shell would.
            words = shlex.split(v)
            env[k] = words[0] if words else ""
    return env


def percentile(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    i = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[i]


def first_event_after(path, wall_after, pattern):
    """Wall time of the first line of a Patroni or HAProxy log matching pattern, stamped at or
    after wall_after; None when there is none. Patroni stamps local time ("2026-12-07
    12:04:10,065"), HAProxy's iso format ISO 8601 with an offset."""
    try:
        f = open(path, errors="replace")
    except OSError:
        return None
    with f:
        for line in f:
            if pattern not in line:
                continue
            m = re.match(r"(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d),(\d{3}) ", line)
            if m:
                t = time.mktime(time.strptime(m.group(1) + " " + m.group(2), "%Y-%m-%d %H:%M:%S")) + int(m.group(3)) / 1000.0
            else:
                m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)(Z|[+-]\d\d:?\d\d)?", line)
                if not m:
                    continue
                stamp = m.group(1) + (m.group(2) or "")
                stamp = stamp.replace("Z", "+00:00")
                try:
                    t = datetime.datetime.fromisoformat(stamp).timestamp()
                except ValueError:
                    continue
            if t >= wall_after - 0.002:
                return t
    return None


class Cluster:
    def __init__(self, d):
        self.dir = d
        self.env = load_env(os.path.join(d, "cluster.env"))
        self.env.update(load_env(os.path.join(d, "secrets.env")))

    def connect(self, port_key, timeout=1):
        return psycopg2.connect(
            host="127.0.0.1",
            port=int(self.env[port_key]),
            user=self.env["PATRONI_SUPERUSER_USERNAME"],
            password=self.env["PATRONI_SUPERUSER_PASSWORD"],
            dbname="postgres",
            connect_timeout=timeout,
            keepalives=1,
            keepalives_idle=2,
            keepalives_interval=1,
            keepalives_count=2,
            application_name="quarry-failover-probe",
        )


class Run:
    def __init__(self, cluster, payload):
        self.c = cluster
        self.payload = payload
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = {}  # id -> monotonic time the commit returned
        self.errors = []  # (monotonic time, message) of failed attempts
        self.seen = {}  # id -> monotonic time the follower first saw max(id) >= id
        self.seen_on_primary = 0  # follower polls answered by a primary (read port fallback)
        self.polls = 0
        self.poll_ok = []  # monotonic times of successful follower polls
        self.lags_ms = []  # replay_lag samples while a standby streamed

    def writer(self):
        conn = None
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                if conn is None:
                    conn = self.c.connect("PG_WRITE_PORT")
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO cluster_probe (id, payload) VALUES (%s, %s)", (i, self.payload))
                conn.commit()
                t = time.monotonic()
                with self.lock:
                    self.acked[i] = t
            except psycopg2.Error as e:
                with self.lock:
                    self.errors.append((time.monotonic(), str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__))
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg2.Error:
                        pass
                conn = None
                time.sleep(0.02)
        if conn is not None:
            conn.close()

    def follower(self):
        conn = None
        last = 0
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self.c.connect("PG_READ_PORT")
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SELECT coalesce(max(id), 0), pg_is_in_recovery() FROM cluster_probe")
                    top, standby = cur.fetchone()
                t = time.monotonic()
                self.polls += 1
                self.poll_ok.append(t)
                if not standby:
                    self.seen_on_primary += 1
                if top > last:
                    for k in range(last + 1, top + 1):
                        self.seen[k] = t
                    last = top
            except psycopg2.Error:
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg2.Error:
                        pass
                conn = None
            time.sleep(0.02)
        if conn is not None:
            conn.close()

    def lag_sampler(self, until):
        conn = None
        while not self.stop.is_set() and not until.is_set():
            try:
                if conn is None:
                    conn = self.c.connect("PG_WRITE_PORT")
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SELECT extract(epoch FROM replay_lag) * 1000 FROM pg_stat_replication "
                                "WHERE replay_lag IS NOT NULL")
                    for (ms,) in cur.fetchall():
                        self.lags_ms.append(float(ms))
            except psycopg2.Error:
                conn = None
            time.sleep(0.1)
        if conn is not None:
            conn.close()


def largest_gap(times, start, end):
    """The longest interval inside [start, end] without an event of times."""
    pts = [start] + sorted(t for t in times if start < t < end) + [end]
    return max(b - a for a, b in zip(pts, pts[1:]))


def harness(a, *args):
    return subprocess.run([os.path.join(HERE, "harness.sh"), args[0], a.dir] + list(args[1:]),
                          capture_output=True, text=True)


def etcd_outage(a, c):
    run = Run(c, "x" * a.payload)
    threads = [threading.Thread(target=run.writer), threading.Thread(target=run.follower)]
    for t in threads:
        t.start()
    t_back = None
    try:
        time.sleep(a.before)
        k = harness(a, "stop", "etcd")
        t_stop = time.monotonic()
        if k.returncode != 0:
            print("failover: error: harness.sh stop etcd failed: %s" % k.stderr.strip(), file=sys.stderr)
            return 1
        print("failover: etcd stopped for %.0f s" % a.hold)
        time.sleep(a.hold)
        k = harness(a, "start", "etcd")
        t_start = time.monotonic()
        if k.returncode != 0:
            print("failover: error: harness.sh start etcd failed: %s" % k.stderr.strip(), file=sys.stderr)
            return 1
        deadline = t_start + a.timeout
        while time.monotonic() < deadline:
            with run.lock:
                back = [t for t in run.acked.values() if t > t_start]
            if back:
                t_back = min(back)
                break
            time.sleep(0.05)
        if t_back is not None:
            time.sleep(a.after)
    finally:
        run.stop.set()
        for t in threads:
            t.join()
    t_end = time.monotonic()
    acked = dict(run.acked)
    during = sorted(t for t in acked.values() if t_stop <= t <= t_start)
    last_ok = max(during) - t_stop if during else 0.0
    first_err = min([t for t, _ in run.errors if t >= t_stop], default=None)
    write_gap = largest_gap(acked.values(), t_stop, t_end)
    read_gap = largest_gap(run.poll_ok, t_stop, t_end)
    try:
        conn = c.connect("PG_WRITE_PORT", timeout=5)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM cluster_probe")
            present = {r[0] for r in cur.fetchall()}
        conn.close()
    except psycopg2.Error as e:
        print("failover: error: cannot read the primary through HAProxy after etcd's return: %s" % e, file=sys.stderr)
        return 1
    lost = sorted(set(acked) - present)
    kinds = sorted({m for t, m in run.errors if t >= t_stop})
    print("failover: writes acknowledged until +%.1f s after etcd stopped; first failure at %s" %
          (last_ok, "+%.1f s" % (first_err - t_stop) if first_err is not None else "none"))
    print("failover: write errors while etcd was away: %s" % ("; ".join(k[:90] for k in kinds[:3]) or "none"))
    print("failover: longest gap in acknowledged writes %.1f s; in successful reads on the read port %.1f s (%d polls)" %
          (write_gap, read_gap, run.polls))
    print("failover: writes acknowledged again %s after etcd came back" %
          ("%.1f s" % (t_back - t_start) if t_back is not None else "NOT within %.0f s" % a.timeout))
    rc = 0
    if lost:
        print("failover: LOST acknowledged rows: %s%s" % (lost[:20], " ..." if len(lost) > 20 else ""))
        rc = 1
    if t_back is None:
        rc = 1
    print("cluster-infra: fault=etcd etcd_down_s=%.0f writes_until_s=%.1f write_gap_s=%.1f read_gap_s=%.1f "
          "writes_back_s=%s lost=%d acked=%d" %
          (a.hold, last_ok, write_gap, read_gap, "%.1f" % (t_back - t_start) if t_back is not None else "none",
           len(lost), len(acked)))
    return rc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="the harness's directory (tests/cluster/harness.sh up DIR)")
    ap.add_argument("--before", type=float, default=6.0, help="seconds of writes before the kill")
    ap.add_argument("--after", type=float, default=3.0, help="seconds of writes after the first post-kill ack")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a write after the kill")
    ap.add_argument("--payload", type=int, default=1500, help="bytes of payload per row")
    ap.add_argument("--fault", choices=("leader", "etcd"), default="leader",
                    help="SIGKILL the leader (default) or stop etcd for --hold seconds")
    ap.add_argument("--hold", type=float, default=30.0, help="seconds etcd stays down (--fault etcd)")
    a = ap.parse_args()

    c = Cluster(a.dir)
    try:
        conn = c.connect("PG_WRITE_PORT", timeout=5)
    except psycopg2.Error as e:
        print("failover: error: cannot connect to HAProxy's write port %s: %s" % (c.env["PG_WRITE_PORT"], e), file=sys.stderr)
        return 1
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT inet_server_port()")
        old_port = cur.fetchone()[0]
        cur.execute("DROP TABLE IF EXISTS cluster_probe")
        cur.execute("CREATE TABLE cluster_probe (id bigint PRIMARY KEY, payload text NOT NULL)")
    conn.close()
    if a.fault == "etcd":
        return etcd_outage(a, c)

    run = Run(c, "x" * a.payload)
    pre_kill = threading.Event()
    threads = [threading.Thread(target=run.writer), threading.Thread(target=run.follower),
               threading.Thread(target=run.lag_sampler, args=(pre_kill,))]
    for t in threads:
        t.start()
    rc = 0
    try:
        time.sleep(a.before)
        pre_kill.set()
        t_kill_call = time.monotonic()
        wall_kill_call = time.time()
        k = subprocess.run([os.path.join(HERE, "harness.sh"), "kill-leader", a.dir], capture_output=True, text=True)
        t_kill = time.monotonic()
        if k.returncode != 0:
            print("failover: error: harness.sh kill-leader failed: %s" % k.stderr.strip(), file=sys.stderr)
            return 1
        killed = k.stdout.strip().split("=", 1)[-1]
        print("failover: SIGKILLed %s's Patroni and PostgreSQL (%.0f ms to kill)" % (killed, (t_kill - t_kill_call) * 1000))
        deadline = t_kill + a.timeout
        first_after = None
        while time.monotonic() < deadline:
            with run.lock:
                after = [t for t in run.acked.values() if t > t_kill]
            if after:
                first_after = min(after)
                break
            time.sleep(0.05)
        if first_after is not None:
            time.sleep(a.after)
    finally:
        run.stop.set()
        for t in threads:
            t.join()

    with run.lock:
        acked = dict(run.acked)
        errors = list(run.errors)
    before_acks = [t for t in acked.values() if t <= t_kill]
    last_before = max(before_acks) if before_acks else None
    pre_ids = [i for i, t in acked.items() if t <= t_kill_call]
    rate = len(pre_ids) / a.before if a.before > 0 else 0.0

    # What the new primary holds.
    try:
        conn = c.connect("PG_WRITE_PORT", timeout=5)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT inet_server_port(), pg_is_in_recovery()")
            new_port, in_recovery = cur.fetchone()
            cur.execute("SELECT id FROM cluster_probe")
            present = {r[0] for r in cur.fetchall()}
        conn.close()
    except psycopg2.Error as e:
        print("failover: error: cannot read the new primary through HAProxy: %s" % e, file=sys.stderr)
        return 1
    names = {int(c.env["PG1_PORT"]): "pg1", int(c.env["PG2_PORT"]): "pg2"}
    lost = sorted(set(acked) - present)
    unacked_present = len(present - set(acked))

    vis = [max(0.0, run.seen[i] - acked[i]) * 1000 for i in pre_ids if i in run.seen]
    unseen = len([i for i in pre_ids if i not in run.seen])
    lag = run.lags_ms

    # Where the failover time went: the survivor's Patroni taking the leader key, HAProxy's write
    # backend marking it up, the first acknowledged write.
    survivor = names.get(new_port)
    if survivor and first_after is not None:
        def rel(t):
            return "%.1f s" % (t - wall_kill_call) if t is not None else "not found"
        promoted = first_event_after(os.path.join(a.dir, "logs", "patroni-%s.log" % survivor), wall_kill_call,
                                     "promoted self to leader")
        routed = first_event_after(os.path.join(a.dir, "logs", "haproxy.log"), wall_kill_call,
                                   "Server pg_write/%s is UP" % survivor)
        print("failover: after the kill: %s promoted itself at +%s, HAProxy's write backend had it up at +%s, "
              "first acknowledged write at +%.1f s (the last one before at %+.2f s)"
              % (survivor, rel(promoted), rel(routed), first_after - t_kill_call,
                 (last_before - t_kill_call) if last_before is not None else float("nan")))

    failover_s = (first_after - last_before) if (first_after is not None and last_before is not None) else None
    print("failover: old primary %s, new primary %s (in recovery: %s)" % (names.get(old_port, old_port), names.get(new_port, new_port), in_recovery))
    print("failover: %d single-row transactions acknowledged before the kill in %.1f s (%.0f/s); %d failed attempts during the failover"
          % (len(pre_ids), a.before, rate, len(errors)))
    if errors:
        print("failover: first error: %s; last: %s" % (errors[0][1], errors[-1][1]))
    print("failover: standby replay lag (pg_stat_replication.replay_lag, %d samples): p50 %.1f ms, p99 %.1f ms"
          % (len(lag), percentile(lag, 50), percentile(lag, 99)))
    print("failover: follower polling the read port every 20 ms saw rows after their commit: p50 %.0f ms, p99 %.0f ms, "
          "max %.0f ms (%d rows; %d never seen; %d of %d polls answered by a primary)"
          % (percentile(vis, 50), percentile(vis, 99), max(vis) if vis else float("nan"), len(vis), unseen,
             run.seen_on_primary, run.polls))
    if lost:
        print("failover: LOST acknowledged rows: %s%s" % (lost[:20], " ..." if len(lost) > 20 else ""))
        rc = 1
    if failover_s is None:
        print("failover: error: no write was acknowledged within %.0f s after the kill" % a.timeout)
        rc = 1
    if new_port == old_port or in_recovery:
        print("failover: error: the write port does not lead to a new primary")
        rc = 1
    print("cluster-infra: failover_s=%s lost=%d acked=%d unacked_present=%d replay_lag_p50_ms=%.1f replay_lag_p99_ms=%.1f "
          "follower_p50_ms=%.0f follower_p99_ms=%.0f tx_per_s=%.0f"
          % ("%.1f" % failover_s if failover_s is not None else "none", len(lost), len(acked), unacked_present,
             percentile(lag, 50), percentile(lag, 99), percentile(vis, 50), percentile(vis, 99), rate))
    return rc


if __name__ == "__main__":
    sys.exit(main())
