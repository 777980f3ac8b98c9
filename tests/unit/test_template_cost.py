"""The bound on one rendering's work (template_cost): limits at N-1 / N / N+1, and the spellings.

Nothing here renders a template: the analyser only parses. Each limit is tested where the bound
is exactly at it (CLEAN) and one over (``template.resource``); the real renderer's behaviour on
the exhausting spellings is proven in tests/text/test_attack_templates.py, and every real chat
template staying CLEAN in tests/formats_hf/test_hf_template.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from airlock._analysis import template_cost
from airlock._analysis.template import _environment, analyse_template
from airlock._analysis.template_cost import (
    MAX_DEGREE,
    MAX_EVALUATIONS,
    MAX_MACRO_DEPTH,
    MAX_STEPS,
    bound_template,
)
from airlock.limits import DEFAULT_LIMITS, Limits

CHARS = DEFAULT_LIMITS.max_template_bytes


def rules(text: str, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    return [i.rule for i in analyse_template("t", text, limits)]


def resource(text: str) -> list[str]:
    return [i.message for i in analyse_template("t", text, DEFAULT_LIMITS) if i.rule == "template.resource"]


def bound(text: str) -> template_cost.Bound:
    return bound_template(_environment().parse(text), CHARS)


def loops(*bounds: str, body: str = "") -> str:
    """Nested loops: ``loops('range(3)', 'messages')`` -> for over range(3) around for over messages."""
    head = "".join(f"{{% for v{i} in {b} %}}" for i, b in enumerate(bounds))
    return head + body + "{% endfor %}" * len(bounds)


# ---- steps: loop iterations, macro calls, list items -------------------------------------------


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        (loops(f"range({MAX_STEPS})"), False),
        (loops(f"range({MAX_STEPS + 1})"), True),
        # nested: the outer loop's own iterations count too (10 + 10 * 9999 = 100,000)
        (loops("range(10)", "range(9999)"), False),
        (loops("range(10)", "range(10000)"), True),
        # the bound reached through {% set %} and arithmetic
        (f"{{% set n = {MAX_STEPS} %}}" + loops("range(n)"), False),
        (f"{{% set n = {MAX_STEPS + 1} %}}" + loops("range(n)"), True),
        ("{% set a = 316 %}{% set b = 316 %}" + loops("range(a * b)"), False),
        ("{% set a = 317 %}{% set b = 317 %}" + loops("range(a * b)"), True),
        (loops("range(0, 100000, 1)"), False),
        (loops("range(50000, 50001)"), True),  # |start| + |stop| bounds the length
        # lists built: [x] * n items, |batch and |slice counts
        # (the list [0] is one item; |batch also walks its input: one more)
        (f"{{% set l = [0] * {MAX_STEPS - 1} %}}", False),
        (f"{{% set l = [0] * {MAX_STEPS} %}}", True),
        (f"{{% set l = [1]|batch({MAX_STEPS - 3}, 0) %}}", False),
        (f"{{% set l = [1]|batch({MAX_STEPS - 2}, 0) %}}", True),
        (f"{{% set l = [1]|slice({MAX_STEPS - 2}) %}}", True),
    ],
)
def test_steps_limit(text: str, flagged: bool) -> None:
    assert (rules(text) == ["template.resource"]) is flagged, (text, rules(text))


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        (loops("messages", body="{{ v0.content }}"), False),  # a loop over the caller's data alone
        # 99,999 iterations per message, plus the message loop's own: 100,000 per unit of data
        (loops("messages", "range(99999)"), False),
        (loops("messages", "range(100000)"), True),
        (loops(f"range({MAX_STEPS})", "messages"), False),
        (loops("range(1000000)", "messages"), True),
        (loops("range(1000)", "range(1000)", "messages"), True),
        # a loop over a piece of the enclosing item adds nothing: all pieces together are the data
        (loops("messages", "v0.tool_calls", "v1.arguments|items", body="{{ v2 }}"), False),
    ],
)
def test_a_loop_over_the_callers_data_counts_once_per_unit(text: str, flagged: bool) -> None:
    assert (rules(text) == ["template.resource"]) is flagged, (text, rules(text))


def test_pieces_of_an_enclosing_item_are_amortised_and_other_data_is_not() -> None:
    piece = bound(loops("messages", "v0.tool_calls", "v1.arguments"))
    assert len(piece.steps) == 2  # degree 1: messages, their tool calls and arguments together
    other = bound(loops("messages", "tools", "messages"))
    assert len(other.steps) == 4  # degree 3: the whole of the data inside the whole of it


def test_degree_limit() -> None:
    at = loops(*["messages"] * MAX_DEGREE)
    over = loops(*["messages"] * (MAX_DEGREE + 1))
    assert rules(at) == []
    assert rules(over) == ["template.resource"]
    assert f"a power of D above {MAX_DEGREE}" in resource(over)[0]


# ---- chars: characters built and output ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        (f"{{% set s = 'x' * {CHARS} %}}", False),
        (f"{{% set s = 'x' * {CHARS + 1} %}}", True),
        (f"{{% set s = {CHARS + 1} * 'x' %}}", True),
        # built and output: both count
        (f"{{{{ 'x' * {CHARS // 2} }}}}", False),
        (f"{{{{ 'x' * {CHARS // 2 + 1} }}}}", True),
        (f"{{% set s = 'x'|center({CHARS}) %}}", False),
        (f"{{% set s = 'x'|center({CHARS + 1}) %}}", True),
        (f"{{% set s = 'x'.center({CHARS + 1}) %}}", True),  # (a method-call finding too)
        # '%0Nd' is the format's 10 characters, the argument's 2 (a bound on its digits), and N
        (f"{{% set s = '%0{CHARS - 12}d'|format(1) %}}", False),
        (f"{{% set s = '%0{CHARS - 11}d'|format(1) %}}", True),
        (f"{{% set s = '%0{CHARS - 11}d' % 1 %}}", True),
        (f"{{% set s = '%.{CHARS}f' % 1 %}}", True),  # a precision is a width too
        (f"{{% set s = '%*d' % ({CHARS}, 1) %}}", True),  # '*' takes it from the arguments
        (f"{{% set s = '%(a){CHARS}s' % {{'a': 'x'}} %}}", True),  # a mapping key before the width
        (f"{{% set s = '%(a){CHARS}s'|format(a='x') %}}", True),
        (f"{{% set s = '%{CHARS}ld' % 1 %}}", True),
        (f"{{% set s = '{{:>{CHARS}}}'.format('x') %}}", True),
        (f"{{% set s = '{{:>{{w}}}}'.format('x', w={CHARS}) %}}", True),
        ("{% set s = 'x'|indent(1000) %}", False),
        (f"{{% set s = ('x\\n' * 100)|indent({CHARS // 100}) %}}", True),
        (f"{{% set s = messages|tojson(indent={CHARS}) %}}", True),
        (f"{{% filter center({CHARS + 1}) %}}x{{% endfilter %}}", True),
        (f"{{% set s = lipsum({CHARS // 1600}) %}}", False),
        (f"{{% set s = lipsum({CHARS // 1600 + 1}) %}}", True),
        # a template's own text, output once, never reaches the limit (it is at most as long)
        ("{% for m in messages %}" + "x" * 10_000 + "{% endfor %}", False),
    ],
)
def test_chars_limit(text: str, flagged: bool) -> None:
    assert ("template.resource" in rules(text)) is flagged, (text, rules(text))


def test_the_chars_limit_is_max_template_bytes() -> None:
    text = "{% set s = 'x' * 1000 %}"
    assert rules(text, Limits(max_template_bytes=1000)) == []
    assert rules(text, Limits(max_template_bytes=999)) == ["template.resource"]


# ---- growth inside loops ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        # linear growth (accumulating the messages) is fine; doubling is not, however spelled
        ("{% set ns = namespace(s='') %}{% for m in messages %}{% set ns.s = ns.s ~ m.content %}"
         "{% endfor %}{{ ns.s }}", False),
        ("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}"
         "{% for i in range(ns.n) %}{% endfor %}", False),
        ("{% set ns = namespace(s='x') %}{% for i in range(10) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", False),
        ("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", True),
        ("{% set ns = namespace(s='x') %}{% for m in messages %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", True),
        ("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", True),
        ("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s * 2 %}{% endfor %}", True),
        ("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = [ns.s, ns.s]|join %}{% endfor %}", True),
        ("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s|replace('x', 'xx') %}"
         "{% endfor %}", True),
        ("{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", True),
        ("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set t %}{{ ns.s }}{{ ns.s }}{% endset %}"
         "{% set ns.s = t %}{% endfor %}", True),
        # through another name for the same namespace, a macro, a chain of assignments
        ("{% set a = namespace(s='x') %}{% set b = a %}{% for i in range(100) %}{% set b.s = a.s ~ a.s %}"
         "{% endfor %}", True),
        ("{% set ns = namespace(s='x') %}{% macro grow() %}{% set ns.s = ns.s ~ ns.s %}{% endmacro %}"
         "{% for i in range(100) %}{{ grow() }}{% endfor %}", True),
        ("{% set ns = namespace(a='x', b='x', c='x') %}{% for i in range(100) %}{% set ns.a = ns.b %}"
         "{% set ns.b = ns.c %}{% set ns.c = ns.c ~ ns.a %}{% endfor %}", True),
        # a number that doubles is harmless until it sizes something
        ("{% set ns = namespace(n=1) %}{% for i in range(100) %}{% set ns.n = ns.n * 2 %}{% endfor %}", False),
        ("{% set ns = namespace(n=1) %}{% for i in range(100) %}{% set ns.n = ns.n * 2 %}{% endfor %}"
         "{% for i in range(ns.n) %}{% endfor %}", True),
        # a fresh namespace in every call does not accumulate across calls
        ("{% macro m(x) %}{% set c = namespace(n=0) %}{% for y in x %}{% set c.n = c.n + 1 %}{% endfor %}"
         "{{ c.n }}{% endmacro %}{% for m2 in messages %}{{ m(messages) }}{% endfor %}", False),
    ],
)  # fmt: skip
def test_growth_in_loops(text: str, flagged: bool) -> None:
    assert ("template.resource" in rules(text)) is flagged, (text, rules(text))


# ---- recursion -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        # descends into the caller's data: bounded by the data's depth, however it branches
        ("{% macro f(x) %}{{ f(x.a) }}{{ f(x.b) }}{% endmacro %}{{ f(tools) }}", False),
        ("{% macro f(s) %}{% for t in s.type %}{{ f({'type': t}) }}{% endfor %}{% endmacro %}{{ f(tools) }}", False),
        ("{% macro f(x, k=1) %}{% for key, v in x|items %}{{ f(v, k) }}{% endfor %}{% endmacro %}{{ f(tools) }}",
         False),
        # one call that does not descend: a chain that ends at the recursion limit
        ("{% macro f(x) %}{{ f(x|items) }}{% endmacro %}{{ f(tools) }}", False),
        # branching without descending: exponential in the depth
        ("{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}", True),
        ("{% macro f(x) %}{{ f(x) }}{{ f(x) }}{% endmacro %}{{ f(tools) }}", True),
        ("{% macro f(x) %}{{ f([x]) }}{{ f([x]) }}{% endmacro %}{{ f(tools) }}", True),
        # {'k': v} wraps a piece back to the depth of x: no progress, and it branches
        ("{% macro f(x) %}{% for k, v in x|items %}{{ f({'k': v}) }}{% endfor %}{% endmacro %}{{ f(tools) }}",
         True),
        ("{% macro f(x) %}{% for i in range(2) %}{{ f(x) }}{% endfor %}{% endmacro %}{{ f(tools) }}", True),
        ("{% macro f(x, n) %}{% if n %}{{ f(x|list, n - 1) }}{{ f(x|list, n - 1) }}{% endif %}{% endmacro %}"
         "{{ f(tools, 40) }}", True),
        ("{% macro f(x) %}{% set y = [x, x] %}{{ f(y[0]) }}{{ f(y[1]) }}{% endmacro %}{{ f(tools) }}", True),
        # loop(): into a piece of the item, or not
        ("{% for m in ms recursive %}{{ loop(m.children) }}{% endfor %}", False),
        ("{% for m in ms recursive %}{{ loop(m) }}{% endfor %}", False),
        ("{% for m in ms recursive %}{{ loop(ms) }}{% endfor %}", True),
        ("{% for m in ms recursive %}{{ loop([m]) }}{% endfor %}", True),
        ("{% for m in [1, 2] recursive %}{% if loop.depth < 40 %}{{ loop([1, 2]) }}{% endif %}{% endfor %}", True),
    ],
)  # fmt: skip
def test_recursion(text: str, flagged: bool) -> None:
    assert ("template.resource" in rules(text)) is flagged, (text, rules(text))


def test_the_chain_bound_is_deeper_than_the_real_renderer_recurses() -> None:
    """MAX_MACRO_DEPTH bounds a chain of macro calls: jinja cannot nest that many at Python's limit."""
    code = (
        "import sys, jinja2.sandbox\n"
        "sys.setrecursionlimit(1000)\n"
        "env = jinja2.sandbox.ImmutableSandboxedEnvironment()\n"
        "t = env.from_string('{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(N) }}')\n"
        "for n in (MAX_MACRO_DEPTH // 4, MAX_MACRO_DEPTH):\n"
        "    try:\n        t.render(N=n)\n        print(n, 'rendered')\n"
        "    except RecursionError:\n        print(n, 'RecursionError')\n"
    ).replace("MAX_MACRO_DEPTH", str(MAX_MACRO_DEPTH))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split("\n")[:2] == [
        f"{MAX_MACRO_DEPTH // 4} rendered",  # not vacuous: a shallower chain renders
        f"{MAX_MACRO_DEPTH} RecursionError",
    ], done


