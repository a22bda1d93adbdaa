"""Throughput of the warning-shaped workflow on Temporal's Python SDK: runs a
worker and starts N workflows against the dev server at --address, waits for
every result and prints one JSON line {impl, n, wall_s, per_s}. Driven by
scripts/bench-temporal beside the Rust figure of the same run."""

import argparse
import asyncio
import json
import os
import sys
import time
import uuid

from temporalio.client import Client
from temporalio.service import GrpcCompression
from temporalio.worker import Worker

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from warning_shaped import WarningShaped, notify  # noqa: E402


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--address", default="127.0.0.1:7233")
    p.add_argument("--namespace", default="default")
    p.add_argument("-n", type=int, default=200)
    # Workflow- and activity-task polls (the SDK's default is 5 each, one
    # fifth of the workflow polls on the normal queue).
    p.add_argument("--polls", type=int, default=None)
    # Transport compression of the gRPC calls (the SDK's default is gzip).
    p.add_argument("--grpc-compression", choices=["gzip", "none"], default="gzip")
    a = p.parse_args()
    address = a.address.removeprefix("http://").removeprefix("https://")
    compression = GrpcCompression.NONE if a.grpc_compression == "none" else GrpcCompression.GZIP
    client = await Client.connect(address, namespace=a.namespace, grpc_compression=compression)
    queue = f"bench-python-{uuid.uuid4().hex[:8]}"
    tuning = {}
    if a.polls:
        tuning = dict(max_concurrent_workflow_task_polls=a.polls, max_concurrent_activity_task_polls=a.polls)
    async with Worker(client, task_queue=queue, workflows=[WarningShaped], activities=[notify], **tuning):
        t0 = time.perf_counter()
        handles = await asyncio.gather(
            *(
                client.start_workflow(WarningShaped.run, f"w{i}", id=f"{queue}-w{i}", task_queue=queue)
                for i in range(a.n)
            )
        )
        results = await asyncio.gather(*(h.result() for h in handles))
        wall = time.perf_counter() - t0
    assert all(r == "closed" for r in results), results[:3]
    # CPU of this process (all threads: the SDK's Rust core included).
    cpu_ms = time.process_time() * 1000 / a.n
    print(
        json.dumps(
            {
                "impl": "python",
                "polls": a.polls or 5,
                "grpc_compression": a.grpc_compression,
                "n": a.n,
                "wall_s": round(wall, 3),
                "per_s": round(a.n / wall, 2),
                "cpu_ms_per_workflow": round(cpu_ms, 1),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
    # The SDK's native threads can abort the interpreter's finalisation
    # ("PyGILState_Release ... finalizing"): leave without it.
    sys.stdout.flush()
    os._exit(0)
