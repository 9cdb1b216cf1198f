"""Issue 27 without a server: chat prompts that drop nothing, tool plans and grammars, the call parser,
schema grammars, grammar-last sampling and the field policy (the model's vocabulary only, no weights)."""

from __future__ import annotations

import ctypes
import json

import jsonschema
import llama_cpp
import numpy as np
import pytest
from llama_cpp import llama_chat_format

from suite.inference import openai_surface as oai
from suite.inference.chat_prompt import ChatTemplate, PromptError, chat_formatter
from suite.inference.request_types import ChatCompletionRequest, CompletionRequest
from suite.inference.sampling import SamplingParams, build_sampler, free_sampler, grammar_sampler
from suite.inference.schema_grammar import MAX_REPEAT, SchemaError, check_schema, schema_to_grammar
from suite.inference.tool_calls import TRIGGER, CallScanner, ToolError, plan_tools

READ_FILE = {"type": "function", "function": {
    "name": "read_file", "description": "Read a text file inside the sandbox.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}
LIST_DIR = {"type": "function", "function": {
    "name": "list_directory", "parameters": {"type": "object", "properties": {
        "path": {"type": "string"}, "include_hidden": {"type": "boolean"}}}}}
# a Hermes-style template (the Qwen 2.5 family's shape): renders tools itself, calls as <tool_call> blocks
HERMES = """{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools>
Call a function as <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}{%- for m in messages %}{% if m.role == 'user' or (m.role == 'assistant' and not m.tool_calls) %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% elif m.role == 'assistant' %}<|im_start|>assistant
{% for c in m.tool_calls %}<tool_call>
{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% endif %}{% endfor %}<|im_start|>assistant
"""


@pytest.fixture(scope="module")
def vocab_model(gemma_path):
    """The bundled GGUF's vocabulary (no weights): tokenizer and grammar checks against the real vocab."""
    return llama_cpp.Llama(str(gemma_path), vocab_only=True, verbose=False)


def gemma() -> ChatTemplate:
    return ChatTemplate(chat_formatter("gemma"), "gemma")


# -- chat prompts -----------------------------------------------------------------------------------
def test_gemma_puts_the_system_text_at_the_start_of_the_first_user_turn():
    """llama-cpp-python's gemma format drops the system message; the template keeps it where Gemma's
    own template puts it (first user turn, blank line after), developer messages too, in order."""
    rendered = gemma().render([{"role": "system", "content": "Be brief."},
                               {"role": "developer", "content": "Answer in French."},
                               {"role": "user", "content": "Hi"}])
    assert rendered.prompt == ("<start_of_turn>user\nBe brief.\n\nAnswer in French.\n\nHi<end_of_turn>\n"
                               "<start_of_turn>model\n")
    assert "Be brief." not in llama_chat_format.format_gemma([{"role": "system", "content": "Be brief."},
                                                              {"role": "user", "content": "Hi"}]).prompt
    # a system message alone still reaches the prompt (as a user turn)
    assert "Only system." in gemma().render([{"role": "system", "content": "Only system."}]).prompt


def test_a_format_with_a_system_role_keeps_it_there():
    chatml = ChatTemplate(chat_formatter("chatml"), "chatml")
    assert chatml.keeps_system and not gemma().keeps_system
    prompt = chatml.render([{"role": "system", "content": "S1"}, {"role": "user", "content": "U"},
                            {"role": "system", "content": "S2"}]).prompt
    assert prompt.startswith("<|im_start|>system\nS1\n\nS2<|im_end|>")


def test_content_parts_are_text_and_other_parts_are_refused():
    prompt = gemma().render([{"role": "user", "content": [{"type": "text", "text": "one"},
                                                          {"type": "text", "text": "two"}]}]).prompt
    assert "one\ntwo" in prompt
    with pytest.raises(PromptError, match=r"messages\[0\].content\[1\].*image_url"):
        gemma().render([{"role": "user", "content": [{"type": "text", "text": "x"},
                                                     {"type": "image_url", "image_url": {"url": "http://x"}}]}])


def test_a_message_the_format_would_drop_is_refused_not_dropped():
    def drops_assistant(*, messages, **_):
        text = "".join(m["content"] for m in messages if m["role"] != "assistant")
        return llama_chat_format.ChatFormatterResponse(prompt=text, stop=None)

    lossy = ChatTemplate(drops_assistant, "lossy")
    with pytest.raises(PromptError, match="'lossy' cannot express a message of role 'assistant'"):
        lossy.render([{"role": "user", "content": "u"}, {"role": "assistant", "content": "earlier answer"},
                      {"role": "user", "content": "u2"}])


def test_generic_tool_format_lists_tools_and_writes_calls_and_results_back():
    plan = plan_tools([READ_FILE], "auto", None, None, None)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Read a.txt"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "read_file", "arguments": '{"path": "a.txt"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "alpha"},
                {"role": "tool", "tool_call_id": "call_2", "content": "beta"}]
    prompt = gemma().render(messages, plan).prompt
    assert prompt.startswith("<start_of_turn>user\nBe brief.\n\nYou can call these functions")
    assert json.dumps(READ_FILE["function"]) in prompt
    assert ('<start_of_turn>model\n<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n'
            "</tool_call><end_of_turn>") in prompt
    # consecutive results share one user turn, so turns still alternate
    assert ("<start_of_turn>user\n<tool_response>\nalpha\n</tool_response>\n<tool_response>\nbeta\n"
            "</tool_response><end_of_turn>\n<start_of_turn>model\n") in prompt
    # tool_choice none: the tools are not offered at all
    none = plan_tools([READ_FILE], "none", None, None, None)
    assert "You can call" not in gemma().render(messages[:2], none).prompt


def test_a_hermes_style_jinja_template_renders_the_tools_and_tool_turns_itself():
    formatter = llama_chat_format.Jinja2ChatFormatter(HERMES, eos_token="<|im_end|>", bos_token="")
    template = ChatTemplate(formatter, "hermes", HERMES)
    assert template.native_tools and template.keeps_system
    plan = plan_tools([READ_FILE], "required", None, None, None)
    prompt = template.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Read a.txt"},
                              {"role": "assistant", "content": "", "tool_calls": [
                                  {"id": "c1", "type": "function",
                                   "function": {"name": "read_file", "arguments": '{"path": "a.txt"}'}}]},
                              {"role": "tool", "tool_call_id": "c1", "content": "alpha"}], plan).prompt
    assert "# Tools" in prompt and '"name": "read_file"' in prompt and "You can call" not in prompt
    assert '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n</tool_call>' in prompt
    assert "<tool_response>\nalpha\n</tool_response>" in prompt


