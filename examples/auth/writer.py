#!/usr/bin/python3
"""The shop's activity for examples/auth/demo.sh: orders and inventory of the users
alice and bob (each document carries its owner in owner_id), inserted, updated and
deleted, about two changes a second.

The collections are created with changeStreamPreAndPostImages enabled, so that a
delete's change event carries the deleted document (fullDocumentBeforeChange, with
changegate's --full-document-before-change whenAvailable): that is what tells
changegate whose delete it is. Without pre-images a delete has no owner and is
delivered to nobody.

    writer.py [MONGO_URI] [--setup-only]
"""
import random
import sys
import time

import pymongo

USERS = ["alice", "bob"]
ITEMS = ["coffee", "tea", "bagel", "muffin", "juice", "croissant"]
PRODUCTS = [("CUP-01", "mug"), ("TEE-02", "t-shirt"), ("BAG-03", "tote bag"),
            ("PEN-04", "pen"), ("CAP-05", "cap")]


def setup(db):
    """Both collections, with pre-images recorded for change streams (MongoDB 6.0+)."""
    existing = set(db.list_collection_names())
    for name in ("orders", "inventory"):
        if name in existing:
            db.command("collMod", name, changeStreamPreAndPostImages={"enabled": True})
        else:
            db.create_collection(name, changeStreamPreAndPostImages={"enabled": True})


def one_change(db, n):
    user = random.choice(USERS)
    orders = random.random() < 0.6
    coll = db.orders if orders else db.inventory
    mine = list(coll.find({"owner_id": user}, {"_id": 1}).limit(20))
    kind = random.random()
    if mine and kind < 0.3:
        doc_id = random.choice(mine)["_id"]
        if orders:
            coll.update_one({"_id": doc_id}, {"$set": {
                "status": random.choice(["paid", "shipped", "delivered"])}})
        else:
            coll.update_one({"_id": doc_id}, {"$inc": {"stock": random.randint(-3, 5)}})
    elif len(mine) > 3 and kind < 0.5:
        coll.delete_one({"_id": random.choice(mine)["_id"]})
    elif orders:
        coll.insert_one({"owner_id": user, "order": n, "item": random.choice(ITEMS),
                         "qty": random.randint(1, 5), "status": "new"})
    else:
        sku, name = random.choice(PRODUCTS)
        coll.insert_one({"owner_id": user, "sku": sku, "name": name,
                         "stock": random.randint(0, 20)})


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    uri = args[0] if args else "mongodb://127.0.0.1:27017/?replicaSet=rs0"
    db = pymongo.MongoClient(uri).shop
    setup(db)
    if "--setup-only" in sys.argv:
        return
    n = 0
    while True:
        n += 1
        one_change(db, n)
        time.sleep(0.5)


if __name__ == "__main__":
    main()
