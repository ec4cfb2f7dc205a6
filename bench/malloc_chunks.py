#!/usr/bin/python3
"""Where is a process's free heap memory, and what keeps glibc from returning it?

    /usr/bin/python3 bench/malloc_chunks.py PID [N]

Walks the chunks of every non-main glibc malloc arena heap of PID (the 64 MB-aligned
anonymous mappings that begin with a heap_info) by reading /proc/PID/mem, and prints per
heap: chunks marked in use, split into those sitting in a thread's tcache (recognised by
glibc's per-process tcache_key at offset 8 of the user data) and the rest (really in use,
or in a fastbin); free chunks (total, largest); and where the top chunk is and its size;
then the N (20) highest chunks marked in use, with a preview of their bytes. glibc gives
memory back from a heap's top only, so a small top chunk above megabytes of free chunks
shows what pins them. Layout offsets are those of glibc 2.36 on x86_64 (sizeof(heap_info)
48, sizeof(malloc_state) 2200, top at offset 96); run as a user that may read the
process's memory (ptrace rights). Read-only; take it while the process is quiet.
"""

import argparse
import re
import struct
import sys
from collections import Counter

HEAP_MAX = 64 << 20  # a non-main arena's heaps are this size and aligned to it
HEAP_INFO = 48       # sizeof(heap_info): ar_ptr, prev, size, mprotect_size, pagesize, pad
MALLOC_STATE = 2200  # sizeof(struct malloc_state); the first heap holds it after heap_info
TOP = 96             # offsetof(struct malloc_state, top)


class Mem:
    def __init__(self, pid):
        self.f = open(f"/proc/{pid}/mem", "rb", 0)

    def read(self, addr, n):
        self.f.seek(addr)
        return self.f.read(n)

    def u64(self, addr):
        return struct.unpack("<Q", self.read(addr, 8))[0]


def heaps(pid, mem):
    """(base, arena, size) of every mapping that looks like a non-main arena's heap."""
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        start = int(f[0].split("-")[0], 16)
        if len(f) == 5 and start % HEAP_MAX == 0 and f[1].startswith("rw"):
            arena, _prev, size = struct.unpack("<3Q", mem.read(start, 24))
            if 0 < size <= HEAP_MAX:
                yield start, arena, size


def walk(mem, base, arena, size):
    """Chunks marked in use and free chunks, from the heap's first chunk to its top."""
    top = mem.u64(arena + TOP)
    p = arena + MALLOC_STATE if arena == base + HEAP_INFO else base + HEAP_INFO
    if (p + 16) % 16:  # user data (chunk + 16) is 16-aligned
        p += 8
    end, marked, free = base + size, [], []
    while p < end and p != top:
        sz = mem.u64(p + 8) & ~7
        if sz < 32 or p + sz > end:
            print(f"  heap {base:#x}: bad chunk at +{p - base:#x}; stopped", file=sys.stderr)
            break
        in_use = p + sz >= end or mem.u64(p + sz + 8) & 1  # the next chunk's PREV_INUSE
        (marked if in_use else free).append((p, sz))
        p += sz
    top_size = mem.u64(top + 8) & ~7 if base <= top < end else 0
    return top, top_size, marked, free


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pid", type=int)
    ap.add_argument("n", type=int, nargs="?", default=20, help="highest chunks to show")
    args = ap.parse_args()
    mem = Mem(args.pid)
    walked = [(base, arena, size) + walk(mem, base, arena, size)
              for base, arena, size in heaps(args.pid, mem)]
    # tcache_key: the same 8 bytes at user data + 8 of every chunk in any tcache; the most
    # common value there among small chunks marked in use.
    key = Counter(mem.read(c + 24, 8) for w in walked for c, s in w[5] if s <= 1040)
    key = key.most_common(1)[0][0] if key else None
    for base, arena, size, top, top_size, marked, free in walked:
        cached = {c for c, s in marked if mem.read(c + 24, 8) == key}
        tc = [s for c, s in marked if c in cached]
        live = [s for c, s in marked if c not in cached]
        fs = [s for _, s in free]
        where = f"at +{(top - base) >> 10} kB, {top_size >> 10} kB" if top_size else "in another heap"
        print(f"heap {base:#x} (arena {arena:#x}) {size >> 10} kB: tcache {len(tc)} chunks "
              f"{sum(tc)} B; in use or fastbin {len(live)} chunks {sum(live)} B; free "
              f"{len(fs)} chunks {sum(fs) >> 10} kB (largest {max(fs, default=0) >> 10} kB); "
              f"top {where}")
        for c, s in marked[-args.n:] if args.n else []:
            data = mem.read(c + 16, min(s - 16, 56))
            text = re.sub(rb"[^ -~]", b".", data).decode()
            print(f"   +{(c - base) >> 10:6d} kB {s:6d} B {'tcache' if c in cached else '      '} {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
