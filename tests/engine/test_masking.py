"""Masking where the step log and outputs used to let a secret through: a line cut at the
long-line limit, output keys, lower-case percent-encoding (PRODUCT.md section 8)."""

from __future__ import annotations

import json

from ansflow.engine.process import MAX_LINE_BYTES
from ansflow.resources import Resources
from tests.builders import pipeline_doc, step
from tests.engine.harness import run_doc
from tests.engine.test_secrets import all_log_text, store_secret

SECRET = "hunter2/Sup3r:s3cret?"
CUTS = (1, 5, 10, len(SECRET) - 1)
"""How many of the secret's characters fall before the cut, one line each."""

# Each line holds the secret twice, across the first and the second cut of the line.
STRADDLING = f"""
for k in {' '.join(map(str, CUTS))}; do
  head -c $(({MAX_LINE_BYTES} - k)) /dev/zero | tr '\\0' x
  printf '%s' "$TOKEN"
  head -c $(({MAX_LINE_BYTES} - {len(SECRET)})) /dev/zero | tr '\\0' y
  printf '%s\\n' "$TOKEN"
done
"""


async def secret_env(resources: Resources) -> dict[str, str]:
    name = f"CUT_{id(resources)}"
    await store_secret(resources, name, SECRET)
    return {"TOKEN": f"${{{{ secrets.{name} }}}}"}


async def test_a_secret_cut_by_the_long_line_limit_is_masked(resources: Resources) -> None:
    ran = await run_doc(resources, pipeline_doc(
        step("long", STRADDLING, env=await secret_env(resources))))
    assert ran.status == "success", ran.record
    logs = await all_log_text(resources, ran.result.execution_id)
    assert SECRET not in logs
    for length in range(4, len(SECRET)):  # no piece of it either, at either end of a cut
        assert SECRET[:length] not in logs and SECRET[-length:] not in logs, length
    # the output's lines (the log starts with the command): nothing lost around the cuts
    output = "".join(line for line in logs.splitlines() if line and set(line) <= set("xy*"))
    assert output.count("***") == 2 * len(CUTS)
    assert output.count("x") == sum(MAX_LINE_BYTES - k for k in CUTS)
    assert output.count("y") == len(CUTS) * (MAX_LINE_BYTES - len(SECRET))


async def test_a_cut_line_left_unfinished_is_still_masked(resources: Resources) -> None:
    script = (f"head -c {MAX_LINE_BYTES - 3} /dev/zero | tr '\\0' x; "
              'printf "%s" "$TOKEN"; exit 4')  # no newline: the output ends mid-line
    ran = await run_doc(resources, pipeline_doc(
        step("unfinished", script, env=await secret_env(resources))))
    assert ran.step("unfinished").exit_code == 4
    logs = await all_log_text(resources, ran.result.execution_id)
    assert SECRET not in logs and SECRET[-4:] not in logs and logs.count("***") == 1


async def test_output_keys_and_lower_case_percent_encoding_are_masked(
        resources: Resources) -> None:
    script = """
echo "$TOKEN=as a key" >> "$ANSFLOW_OUTPUT"
echo "plain=ok" >> "$ANSFLOW_OUTPUT"
python3 - <<'PY'
import os, re, urllib.parse
upper = urllib.parse.quote(os.environ["TOKEN"], safe="")
print("upper:", upper)
print("lower:", re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), upper))
PY
"""
    ran = await run_doc(resources, pipeline_doc(
        step("leaky", script, env=await secret_env(resources))))
    assert ran.status == "success", ran.record
    logs = await all_log_text(resources, ran.result.execution_id)
    assert "upper: ***" in logs and "lower: ***" in logs, logs
    assert "%2f" not in logs.lower()
    assert ran.step("leaky").outputs == {"***": "as a key", "plain": "ok"}
    assert SECRET not in json.dumps(ran.record.model_dump(mode="json"))