# ---- fail closed -----------------------------------------------------------------------------------


def test_a_template_too_complex_to_bound_is_suspicious() -> None:
    # nested loops each growing a chain of namespace attributes: every probing round per level
    chain = "".join(f"{{% set ns.a{i} = ns.a{i} ~ ns.a{i + 1} %}}" for i in range(10))
    init = ", ".join(f"a{i}='x'" for i in range(11))
    text = f"{{% set ns = namespace({init}) %}}" + loops(*["messages"] * 6, body=chain)
    found = resource(text)
    assert any(f"too complex to bound within {MAX_EVALUATIONS}" in m for m in found), found


def test_the_bound_reports_each_limit_once_with_its_line() -> None:
    text = "\n".join([loops("range(1000)", "range(1000)"), "{{ 'x' * 10000000 }}", "{{ 'y' * 10000000 }}"])
    found = analyse_template("t", text, DEFAULT_LIMITS)
    assert [(i.rule, i.severity.name) for i in found] == [("template.resource", "SUSPICIOUS")] * 2
    assert found[0].message.endswith("(limit 100,000 per unit of D) (resource exhaustion) (line 1)")
    assert found[1].message.startswith(
        "template t: repetition '*' brings one rendering to 10,000,001 characters"
    )
    assert found[1].message.endswith("(line 2)")


