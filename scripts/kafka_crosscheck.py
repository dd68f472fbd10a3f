#!/usr/bin/env python3
"""Cross-checks TaskFlow's Kafka backend with an independent client (confluent-kafka).

Consume (default): reads --count messages of --topic in its own consumer group and prints one
JSON object a line: {"topic", "partition", "offset", "key", "headers", "value"} (key, header
values and value decoded as UTF-8). Exits 1 when fewer than --count arrive within --timeout.

    python3 scripts/kafka_crosscheck.py --brokers 127.0.0.1:9092 --topic t --count 20

Produce (--produce): writes --count keyed messages, round-robin over --keys, each with value
{"key": KEY, "n": N}, headers taskflow-msg-id = "py-KEY-N" and
content-type = application/cloudevents+json; waits for every delivery report and prints one JSON
object a line per delivered message. Exits 1 when any delivery failed.

    python3 scripts/kafka_crosscheck.py --brokers 127.0.0.1:9092 --topic t --count 10 \\
        --produce --keys alice,bob

Needs `pip install confluent-kafka` (scripts/install-tansu.sh installs it).
"""

import argparse
import json
import sys
import time
import uuid

try:
    from confluent_kafka import Consumer, KafkaException, Producer
except ImportError:  # pragma: no cover - a message beats a traceback
    sys.exit("confluent-kafka is missing: run scripts/install-tansu.sh (pip install confluent-kafka)")


def text(raw):
    return None if raw is None else raw.decode("utf-8", errors="replace")


def consume(args):
    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": args.group or f"crosscheck-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    seen = 0
    deadline = time.monotonic() + args.timeout
    try:
        while seen < args.count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                print(f"consumer error: {msg.error()}", file=sys.stderr)
                continue
            headers = {key: text(value) for key, value in (msg.headers() or [])}
            record = {
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": text(msg.key()),
                "headers": headers,
                "value": text(msg.value()),
            }
            print(json.dumps(record), flush=True)
            consumer.commit(message=msg, asynchronous=False)
            seen += 1
    finally:
        consumer.close()
    if seen < args.count:
        print(f"only {seen} of {args.count} messages within {args.timeout} s", file=sys.stderr)
        return 1
    return 0


def produce(args):
    producer = Producer(
        {
            "bootstrap.servers": args.brokers,
            "enable.idempotence": True,
            "acks": "all",
            # The Java client's partitioner, as TaskFlow's backend uses.
            "partitioner": "murmur2_random",
        }
    )
    keys = [key for key in args.keys.split(",") if key]
    failures = []

    def report(error, msg):
        if error is not None:
            failures.append(str(error))
            return
        record = {
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": text(msg.key()),
        }
        print(json.dumps(record), flush=True)

    for n in range(args.count):
        key = keys[n % len(keys)]
        value = json.dumps({"key": key, "n": n})
        headers = [("taskflow-msg-id", f"py-{key}-{n}"), ("content-type", "application/cloudevents+json")]
        while True:
            try:
                producer.produce(args.topic, key=key, value=value, headers=headers, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(args.timeout)
    if remaining or failures:
        print(f"{remaining} undelivered, failures: {failures}", file=sys.stderr)
        return 1
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", required=True, help="bootstrap servers, host:port[,...]")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True, help="messages to read or write")
    parser.add_argument("--group", help="consumer group (default: a fresh one)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait in all")
    parser.add_argument("--produce", action="store_true", help="produce instead of consuming")
    parser.add_argument("--keys", default="alice,bob", help="comma-separated keys to produce with")
    args = parser.parse_args()
    try:
        return produce(args) if args.produce else consume(args)
    except KafkaException as error:
        print(f"kafka error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
