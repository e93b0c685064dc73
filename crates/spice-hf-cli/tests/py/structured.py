"""Structured outputs and tool calls through the official OpenAI Python client.

Run by the CLI's `structured_outputs_*` tests against a real `spice-hf serve`:

    python3 structured.py BASE_URL MODEL all|tools

Every answer is checked here (json.loads, jsonschema, pydantic); the last line printed is a
JSON report the Rust test reads. Any failed check raises, so the exit status is non-zero.
"""

import json
import sys

import jsonschema
from openai import BadRequestError, OpenAI
from pydantic import BaseModel, Field

base, model, scope = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=600)
report = {}

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "colour": {"enum": ["red", "green", "blue"]},
    },
    "required": ["name", "age", "colour"],
    "additionalProperties": False,
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The current time in a time zone",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string"}},
                "required": ["timezone"],
            },
        },
    },
]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def chat(**kw):
    return client.chat.completions.create(model=model, **kw)


def structured():
    # A JSON Schema at temperature 1, twenty seeds: every answer parses and validates.
    seen = set()
    for seed in range(20):
        r = chat(
            messages=[{"role": "user", "content": "Invent a person: a name, an age, a colour."}],
            temperature=1,
            seed=seed,
            max_tokens=200,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": PERSON, "strict": True},
            },
        )
        c = r.choices[0]
        assert c.finish_reason == "stop", (seed, c)
        value = json.loads(c.message.content)
        jsonschema.validate(value, PERSON)
        seen.add(c.message.content)
    report["json_schema_valid"] = 20
    report["json_schema_distinct"] = len(seen)

    # The client's own structured-output helper with a pydantic model.
    # Bounded fields: the schema, not the token limit, ends the answer (greedy SmolLM2 would
    # otherwise write the population's digits until max_tokens: valid JSON, never finished).
    class City(BaseModel):
        name: str = Field(max_length=40)
        country: str = Field(max_length=40)
        population: int = Field(ge=0, le=100_000_000)

    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    parsed = parse(
        model=model,
        messages=[{"role": "user", "content": "Describe the city of Paris."}],
        response_format=City,
        max_tokens=200,
    )
    city = parsed.choices[0].message.parsed
    assert isinstance(city, City), parsed
    report["pydantic"] = city.model_dump()

    # Any JSON object (greedy SmolLM2 repeats list items until max_tokens on an open-ended
    # ask: the prompt asks for two fields).
    r = chat(
        messages=[{"role": "user", "content": "Describe a cat as a JSON object with its name and age."}],
        response_format={"type": "json_object"},
        max_tokens=200,
    )
    assert r.choices[0].finish_reason == "stop", r
    assert isinstance(json.loads(r.choices[0].message.content), dict), r
    report["json_object"] = True

    # A schema feature the engine cannot enforce: a 400 naming it, never a free answer.
    try:
        chat(
            messages=ASK,
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "schema": {"type": "array", "uniqueItems": True},
                },
            },
        )
        raise AssertionError("an unenforceable schema was accepted")
    except BadRequestError as e:
        assert "uniqueItems" in str(e), e
        report["unsupported"] = e.body.get("param") if isinstance(e.body, dict) else None


def reassemble(stream):
    """Joins streamed tool-call deltas by index, as clients do."""
    calls, finish, content = {}, None, ""
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        content += delta.content or ""
        for d in delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += d.id or ""
            if d.function:
                call["name"] += d.function.name or ""
                call["arguments"] += d.function.arguments or ""
        finish = choice.finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish, content


def check_call(name, arguments, wanted=None):
    assert name in PARAMS, name
    if wanted:
        assert name == wanted, (name, wanted)
    jsonschema.validate(json.loads(arguments), PARAMS[name])


def tools(seeds):
    forced = []
    for choice, wanted in [
        ({"type": "function", "function": {"name": "get_weather"}}, "get_weather"),
        ("required", None),
    ]:
        for seed in range(seeds):
            kw = dict(
                messages=ASK,
                tools=TOOLS,
                tool_choice=choice,
                parallel_tool_calls=False,
                temperature=1,
                seed=seed,
                max_tokens=160,
            )
            r = chat(**kw)
            c = r.choices[0]
            assert c.finish_reason == "tool_calls", c
            assert len(c.message.tool_calls) == 1 and not c.message.content, c
            for call in c.message.tool_calls:
                check_call(call.function.name, call.function.arguments, wanted)
            calls, finish, _ = reassemble(chat(stream=True, **kw))
            assert finish == "tool_calls", finish
            # Same seed, same answer: the stream reassembles to the same calls.
            assert [(x["name"], x["arguments"]) for x in calls] == [
                (y.function.name, y.function.arguments) for y in c.message.tool_calls
            ], (calls, c.message.tool_calls)
            assert all(x["id"].startswith("call_") for x in calls), calls
            forced.append(c.message.tool_calls[0])
    report["forced_calls"] = len(forced)

    # Parallel calls allowed: one or more calls, each valid (a model that keeps calling may
    # run out of tokens: finish_reason is then `length`, and the whole calls still count).
    r = chat(messages=ASK, tools=TOOLS, tool_choice="required", temperature=1, seed=7, max_tokens=200)
    c = r.choices[0]
    assert c.finish_reason in ("tool_calls", "length") and c.message.tool_calls, c
    for call in c.message.tool_calls:
        check_call(call.function.name, call.function.arguments)
    assert len({call.id for call in c.message.tool_calls}) == len(c.message.tool_calls), c
    report["parallel_calls"] = len(c.message.tool_calls)

    # auto: a valid call or text, never a broken call.
    kinds = []
    for seed in range(seeds + 1):
        r = chat(messages=ASK, tools=TOOLS, temperature=1, seed=seed, max_tokens=120)
        c = r.choices[0]
        if c.message.tool_calls:
            assert c.finish_reason == "tool_calls", c
            for call in c.message.tool_calls:
                check_call(call.function.name, call.function.arguments)
            kinds.append("call")
        else:
            assert c.message.content is not None and "<tool_call>" not in c.message.content, c
            kinds.append("text")
    report["auto"] = kinds

    # The next turn: the call and its result go back; the model answers in text.
    call = forced[0]
    r = chat(
        messages=ASK
        + [
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "clear"}'},
        ],
        tools=TOOLS,
        tool_choice="none",
        max_tokens=60,
    )
    answer = r.choices[0].message
    assert answer.content and not answer.tool_calls, answer
    report["after_tool"] = answer.content


if scope == "all":
    structured()
    tools(3)
else:
    # The other template: every kind of call once.
    tools(1)
print(json.dumps(report))
