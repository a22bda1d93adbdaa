"""The warning-shaped workflow of the throughput benchmark, written for
Temporal's Python SDK: an activity, a 1 s timer, an activity, complete.
The same shape as bench/temporal/fixtures/workflows/bench.yaml runs on the
engine's generic interpreter workflow (temporal/benches/throughput.rs).
Kept in its own module: the SDK's workflow sandbox re-imports it."""

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="notify")
async def notify(args: dict) -> dict:
    # What the fake of the Rust side does: answer at once with the key.
    info = activity.info()
    return {"ok": True, "key": f"{info.workflow_id}/{info.activity_id}", "round": args.get("round")}


@workflow.defn(name="WarningShaped")
class WarningShaped:
    @workflow.run
    async def run(self, warning_id: str) -> str:
        opts = dict(start_to_close_timeout=timedelta(seconds=30))
        await workflow.execute_activity(notify, {"warning_id": warning_id, "round": 1}, **opts)
        await workflow.sleep(timedelta(seconds=1))
        await workflow.execute_activity(notify, {"warning_id": warning_id, "round": 2}, **opts)
        return "closed"
