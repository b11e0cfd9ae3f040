"""Fan-out of live messages to websocket clients, each behind a bounded queue.

Publishing never waits for a client: a message is serialised once and put on
every subscriber's queue without blocking. A subscriber whose queue is full is
*dropped* (its websocket is closed with `CloseCode.TOO_SLOW` and it is expected to
reconnect with `after_seq`, getting what it missed from the store), so a slow
or stuck client costs the trainer and the other clients nothing.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

QUEUE_SIZE = 256  # messages; a run makes at most a few per second
END_SEQ = -1  # the sequence number of a topic's last message (its run was deleted)


class Subscriber:
    def __init__(self, topic: str, maxsize: int) -> None:
        self.topic = topic
        self.queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue(maxsize)
        self.overflowed = False

    def offer(self, seq: int, text: str) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait((seq, text))
        except asyncio.QueueFull:
            self.overflowed = True
            # Make room for the end-of-stream marker so the sender wakes up and closes.
            self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def next(self) -> tuple[int, str] | None:
        """The next (seq, message), or None once this subscriber has been dropped."""
        return await self.queue.get()


class Hub:
    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._topics: dict[str, set[Subscriber]] = defaultdict(set)

    def subscribe(self, topic: str) -> Subscriber:
        subscriber = Subscriber(topic, self.queue_size)
        self._topics[topic].add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscribers = self._topics.get(subscriber.topic)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._topics[subscriber.topic]

    def publish(self, topic: str, text: str, seq: int = 0) -> None:
        for subscriber in tuple(self._topics.get(topic, ())):
            subscriber.offer(seq, text)

    def end(self, topic: str, text: str) -> None:
        """A last message, then every subscriber of the topic is told to close."""
        for subscriber in tuple(self._topics.get(topic, ())):
            subscriber.offer(END_SEQ, text)
