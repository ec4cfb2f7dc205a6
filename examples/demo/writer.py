#!/usr/bin/python3
"""Demo writer: one sample change a second in shop.orders (mostly inserts,
with some updates and deletes so every kind of event shows up)."""
import random
import sys
import time

import pymongo

uri = sys.argv[1] if len(sys.argv) > 1 else "mongodb://127.0.0.1:27017/?replicaSet=rs0"
orders = pymongo.MongoClient(uri).shop.orders
items = ["coffee", "tea", "bagel", "muffin", "juice", "croissant"]
n = 0
while True:
    n += 1
    kind = random.random()
    existing = list(orders.find({}, {"_id": 1}).limit(20)) if n > 3 else []
    if existing and kind < 0.25:
        orders.update_one({"_id": random.choice(existing)["_id"]},
                          {"$set": {"status": random.choice(["paid", "shipped", "delivered"])}})
    elif existing and kind < 0.35:
        orders.delete_one({"_id": random.choice(existing)["_id"]})
    else:
        orders.insert_one({"order": n, "item": random.choice(items),
                           "qty": random.randint(1, 5), "status": "new"})
    time.sleep(1)
