#!/usr/bin/python3
"""Throughput correctness: one pymongo writer inserts 1,000 documents one by one while a
change stream reads them; every event must arrive, in order, with no gap or repeat.
Then the same for one insert_many of 1,000 documents."""

import threading

from devmongo_testlib import Check, DevMongo, main_guard, next_change

check = Check("test_burst")
N = 1000


def read_n(stream, n):
    got = []
    while len(got) < n:
        ev = next_change(stream, 10)
        if ev is None:
            break
        got.append(ev)
    return got


def test_one_by_one(dm):
    reader = dm.client()
    writer = dm.client()
    coll = reader.burst.c
    with coll.watch() as s:
        errors = []

        def write():
            try:
                wc = writer.burst.c
                for i in range(N):
                    wc.insert_one({"seq": i})
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=write)
        t.start()
        got = read_n(s, N)
        t.join(60)
        check.ok(not errors, "writer errors: %r" % errors)
        seqs = [e["fullDocument"]["seq"] for e in got]
        check.eq(len(seqs), N, "events read while writing")
        check.ok(seqs == list(range(N)), "events in order with no gap (first mismatch at %s)"
                 % next((i for i, v in enumerate(seqs) if v != i), None))
        tokens = [e["_id"]["_data"] for e in got]
        check.ok(all(a < b for a, b in zip(tokens, tokens[1:])), "tokens strictly increasing")
        check.ok(next_change(s, 0.5) is None, "no extra events")


def test_insert_many(dm):
    c = dm.client()
    coll = c.burst.many
    with coll.watch(batch_size=100) as s:
        coll.insert_many([{"seq": i} for i in range(N)])
        got = read_n(s, N)
        check.eq([e["fullDocument"]["seq"] for e in got], list(range(N)), "insert_many burst read back in order")


def main():
    with DevMongo() as dm:
        check.run(test_one_by_one, dm)
        check.run(test_insert_many, dm)
    return check.finish()


if __name__ == "__main__":
    main_guard(main)