def test_the_serial_formatter_renders_through_the_template():
    formatter = gemma().formatter_keeping_messages()
    out = formatter(messages=[{"role": "system", "content": "Sys."}, {"role": "user", "content": "Hi"}])
    assert out.prompt.startswith("<start_of_turn>user\nSys.\n\nHi") and out.stop == ["<end_of_turn>\n"]


# -- tools ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tools, choice, message", [
    ([{"type": "function", "function": {"name": "bad name"}}], None, "letters, digits"),
    ([READ_FILE, READ_FILE], None, "two tools are named 'read_file'"),
    ([READ_FILE], {"type": "function", "function": {"name": "nope"}}, "names 'nope'"),
    (None, "required", "needs tools"),
    ([{"type": "retrieval"}], None, "only tools of type 'function'"),
    ([{"type": "function", "function": {"name": "f", "strict": True, "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}}}], None, "'minimum' cannot be enforced"),
])
def test_unusable_tools_are_refused_with_what_is_wrong(tools, choice, message):
    with pytest.raises(ToolError, match=message):
        plan_tools(tools, choice, None, None, None)


def test_tool_plans_and_their_grammars():
    auto = plan_tools([READ_FILE, LIST_DIR], None, None, None, None)
    assert (auto.choice, auto.lazy, auto.parallel) == ("auto", True, True)
    assert '"\\"read_file\\""' in auto.grammar and '"\\"list_directory\\""' in auto.grammar
    named = plan_tools([READ_FILE, LIST_DIR], {"type": "function", "function": {"name": "read_file"}}, None, None, None)
    assert (named.choice, named.forced, named.lazy, named.parallel) == ("function", "read_file", False, False)
    assert "list_directory" not in named.grammar
    assert plan_tools([READ_FILE], "required", None, None, False).grammar.count("root ::= tc-block\n") == 1
    legacy = plan_tools(None, None, [READ_FILE["function"]], {"name": "read_file"}, None)
    assert legacy.legacy and legacy.forced == "read_file"
    with pytest.raises(ToolError, match="not both"):
        plan_tools([READ_FILE], None, [READ_FILE["function"]], None, None)


def test_tools_with_definitions_of_the_same_name_keep_them_apart(vocab_model):
    def tool(name, item_type):
        return {"type": "function", "function": {"name": name, "parameters": {
            "type": "object", "properties": {"x": {"$ref": "#/$defs/Item"}}, "required": ["x"],
            "$defs": {"Item": {"type": item_type}}}}}

    plan = plan_tools([tool("a", "integer"), tool("b", "boolean")], "required", None, None, False)
    assert "tc-call-0-arguments-x ::= integer" in plan.grammar  # each tool's own Item
    assert "tc-call-1-arguments-x ::= boolean" in plan.grammar
    chain = build_sampler(SamplingParams(temperature=0, grammar=plan.grammar), vocab_model._model.vocab,
                          vocab_model.n_vocab())
    free_sampler(chain)


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_the_call_scanner_reads_the_same_whatever_the_pieces(step):
    text = ('Sure.\n<tool_call>\n{"name": "read_file", "arguments": {"path": "a\\"}b.txt"}}\n</tool_call>\n'
            '<tool_call>{"name":"list_directory","arguments":{}}</tool_call>\n')
    scanner, deltas = CallScanner(), []
    for i in range(0, len(text), step):
        deltas += scanner.feed(text[i:i + step])
    deltas += scanner.finish()
    assert "".join(scanner.content) == "Sure."
    assert [(c.name, "".join(c.arguments)) for c in scanner.calls] == [
        ("read_file", '{"path": "a\\"}b.txt"}'), ("list_directory", "{}")]
    assert [d[0] for d in deltas if d[0] == "call"] == ["call", "call"]
    assert all(c.id.startswith("call_") and len(c.id) == 29 for c in scanner.calls)


def test_the_call_scanner_keeps_text_that_is_not_a_call():
    scanner = CallScanner()
    out = scanner.feed("Tags like <tool") + scanner.feed("s> and <tool_call>not json</tool_call> stay.") + scanner.finish()
    assert "".join(d[1] for d in out) == "Tags like <tools> and <tool_call>not json</tool_call> stay."
    assert not scanner.calls
    cut = CallScanner()
    cut.feed("<tool_call>\n{\"na")
    assert "".join(d[1] for d in cut.finish()) == '<tool_call>\n{"na'  # cut before its name: content


# -- schemas ----------------------------------------------------------------------------------------
def test_strict_schemas_refuse_what_a_grammar_cannot_enforce():
    with pytest.raises(SchemaError, match=r"schema.properties.age: keyword 'minimum'"):
        check_schema({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}, strict=True)
    with pytest.raises(SchemaError, match="format 'email'"):
        check_schema({"type": "string", "format": "email"}, strict=True)
    check_schema({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}, strict=False)
    with pytest.raises(SchemaError, match=f"from 0 to {MAX_REPEAT}"):
        check_schema({"type": "array", "maxItems": 10**7}, strict=False)
    with pytest.raises(SchemaError, match="repeats more than"):
        check_schema({"type": "string", "pattern": "^a{1,100000}$"}, strict=False)


def test_schema_grammars_parse_and_strings_hold_no_raw_control_characters(vocab_model):
    grammar = schema_to_grammar({"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                                   "tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
                                 "required": ["name"], "additionalProperties": False}, strict=True)
    assert grammar.startswith("char ::= [^\"\\\\\\x7F\\x00-\\x1F]") and "\nroot ::=" in grammar
    chain = build_sampler(SamplingParams(temperature=0, grammar=grammar), vocab_model._model.vocab, vocab_model.n_vocab())
    free_sampler(chain)


# -- grammar-last sampling ----------------------------------------------------------------------------
def sample(chain, logits: np.ndarray) -> int:
    n = len(logits)
    data = (llama_cpp.llama_token_data * n)()
    view = np.ctypeslib.as_array(ctypes.cast(data, ctypes.POINTER(ctypes.c_uint8)), (n * 12,)).view(
        np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
    view["id"], view["logit"], view["p"] = np.arange(n), logits, 0
    arr = llama_cpp.llama_token_data_array(data=data, size=n, selected=-1, sorted=False)
    llama_cpp.llama_sampler_apply(chain, ctypes.byref(arr))
    token = data[arr.selected].id
    llama_cpp.llama_sampler_accept(chain, token)
    return token


def full_check_chain(grammar: str, vocab):
    """llama-cpp-python's order: the grammar checks every token, then greedy picks."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root"))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    return chain


@pytest.mark.integration
def test_grammar_last_picks_what_a_full_check_picks_and_only_what_the_grammar_allows(vocab_model):
    """Greedy with the grammar checking only the picked token (and the 256 most likely when it refuses
    it) picks exactly what llama.cpp's check of every token picks; the text is a valid call."""
    vocab, n = vocab_model._model.vocab, vocab_model.n_vocab()
    schema = READ_FILE["function"]["parameters"]
    grammar = plan_tools([READ_FILE], "required", None, None, False).grammar
    rng = np.random.default_rng(7)
    ours = build_sampler(SamplingParams(temperature=0, grammar=grammar), vocab, n)
    reference = full_check_chain(grammar, vocab)
    wish = '<tool_call>{"name": "read_file", "arguments": {"path": "docs/a.txt"}}</tool_call>'
    stop = vocab_model.token_eos()  # what the grammar allows only once the call is written
    picked: list[int] = []
    try:
        for step in range(60):
            logits = rng.standard_normal(n).astype(np.float32)
            said = vocab_model.detokenize(picked).decode(errors="replace")
            if wish.startswith(said) and len(said) < len(wish):  # the "model" wants the call...
                logits[vocab_model.tokenize(wish[len(said):].encode(), add_bos=False)[0]] += 7
            if step % 2:  # ...but more often to stop: refused, picked again among the likely ones
                logits[stop] += 9
            token = sample(ours, logits)
            assert token == sample(reference, logits), step
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            picked.append(token)
    finally:
        free_sampler(ours)
        free_sampler(reference)
    text = vocab_model.detokenize(picked).decode()
    scanner = CallScanner()
    scanner.feed(text)
    scanner.finish()
    (call,) = scanner.calls
    assert call.name == "read_file"
    jsonschema.validate(json.loads("".join(call.arguments)), schema)


def test_the_lazy_trigger_constrains_from_the_opening_tag_and_never_feeds_the_grammar_junk(vocab_model):
    """auto: free text until the output ends with <tool_call>, then only a call; a token that closes
    the tag and goes on (here ">.") leaves the output unconstrained instead of aborting llama.cpp."""
    vocab, n = vocab_model._model.vocab, vocab_model.n_vocab()
    grammar = plan_tools([READ_FILE], "auto", None, None, None).grammar
    params = SamplingParams(temperature=0, grammar=grammar, grammar_triggers=[TRIGGER])

    def allowed_after(text: bytes) -> int:
        sampler = grammar_sampler(params, vocab)
        try:
            for token in vocab_model.tokenize(text, add_bos=False, special=False):
                llama_cpp.llama_sampler_accept(sampler, token)
            data = (llama_cpp.llama_token_data * n)()
            for i in range(n):
                data[i].id, data[i].logit = i, 0.0
            arr = llama_cpp.llama_token_data_array(data=data, size=n, selected=-1, sorted=False)
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(arr))
            return sum(1 for i in range(n) if data[i].logit != float("-inf"))
        finally:
            free_sampler(sampler)

    assert allowed_after(b"Let me look: 3 < 4, <b>bold</b>") == n  # still free
    constrained = allowed_after(b"Let me look.\n<tool_call>")
    assert 0 < constrained < 1000  # whitespace pieces or the opening brace of the call
    assert allowed_after(b"Let me look.\n<tool_call>.") == n  # never triggered: free, and no abort


# -- request fields ----------------------------------------------------------------------------------
def test_fields_that_change_nothing_are_accepted_and_the_rest_refused_by_name():
    base = {"messages": [{"role": "user", "content": "hi"}]}
    oai.check_fields(ChatCompletionRequest(**base, store=False, service_tier="auto", metadata={},
                                           safety_identifier="u1", prompt_cache_key="k", modalities=["text"]))
    for extra, name in (({"audio": {"voice": "alloy"}}, "audio"), ({"store": True}, "store"),
                        ({"service_tier": "flex"}, "service_tier"), ({"modalities": ["text", "audio"]}, "modalities"),
                        ({"stream": True, "stream_options": {"include_usage": True, "x": 1}}, "stream_options.x")):
        with pytest.raises(Exception, match=f"'?{name}"):
            oai.check_fields(ChatCompletionRequest(**base, **extra))
    with pytest.raises(Exception, match="stream_options is only allowed with stream"):
        oai.check_fields(ChatCompletionRequest(**base, stream_options={"include_usage": True}))
    with pytest.raises(Exception, match="best_of must equal n"):
        oai.check_fields(CompletionRequest(prompt="x", n=2, best_of=3))
    with pytest.raises(Exception, match="echo with logprobs"):
        oai.check_fields(CompletionRequest(prompt="x", echo=True, logprobs=1))


@pytest.mark.parametrize("body", [
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$defs": [1], "type": "object"}}}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": 3}}}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "https://x.invalid/s"}}}]},
    {"tools": [READ_FILE], "tool_choice": {"type": "function", "function": "read_file"}},
    {"tools": [READ_FILE], "tool_choice": {"type": "code_interpreter"}},
    {"messages": [{"role": "assistant", "tool_calls": ["x"]}]},
    {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": 3}}]}]},
    {"messages": [{"role": "assistant", "function_call": "read_file"}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
    {"response_format": {"type": "json_schema", "json_schema": {"schema": "not a schema"}}},
    {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "array", "items": 7}}}},
    {"response_format": {"type": "json_object", "schema": {"$ref": "#/nowhere"}}},
    {"response_format": {"type": "xml"}},
])
def test_hostile_shapes_are_400s_not_500s(vocab_model, body):
    """What a fuzzer or a careless client puts in tools, tool_choice, tool_calls, content parts or
    response_format is read (a meaningless ``$defs`` is ignored) or a 400 from build_request (an
    ApiError), never another exception."""
    import random

    from suite.web import ApiError

    request = ChatCompletionRequest(**{"messages": [{"role": "user", "content": "hi"}], **body})
    try:
        oai.build_request(vocab_model, request, 512, random.Random(0), gemma()).release()
    except ApiError as exc:
        assert exc.status == 400 and exc.message
