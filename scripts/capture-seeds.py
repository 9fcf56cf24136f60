#!/usr/bin/env python3
"""Captures real client requests as seeds for the hostile-input tests and fuzz targets.

Starts the broker behind a recording TCP proxy (the broker advertises the proxy, so every
client connection passes through it), drives librdkafka (confluent-kafka), kafka-python and
kcat through produce, consume, consumer groups and admin calls, and writes up to
SEEDS_PER_VERSION distinct request frames per API key and version, each at most MAX_SEED
bytes, to tests/seeds/<key>-v<version>-<n>.bin (header and body, no length prefix).

    tests/compat/.venv/bin/python scripts/capture-seeds.py target/debug/strata-broker
"""

import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "seeds")
# Enough variety per version (different clients, populated and empty arrays) while keeping
# the hostile-input test, which mutates every byte of every seed, quick.
SEEDS_PER_VERSION = 3
MAX_SEED = 4096

frames = {}  # (key, version) -> {digest: bytes}
lock = threading.Lock()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record(frame):
    if len(frame) < 4 or len(frame) > MAX_SEED:
        return
    key = int.from_bytes(frame[0:2], "big", signed=True)
    ver = int.from_bytes(frame[2:4], "big", signed=True)
    with lock:
        slot = frames.setdefault((key, ver), {})
        if len(slot) < SEEDS_PER_VERSION:
            slot.setdefault(hashlib.sha256(frame).hexdigest(), frame)


def pump(src, dst, record_frames=False):
    """Copies src to dst until either closes; records each request frame when asked."""
    buf = b""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
            if not record_frames:
                continue
            buf += data
            while len(buf) >= 4:
                n = int.from_bytes(buf[:4], "big")
                if len(buf) < 4 + n:
                    break
                record(buf[4 : 4 + n])
                buf = buf[4 + n :]
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def proxy(listen_port, broker_port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen_port))
    ls.listen(64)
    while True:
        client, _ = ls.accept()
        upstream = socket.create_connection(("127.0.0.1", broker_port))
        threading.Thread(target=pump, args=(client, upstream, True), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()


def librdkafka_workload(bs):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

    admin = AdminClient({"bootstrap.servers": bs})
    fs = admin.create_topics([NewTopic("seed-a", 2, 1, config={"retention.ms": "600000"})])
    for f in fs.values():
        f.result(10)
    admin.create_partitions([NewPartitions("seed-a", 3)])["seed-a"].result(10)
    res = ConfigResource("topic", "seed-a")
    admin.describe_configs([res])[res].result(10)
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        p = Producer({"bootstrap.servers": bs, "compression.type": codec,
                      "enable.idempotence": True, "linger.ms": 5})
        for i in range(20):
            p.produce("seed-a", key=f"k{i}", value=f"v{i}" * 3, headers={"h": b"x"})
        p.flush(10)
    c = Consumer({"bootstrap.servers": bs, "group.id": "seed-g", "auto.offset.reset": "earliest",
                  "group.instance.id": "seed-static"})
    c.subscribe(["seed-a"])
    got, deadline = 0, time.time() + 20
    while got < 50 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got += 1
    c.commit(asynchronous=False)
    c.offsets_for_times([TopicPartition("seed-a", 0, 1)], 5)
    c.close()
    admin.list_consumer_groups().result(10)
    admin.describe_consumer_groups(["seed-g"])["seed-g"].result(10)
    admin.delete_records([TopicPartition("seed-a", 0, 1)])
    time.sleep(1)


def kafka_python_workload(bs):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bs)
    admin.create_topics([NewTopic("seed-b", 2, 1)])
    p = KafkaProducer(bootstrap_servers=bs)
    for i in range(10):
        p.send("seed-b", key=b"k", value=b"v%d" % i)
    p.flush()
    c = KafkaConsumer("seed-b", bootstrap_servers=bs, group_id="seed-kp",
                      auto_offset_reset="earliest", consumer_timeout_ms=5000)
    for _ in c:
        pass
    c.commit()
    c.close()
    for call in (lambda: admin.describe_consumer_groups(["seed-kp"]),
                 lambda: admin.list_consumer_group_offsets("seed-kp"),
                 lambda: admin.delete_consumer_groups(["seed-kp"]),
                 lambda: admin.delete_topics(["seed-b"])):
        try:
            call()
        except Exception as e:  # an admin call this client version lacks
            print(f"kafka-python admin: {e!r}", file=sys.stderr)
    admin.close()


def kcat_workload(bs):
    subprocess.run(["kcat", "-b", bs, "-L"], check=True, capture_output=True)
    subprocess.run(["kcat", "-b", bs, "-P", "-t", "seed-c"], input=b"one\ntwo\n", check=True)
    subprocess.run(["kcat", "-b", bs, "-C", "-t", "seed-c", "-o", "beginning", "-e"],
                   check=True, capture_output=True)


def write_batches():
    """Valid v2 record batches of every codec, built by kafka-python, for the batch fuzzer."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    out = os.path.join(OUT, "batches")
    os.makedirs(out, exist_ok=True)
    # kafka-python's codec ids: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    for codec in range(5):
        for n, idempotent in ((1, False), (7, True)):
            b = DefaultRecordBatchBuilder(
                magic=2, compression_type=codec, is_transactional=False,
                producer_id=1000 if idempotent else -1, producer_epoch=0 if idempotent else -1,
                base_sequence=0 if idempotent else -1, batch_size=1 << 20)
            for i in range(n):
                b.append(i, timestamp=1_700_000_000_000 + i, key=b"k%d" % i,
                         value=b"value-%d" % i * 5, headers=[("h", b"x")])
            with open(os.path.join(out, f"codec{codec}-{n}.bin"), "wb") as f:
                f.write(bytes(b.build()))


def main():
    broker_bin = sys.argv[1]
    write_batches()
    bport, pport = free_port(), free_port()
    with tempfile.TemporaryDirectory() as data:
        env = dict(os.environ, STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS="0")
        broker = subprocess.Popen(
            [broker_bin, "--listen", f"127.0.0.1:{bport}", "--advertise", f"127.0.0.1:{pport}",
             "--data-dir", data], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1)
            threading.Thread(target=proxy, args=(pport, bport), daemon=True).start()
            time.sleep(0.2)
            bs = f"127.0.0.1:{pport}"
            for w in (librdkafka_workload, kafka_python_workload, kcat_workload):
                try:
                    w(bs)
                except Exception as e:  # keep what the other clients bring
                    print(f"{w.__name__}: {e!r}", file=sys.stderr)
        finally:
            broker.terminate()
            broker.wait(20)
    os.makedirs(OUT, exist_ok=True)
    n = 0
    for (key, ver), slot in sorted(frames.items()):
        for i, frame in enumerate(slot.values()):
            with open(os.path.join(OUT, f"{key:02}-v{ver}-{i}.bin"), "wb") as f:
                f.write(frame)
            n += 1
    print(f"{n} seeds for {len(frames)} API versions in {OUT}")


if __name__ == "__main__":
    main()