# ---- numbers read out of the caller's data, mutual recursion, map with a filter -------------------


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        # a length of the data is bounded by its size; a number in it is not (nor in the model's
        # metadata, which runtimes pass the same way: bos_token, ...)
        (loops("range(messages|length)"), False),
        (loops("range(messages|length * 1000)"), False),
        (loops("range(m.count)"), True),
        (loops("range(m.count|int)"), True),
        (loops("range(bos_token|int)"), True),
        ("{{ 'x' * m.count }}", True),
        ("{{ m.content * 2 }}", False),
        ("{{ m.content * m.count }}", True),
        ("{{ 'x'|center(m.width) }}", True),
        ("{{ '%*s' % (m.width, 'x') }}", True),
        ("{{ [1]|batch(m.count, 0)|list }}", True),
        ("{% set n = m.count * 2 %}" + loops("range(n)"), True),
        ("{% set n = 10 / m.x %}" + loops("range(n|int)"), True),
    ],
)
def test_numbers_read_out_of_the_data_have_any_magnitude(text: str, flagged: bool) -> None:
    assert ("template.resource" in rules(text)) is flagged, (text, rules(text))


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("{% macro f(x) %}{{ g(x.a) }}{% endmacro %}{% macro g(y) %}{{ f(y.b) }}{{ f(y.c) }}{% endmacro %}"
         "{{ f(tools) }}", False),
        ("{% macro f(n) %}{{ g(n) }}{{ g(n) }}{% endmacro %}{% macro g(n) %}{% if n > 0 %}{{ f(n - 1) }}"
         "{% endif %}{% endmacro %}{{ f(40) }}", True),
        ("{% macro f(x) %}{{ g(x) }}{% endmacro %}{% macro g(y) %}{{ f(y) }}{% endmacro %}{{ f(tools) }}", True),
        # map applies the named filter, with its arguments, to every item
        ("{{ messages|map('center', 100)|list }}", False),
        ("{{ [1, 2]|map('center', 1000000000)|list }}", True),
        ("{{ messages|map('format', 'x')|list }}", False),
        ("{{ ['%0999999999d']|map('format', 1)|list }}", True),
    ],
)  # fmt: skip
def test_mutual_recursion_and_filters_applied_by_map(text: str, flagged: bool) -> None:
    assert ("template.resource" in rules(text)) is flagged, (text, rules(text))


