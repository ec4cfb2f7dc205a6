"""devmongo's implementation, split by concern.

wire.py         message framing (OP_MSG, OP_QUERY, OP_REPLY)
commands.py     command dispatch and replies
store.py        collections, documents, update operators; every write logs to the oplog
oplog.py        bounded oplog, cluster clock, resume token format
changestream.py change stream cursors: oplog entries -> events, pipelines, invalidation
matcher.py      query matching (mongomock, own code where it lacks something), BSON
                comparison, projection, simple expressions
aggregate.py    plain aggregation pipelines and find helpers
failpoints.py   configureFailPoint / failCommand
persist.py      --dbpath save and load
server.py       asyncio server, startup, shutdown
"""
