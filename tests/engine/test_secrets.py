"""Secrets reach steps and never reach storage in clear."""

from __future__ import annotations

import base64
import json

from ansflow.db.store import Store
from ansflow.db.trust import TrustStore
from ansflow.engine.executor import PipelineExecutor
from ansflow.resources import Resources
from ansflow.trust.secrets import SecretBox
from tests.builders import pipeline_doc, step
from tests.engine.harness import create_execution, read_record

SECRET = "hunter2-Sup3r-s3cret"


async def store_secret(resources: Resources, name: str, value: str,
                       pipeline_id: int | None = None) -> None:
    box = SecretBox.of(resources.settings)
    async with resources.db.session() as session:
        await TrustStore(session).put_secret(name, pipeline_id, await box.encrypt(value))
        await session.commit()


async def all_log_text(resources: Resources, execution_id: int) -> str:
    async with resources.db.session() as session:
        store = Store(session)
        execution = await store.get_execution(execution_id)
        text = []
        for _, row in await store.step_rows(execution):
            text += [c.content for c in await store.read_log(row.id, 0, 10**9)]
        return "".join(text)


async def test_secret_is_usable_but_masked_everywhere(resources: Resources) -> None:
    name = f"TOKEN_{id(resources)}"
    await store_secret(resources, name, SECRET)
    encoded = base64.b64encode(f"user:{SECRET}".encode()).decode()
    doc = pipeline_doc(
        step("leak", f'echo "plain $TOKEN"\nprintf "split: %s" "{SECRET[:7]}"; sleep 0.2; '
                     f'printf "%s\\n" "{SECRET[7:]}"\n'
                     f'echo "b64: $(printf "user:%s" "$TOKEN" | base64 -w0)"\n'
                     f'echo "out=$TOKEN" >> "$ANSFLOW_OUTPUT"\n'
                     f'test "$TOKEN" = "{SECRET}" || exit 9\n'
                     'echo "fail: $TOKEN"; exit 3',
             env={"TOKEN": f"${{{{ secrets.{name} }}}}"}),
    )
    execution_id = await create_execution(resources, doc)
    await PipelineExecutor(resources).execute(execution_id)
    record = await read_record(resources, execution_id)
    logs = await all_log_text(resources, execution_id)
    assert record.steps[0].exit_code == 3, logs  # the step saw the real value
    assert "plain ***" in logs and "split: ***" in logs and "fail: ***" in logs
    dumped = record.model_dump_json()
    for text in (logs, dumped):
        assert SECRET not in text
        assert encoded not in text
    assert json.loads(dumped)["steps"][0]["outputs"] == {"out": "***"}


async def test_a_missing_secret_fails_the_step_naming_it(resources: Resources) -> None:
    doc = pipeline_doc(step("needs", "echo $X", env={"X": "${{ secrets.NOPE_NOT_THERE }}"}))
    execution_id = await create_execution(resources, doc)
    await PipelineExecutor(resources).execute(execution_id)
    record = await read_record(resources, execution_id)
    assert record.status == "failed"
    assert record.steps[0].error is not None
    assert "secret 'NOPE_NOT_THERE' is not available" in record.steps[0].error
