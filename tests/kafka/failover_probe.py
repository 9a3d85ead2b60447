"""Failover time of a replicated partition, as a producer sees it (used by
bench-harness/scripts/cluster-report.sh). Sends one acks=all record every 10 ms to partition 0
of topic "fo" and prints, as one JSON line per event, the time of each acknowledgement; the
script kills the leader meanwhile and computes the gap.

  failover_probe.py ADDRS SECONDS
"""
import json
import sys
import time

from kafka import KafkaProducer

addrs, seconds = sys.argv[1].split(","), float(sys.argv[2])
producer = KafkaProducer(bootstrap_servers=addrs, acks="all", enable_idempotence=True,
                         retries=1000, retry_backoff_ms=50, request_timeout_ms=30000,
                         max_in_flight_requests_per_connection=1, linger_ms=0)
end = time.time() + seconds
i = 0
while time.time() < end:
    future = producer.send("fo", value=b"%d" % i, partition=0)
    i += 1
    try:
        future.get(timeout=40)
        print(json.dumps({"acked": time.time()}), flush=True)
    except Exception as e:  # noqa: BLE001 - reported, the probe goes on
        print(json.dumps({"error": str(e)}), flush=True)
    time.sleep(0.01)
producer.close()
