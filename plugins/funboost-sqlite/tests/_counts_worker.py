"""A process for the count tests: a seeded random mix of every write the broker does on one queue.

usage: _counts_worker.py QUEUE SEED STEPS PROGRESS_FILE [OPTIONS_JSON]
Publishes (one, batches, delayed), fetches, acks, requeues, rejects (to QUEUE_dlx), purges, and keeps some
messages in flight. Appends the number of steps done to PROGRESS_FILE every 10 steps; STEPS = 0 runs until
killed. On a normal end it closes its broker still holding some messages (they stay in flight).
"""
import json
import random
import sys
import time

from funboost.plugins.broker import OutgoingMessage

from funboost_sqlite import SqliteBroker


def step(b: SqliteBroker, rng: random.Random, held: list) -> None:
    """One random write on ``b``; ``held`` is this broker's list of messages in flight (changed in place)."""
    op = rng.random()
    if op < 0.25:
        b.publish([OutgoingMessage(body=json.dumps({"p": rng.random()}), priority=rng.choice((0, 0, 1)),
                                   eta=time.time() + rng.choice((0, 0, 0, 0.05, 60)))])
    elif op < 0.40:
        now = time.time()
        b.publish([OutgoingMessage(body=json.dumps({"k": k}), eta=now + rng.choice((0, 0, 0.05, 0.3, 60)))
                   for k in range(rng.randint(2, 30))])
    elif op < 0.70:
        held.extend(b.fetch(rng.randint(1, 20), 0.01))
    elif op < 0.85 and held:
        rng.shuffle(held)
        k = rng.randint(1, len(held))
        part = held[:k]
        del held[:k]
        what = rng.random()
        if what < 0.6:
            b.ack(part)
        elif what < 0.8:
            b.requeue(part)
        else:
            b.reject(part, "count test")
    elif op < 0.86:
        b.purge()
    elif op < 0.88:
        b.ack(held + held[:1])  # an ack of a message already acked deletes nothing more
        held.clear()


def main() -> None:
    queue, seed, steps, progress_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    options = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    b = SqliteBroker(queue, SqliteBroker.parse_options(options))
    rng = random.Random(seed)
    held: list = []
    with open(progress_path, "a") as progress:
        n = 0
        while steps == 0 or n < steps:
            step(b, rng, held)
            n += 1
            if n % 10 == 0:
                progress.write(f"{n}\n")
                progress.flush()
        progress.write("DONE\n")
    b.close()


if __name__ == "__main__":
    main()
