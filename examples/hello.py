"""A small derecho application: connect to a member's sidecar, send a few messages, print deliveries.

Start a local group in one terminal, then run this against any member's socket:

    derecho up --dir /tmp/x
    python examples/hello.py /tmp/x/member-0/derecho.sock
    python examples/hello.py /tmp/x/member-1/derecho.sock --count 5 --listen 10

Every member delivers every message of the shard in the same order, so two copies of this
script on different members print the same versions for the same messages. A receipt says the
message was delivered at this member (its version is its place in the total order).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from derecho.client import Client, DerechoError


async def main(socket: str, count: int, listen: float) -> int:
    async with await Client.connect(socket, timeout=5.0) as client:
        view = await client.view()
        print(f"connected to {socket}: view {view.vid}, members {view.members}")

        # Open the stream before sending, so our own messages are among the deliveries.
        stream = client.deliveries()
        mine: set[int] = set()

        async def send_all() -> None:
            for k in range(count):
                payload = f"hello {k} from pid {os.getpid()}".encode()
                receipt = await client.send(payload)
                mine.add(receipt.version)
                print(f"sent    {payload.decode()!r}: receipt version {receipt.version} (seq {receipt.seq})")

        sender = asyncio.create_task(send_all())
        seen: set[int] = set()
        try:
            while True:
                # Read until our messages are all delivered here, then `listen` more seconds for others.
                done = sender.done() and mine <= seen
                try:
                    delivery = await asyncio.wait_for(anext(stream), timeout=listen if done else 30.0)
                except TimeoutError:
                    break
                seen.add(delivery.version)
                text = delivery.payload.decode(errors="replace")
                where = f"version {delivery.version} (seq {delivery.seq}) from member {delivery.sender}"
                print(f"deliver {where}: {text!r}")
        finally:
            await sender  # re-raises a failed send
    print(f"done: {count} sent, {len(seen)} delivered at this member")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="the member's Unix socket, e.g. /tmp/x/member-0/derecho.sock")
    parser.add_argument("--count", type=int, default=3, help="messages to send (default 3)")
    parser.add_argument("--listen", type=float, default=2.0, help="seconds to keep printing after the last own message")
    args = parser.parse_args()
    try:
        sys.exit(asyncio.run(main(args.socket, args.count, args.listen)))
    except DerechoError as exc:
        print(f"hello.py: {exc}", file=sys.stderr)
        sys.exit(1)
