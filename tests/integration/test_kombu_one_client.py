"""kombu's Redis channel publishes through one client per connection pool (``shared.kombu_workarounds``)."""

from __future__ import annotations

from kombu import Connection, Exchange, Producer, Queue

from shared import kombu_workarounds


def test_publishes_reuse_one_redis_client_and_every_message_arrives(redis_url: str) -> None:
    kombu_workarounds.apply()
    queue = Queue("one-client", Exchange("one-client"), routing_key="one-client")
    with Connection(redis_url) as connection:
        channel = connection.channel()
        producer = Producer(channel, exchange=queue.exchange, routing_key="one-client")
        queue(channel).declare()
        with channel.conn_or_acquire() as first:
            pass
        for n in range(5):
            producer.publish({"n": n}, declare=[queue])
        with channel.conn_or_acquire() as later:
            pass
        assert later is first
        received = []
        bound = queue(channel)
        while (message := bound.get(no_ack=True)) is not None:
            received.append(message.payload["n"])
        assert received == [0, 1, 2, 3, 4]
        channel.close()
