"""``python -m kafka_bridge``: run the bridge (same as the ``mwa-kafka-bridge`` script)."""

from kafka_bridge.main import run

if __name__ == "__main__":
    run()
