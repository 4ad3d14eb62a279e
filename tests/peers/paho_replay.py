"""Replays device messages into an MQTT server with Eclipse Paho, as the devices would.

Usage: paho_replay.py HOST PORT < plan.json

The plan is a JSON list of connections, each {"username", "password", "messages": [[topic,
payload], ...]}. The connections run at once, as a home's devices do (at most 64 at a time);
each publishes its messages in order at QoS 1 and waits for every acknowledgement before
disconnecting. Prints one line per connection: the username and how many messages were
acknowledged. Exits non-zero if a connection or a message fails.
"""

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import paho.mqtt.client as mqtt

TIMEOUT_S = 20


def replay(host, port, connection):
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"{connection['username']}-replay",
        protocol=mqtt.MQTTv311,
    )
    client.username_pw_set(connection["username"], connection["password"])
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        sent = [client.publish(topic, payload, qos=1) for topic, payload in connection["messages"]]
        for info in sent:
            info.wait_for_publish(timeout=TIMEOUT_S)
            if not info.is_published():
                raise RuntimeError(f"{connection['username']}: a message was not acknowledged")
        return len(sent)
    finally:
        client.disconnect()
        client.loop_stop()


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    plan = json.load(sys.stdin)
    with ThreadPoolExecutor(max_workers=min(64, max(1, len(plan)))) as pool:
        counts = list(pool.map(lambda connection: replay(host, port, connection), plan))
    for connection, count in zip(plan, counts):
        print(f"{connection['username']} {count}", flush=True)


if __name__ == "__main__":
    main()
