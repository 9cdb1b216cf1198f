"""Issue 27 as it is checked from outside: the official ``openai`` SDK through the gateway with a developer
key, on a real phase-1 stack (batched engine) with the tool server (phase 3) beside it.

The agent loop: the model is asked to call a tool from a list that mirrors the MCP server's own
``read_file`` (its inputSchema, listed by the official MCP client), the call's arguments validate
against that schema, the MCP server is called with them, the result goes back as a ``tool`` message
and the model answers. Then the rest of the issue's list through the gateway: a ``json_schema``
extraction, ``logprobs``, ``n=3``, ``include_usage`` relayed untouched, a system prompt that changes
the prompt's token count, and ``/v1/models`` naming aliases only.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import openai
import pytest

from harness.mcp_client import mcp_session
from suite.testing import running_stack, serve, stack_keys, stack_settings

pytestmark = pytest.mark.integration

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
          "properties": {"name": {"type": "string", "maxLength": 40}, "age": {"type": "integer"}}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gemma_path):
    data = tmp_path_factory.mktemp("agent")
    settings = stack_settings(data, gemma_path, inference={"engine": "batched"})
    with running_stack(settings, 1), serve(settings, "tools"):
        root = data / "sandbox"
        (root / "docs").mkdir(parents=True, exist_ok=True)
        for path in (root / "docs" / "hello.txt", root / "hello.txt"):  # where a small model may look
            path.write_text("hello sandbox\n")
        yield settings


@pytest.fixture(scope="module")
def developer(stack) -> str:
    return stack_keys(stack)["developer"]


@pytest.fixture(scope="module")
def client(stack, developer) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url("gateway") + "/v1", api_key=developer, timeout=600, max_retries=0)


def mcp(stack, key: str, fn):
    async def run():
        async with mcp_session(stack.url("tools") + "/mcp", {"Authorization": f"Bearer {key}"}) as session:
            return await fn(session)

    return asyncio.run(run())


def test_agent_loop_through_the_gateway_calls_the_mcp_server_and_answers(stack, developer, client):
    listed = mcp(stack, developer, lambda session: session.list_tools())
    read_file = next(t for t in listed.tools if t.name == "read_file")
    tools = [{"type": "function", "function": {"name": read_file.name, "description": read_file.description,
                                               "parameters": read_file.inputSchema}}]
    messages = [{"role": "system", "content": "You are an agent. Use the tools to read files."},
                {"role": "user", "content": "Read the file docs/hello.txt and tell me what it says."}]
    first = client.chat.completions.create(model="chat", messages=messages, tools=tools, max_tokens=80,
                                           tool_choice={"type": "function", "function": {"name": "read_file"}})
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, read_file.inputSchema)  # what the model wrote is what the tool takes

    result = mcp(stack, developer, lambda session: session.call_tool("read_file", args))
    output = result.content[0].text
    if not result.isError:
        assert "hello sandbox" in output
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": output}]
    answer = client.chat.completions.create(model="chat", messages=messages, tools=tools, tool_choice="none",
                                            max_tokens=32)
    assert answer.choices[0].message.content and answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens > first.usage.prompt_tokens  # the call and its result went back


def test_the_rest_of_the_issue_through_the_gateway(stack, client):
    extraction = client.chat.completions.create(
        model="chat", max_tokens=60, messages=[{"role": "user", "content": "Dana is 27 years old."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}})
    jsonschema.validate(json.loads(extraction.choices[0].message.content), PERSON)

    scored = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                            logprobs=True, top_logprobs=2)
    assert [len(t.top_logprobs) for t in scored.choices[0].logprobs.content] == [2] * scored.usage.completion_tokens

    three = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hi"}], n=3,
                                           max_tokens=4)
    assert sorted(c.index for c in three.choices) == [0, 1, 2]

    chunks = list(client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=4, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4

    system = [{"role": "system", "content": "Answer as a pirate would, in one short sentence. " * 20}]
    hi = [{"role": "user", "content": "Hi"}]
    plain = client.chat.completions.create(model="chat", messages=hi, max_tokens=1).usage.prompt_tokens
    assert client.chat.completions.create(model="chat", messages=system + hi,
                                          max_tokens=1).usage.prompt_tokens > plain + 200

    models = httpx.get(stack.url("gateway") + "/v1/models", headers={"Authorization": f"Bearer {client.api_key}"})
    assert {m["id"] for m in models.json()["data"]} == {"chat", "code"}
    assert "http" not in models.text and "upstream" not in models.text

    with pytest.raises(openai.BadRequestError, match="'audio' is not supported"):
        client.chat.completions.create(model="chat", messages=hi, max_tokens=1, extra_body={"audio": {"voice": "x"}})
