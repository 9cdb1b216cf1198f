"""The llama-cpp-python build generates real tokens on this CPU (the native build segfaulted in decode)."""

import subprocess
import sys
import textwrap

import pytest


@pytest.mark.integration
def test_gemma_generates_tokens_in_a_fresh_process(gemma_path):
    # A separate process: a crash in decode (the known trap) fails this test instead of killing pytest.
    code = textwrap.dedent(f"""
        import json
        from llama_cpp import Llama
        llm = Llama({str(gemma_path)!r}, n_ctx=256, n_threads=2, chat_format="gemma", verbose=False, seed=1)
        out = llm("Question: What is a health check in software?\\nAnswer:", max_tokens=24, temperature=0)
        chat = llm.create_chat_completion(messages=[{{"role": "user", "content": "Hello"}}], max_tokens=8,
                                          temperature=0)
        llm.reset()  # prefix reuse after another prompt changes Gemma 3's output (see suite.inference.model)
        again = llm("Question: What is a health check in software?\\nAnswer:", max_tokens=24, temperature=0)
        print(json.dumps({{"usage": out["usage"], "text": out["choices"][0]["text"],
                          "again": again["choices"][0]["text"], "chat": chat["choices"][0]["message"]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"generation crashed (exit {proc.returncode}): {proc.stderr[-2000:]}"
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["usage"]["prompt_tokens"] > 5
    assert result["usage"]["completion_tokens"] == 24  # a base model rarely stops early at greedy
    assert result["text"].strip(), "generated text is empty"
    assert result["again"] == result["text"], "greedy decoding is not deterministic"
    assert result["chat"]["role"] == "assistant" and isinstance(result["chat"]["content"], str)