@pytest.mark.parametrize(
    ("text", "degree"),
    [
        # pieces of one item: the first loop over them is amortised, a second one nested in it is not
        (loops("messages", "v0.content"), 1),
        (loops("messages", "v0.content", "v0.content"), 2),
        (loops("messages", "v0.tool_calls", "v1.arguments"), 1),
        # a recursive loop visits pieces below its items: at most the data again
        ("{% for m in [messages] recursive %}{{ loop(m) }}{% endfor %}", 1),
    ],
)
def test_amortised_loops(text: str, degree: int) -> None:
    assert len(bound(text).steps) - 1 == degree, bound(text).steps


# ---- the shapes of larger public templates (llama.cpp's models/templates, cut down) --------------

#: recursion through (key, value) pairs and a list of parameters (Gemma 4), counters in nested
#: loops and a loop over the messages inside a loop over them (Command R7B), ranges counted down
#: from a message's index (DeepSeek V3.2, Kimi K2)
SHAPES = {
    "gemma4": "{%- macro format_argument(argument, escape_keys=True) -%}\n    {%- if argument is string -%}{{- '<|\"|>' + argument + '<|\"|>' -}}\n    {%- elif argument is mapping -%}{{- '{' -}}\n        {%- set ns = namespace(found_first=false) -%}\n        {%- for key, value in argument | dictsort -%}\n            {%- if ns.found_first %},{% endif -%}{%- set ns.found_first = true -%}\n            {{- key -}}:{{- format_argument(value, escape_keys=escape_keys) -}}\n        {%- endfor -%}{{- '}' -}}\n    {%- elif argument is sequence -%}{{- '[' -}}\n        {%- for item in argument -%}{{- format_argument(item, escape_keys=escape_keys) -}}{%- if not loop.last %},{% endif -%}{%- endfor -%}{{- ']' -}}\n    {%- else -%}{{- argument -}}{%- endif -%}\n{%- endmacro -%}\n{%- macro format_parameters(properties, required) -%}\n    {%- for key, value in properties | dictsort -%}\n        {%- set value_type = value['type'] if value['type'] is string else value['type'][0] -%}\n        {%- if value_type | upper == 'OBJECT' -%}\n            {%- if value['properties'] is defined -%}{{- format_parameters(value['properties'], value['required'] | default([])) -}}\n            {%- elif value is mapping -%}{{- format_parameters(value, value['required'] | default([])) -}}{%- endif -%}\n        {%- elif value_type | upper == 'ARRAY' -%}\n            {%- for item_key, item_value in value['items'] | dictsort -%}\n                {%- if item_key == 'properties' -%}{{- format_parameters(item_value, value['items']['required'] | default([])) -}}\n                {%- elif item_key == 'type' -%}{{ format_argument(item_value | map('upper') | list) }}\n                {%- else -%}{{ item_key }}:{{ format_argument(item_value) }}{%- endif -%}\n            {%- endfor -%}\n        {%- endif -%}\n        type:<|\"|>{{ value_type | upper }}<|\"|>}\n    {%- endfor -%}\n{%- endmacro -%}\n{%- macro strip_thinking(text) -%}\n    {%- set ns = namespace(result='') -%}\n    {%- for part in text.split('<channel|>') -%}\n        {%- if '<|channel>' in part -%}{%- set ns.result = ns.result + part.split('<|channel>')[0] -%}\n        {%- else -%}{%- set ns.result = ns.result + part -%}{%- endif -%}\n    {%- endfor -%}\n    {{- ns.result | trim -}}\n{%- endmacro -%}\n{%- set ns = namespace(prev_message_type=None) -%}\n{%- for tool in tools %}{{- format_parameters(tool['function']['parameters']['properties'], tool['function']['parameters']['required']) -}}{%- endfor %}\n{%- for message in messages -%}\n    {%- for tool_call in message['tool_calls'] -%}\n        {%- for key, value in tool_call['function']['arguments'] | dictsort -%}{{- key -}}:{{- format_argument(value, escape_keys=False) -}}{%- endfor -%}\n    {%- endfor -%}\n    {%- if message['content'] is string -%}{{- strip_thinking(message['content']) -}}\n    {%- else -%}{%- for item in message['content'] -%}{{- strip_thinking(item['text']) -}}{%- endfor -%}{%- endif -%}\n{%- endfor -%}\n",
    "cohere": '{%- macro tool_call_id_to_int(messages, tool_call_id) %}\n{%- set counter = namespace(value=0) %}\n{%- set tool_call_id_seen = namespace(value=false) %}\n{%- for msg in messages %}\n    {%- if msg.tool_calls %}\n        {%- for tool_call in msg.tool_calls %}\n            {%- if tool_call.id == tool_call_id and not tool_call_id_seen.value -%}\n                {{ counter.value }}\n                {%- set tool_call_id_seen.value = true %}\n            {%- endif %}\n            {%- set counter.value = counter.value + 1 %}\n        {%- endfor %}\n    {%- endif %}\n{%- endfor %}\n{%- endmacro %}\n{%- macro format_tool_message(messages, tool_msg) -%}\n    {"tool_call_id": "{{ tool_call_id_to_int(messages, tool_msg.tool_call_id) }}", "results": {"0": {{ tool_msg.content|tojson }}}}\n{%- endmacro -%}\n{%- set tool_idx = namespace(value=0) %}\n{%- set tool_ids_seen = namespace(value=[]) %}\n{%- for message in messages %}\n    {%- if message.role|lower == \'assistant\' %}\n    {% for tc in message.tool_calls %}{"tool_call_id": "{{ tool_idx.value }}", "parameters": {{ tc[\'function\'][\'arguments\']|tojson }}}{% set tool_idx.value = tool_idx.value + 1 %}{% endfor %}\n    {% elif message.role|lower == \'tool\' and message.tool_call_id not in tool_ids_seen.value %}\n{{ format_tool_message(messages, message) }}\n    {%- for msg in messages[loop.index0 + 1:] %}\n        {%- if msg.role|lower == \'tool\' %},\n{{ format_tool_message(messages, msg) }}\n            {%- set tool_ids_seen.value = tool_ids_seen.value + [msg.tool_call_id] %}\n        {%- else %}{%- break %}{%- endif %}\n    {%- endfor %}\n    {%- endif %}\n{%- endfor %}\n',
    "deepseek_kimi": "{%- if not tools -%}\n  {%- set tools = namespace(value=[]) -%}\n  {%- for message in messages -%}{%- if message.get('tools') -%}{%- for tool in message.tools -%}{%- set _ = tools.value.append(tool.function if tool.get('function') else tool) -%}{%- endfor -%}{%- endif -%}{%- endfor -%}\n  {%- set tools = tools.value -%}\n{%- endif -%}\n{%- set ns = namespace(last=-1) -%}\n{%- for idx in range(messages|length-1, -1, -1) -%}{%- if messages[idx]['role'] == 'assistant' -%}{%- set ns.last = idx -%}{%- endif -%}{%- endfor -%}\n{%- set hist_msgs = messages[:ns.last+1] -%}\n{%- for message in messages -%}\n  {%- set msg_index = loop.index0 -%}\n  {%- if message.role == \"tool\" -%}\n    {%- set prev = namespace(value=-1) -%}\n    {%- for i in range(msg_index - 1, -1, -1) -%}{%- if messages[i].role != \"tool\" and prev.value == -1 -%}{%- set prev.value = i -%}{%- endif -%}{%- endfor -%}\n    {%- set order = msg_index - prev.value -%}\n    {%- if order == (messages[prev.value].get('tool_calls', []) | length) -%}</function_results>{%- endif -%}\n  {%- endif -%}\n  {%- for tool in tools %}{{ tool | tojson(ensure_ascii=False) }}{% endfor %}\n{%- endfor -%}\n",
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shapes_of_public_templates_are_bounded(name: str) -> None:
    # (DeepSeek's list.append is a template.method-call of its own, not a resource finding)
    assert resource(SHAPES[name]) == []
    assert bound(SHAPES[name]).findings == []


def test_mutual_recursion_is_named_as_such() -> None:
    text = (
        "{% macro f(n) %}{{ g(n) }}{% endmacro %}{% macro g(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}"
        "{% endif %}{% endmacro %}{{ f(3) }}"
    )
    found = resource(text)
    assert found == [
        "template t: macros f, g call each other with arguments that are not pieces of the caller's data "
        "(no bounded depth) (resource exhaustion) (line 1)"
    ]


@pytest.mark.parametrize(("work", "flagged"), [(100, False), (1000, True)])
def test_a_chain_that_does_not_descend_costs_its_depth(work: int, flagged: bool) -> None:
    """One self-call that does not descend: the body may run MAX_MACRO_DEPTH times per item."""
    text = (
        f"{{% macro f(x) %}}{{% for i in range({work}) %}}{{% endfor %}}{{{{ f(x|items) }}}}{{% endmacro %}}"
        "{{ f(tools) }}"
    )
    assert ("template.resource" in rules(text)) is flagged
