"""Jinja templates from model metadata, analysed without rendering.

A chat template is code: llama-cpp-python rendered GGUF ``tokenizer.chat_template`` with a plain
``jinja2.Environment`` (CVE-2024-34359), where ``().__class__.__base__.__subclasses__()`` or
``cycler.__init__.__globals__.os`` reach Python and run commands. airlock never renders, compiles or
runs a template: it parses it to jinja2's AST (``Environment.parse`` only lexes and parses) and
walks the tree.

Templates are judged by an ALLOWLIST of the constructs real chat templates use: loops,
conditionals, ``set``/macros/``namespace``, item and public attribute access on the variables the
runtime passes (``messages``, ``tools``, ``add_generation_prompt``, special tokens ...), the filters
in :data:`ALLOWED_FILTERS`, the tests in :data:`ALLOWED_TESTS` and the string/list/dict methods in
:data:`SAFE_METHODS`.

* MALICIOUS ``template.ssti``: a Python internal (``__class__``, ``__globals__``, ``gi_frame`` ...)
  reached by ``.attr``, ``['attr']``, ``|attr``, an attribute argument or a key built from
  constants; a Jinja global that is a Python object (``lipsum``, ``cycler``, ``joiner``,
  ``namespace``, ``range``, ``dict``) used other than by calling it; a call of anything but a
  global, a macro of the template or an allowed method (a variable, an item, a filter's result);
  an attribute name, filter or test chosen by data (``map(attribute=x)``, ``map(f)``,
  ``select(t)`` with a variable): the runtime fills variables from model metadata, so such
  names reach any attribute; the SSTI vocabulary (``self``, ``config``, ``request``, ``os`` ...).
* SUSPICIOUS: anything else outside the allowlist (``template.construct``,
  ``template.unknown-filter``, ``template.unknown-test``, ``template.unknown-call``,
  ``template.method-call``), computed keys that build strings, ``include``/``import``/``extends``,
  resource exhaustion (``**``, huge ``range``), a private (``_x``) attribute.
* ERROR ``template.parse``: the template does not parse (or exceeds the size/nesting bound).

Every chat template shipped with transformers and the public ones in the tests come out CLEAN.
"""

from __future__ import annotations

import re
import warnings
from typing import Final

import jinja2
import jinja2.ext
import jinja2.filters
import jinja2.nodes as jn
from jinja2.exceptions import TemplateSyntaxError

from airlock._analysis.template_cost import bound_template
from airlock._analysis.template_fold import BUILT as _BUILT
from airlock._analysis.template_fold import built_names as _built_names
from airlock._analysis.template_fold import fold as _fold
from airlock._analysis.template_fold import may_build_string as _may_build_string
from airlock._formats.base import Issue
from airlock.limits import Limits
from airlock.results import Severity

__all__ = ["analyse_template"]

#: Methods the public chat templates call (Llama 3.x, Mistral, Qwen, Gemma, Phi, DeepSeek, Hermes).
SAFE_METHODS: Final = frozenset(
    "strip lstrip rstrip split rsplit splitlines startswith endswith lower upper title capitalize "
    "replace find rfind count join items keys values get isdigit isalpha isspace isalnum cycle".split()
)
#: Names from the server-side-template-injection vocabulary: never needed by a chat template.
SSTI_NAMES: Final = frozenset(
    "self config request session os popen subprocess sys builtins __builtins__ importlib eval exec "
    "open getattr setattr globals locals vars dir compile __import__ url_for get_flashed_messages "
    "application".split()
)
#: Jinja globals whose attributes lead to Python function globals (``cycler.__init__.__globals__``).
INTERNALS_GLOBALS: Final = frozenset({"cycler", "joiner", "lipsum"})
#: Callables a chat template may call by name: Jinja's globals and the helpers chat runtimes add.
KNOWN_CALLS: Final = frozenset(
    {"range", "namespace", "dict", "raise_exception", "strftime_now", "caller", "cycler", "joiner", "lipsum",
     "loop"}
)  # fmt: skip
#: Jinja globals that are Python objects (classes, functions): only ever called by name. Used any
#: other way (``lipsum.__globals__``, ``x|map(attribute=k)`` on them, passed around) they are a
#: way into Python's internals.
OBJECT_GLOBALS: Final = frozenset({"range", "namespace", "dict", "cycler", "joiner", "lipsum"})
#: The filters real chat templates use (``attr`` is never allowed: it bypasses attribute checks).
ALLOWED_FILTERS: Final = frozenset(
    """abs batch capitalize center count d default dictsort e escape first float format groupby
    indent int items join last length list lower map max min reject rejectattr replace reverse
    round safe select selectattr slice sort string striptags sum title tojson trim truncate unique
    upper wordcount""".split()
)
KNOWN_FILTERS: Final = ALLOWED_FILTERS
#: The tests real chat templates use.
ALLOWED_TESTS: Final = frozenset(
    """defined undefined none string number mapping iterable sequence boolean true false integer
    float equalto eq == ne != lt < gt > le <= ge >= in odd even divisibleby sameas lower upper
    escaped""".split()
)
#: filter -> where its attribute-name argument is (keyword ``attribute``, and/or a position)
_ATTRIBUTE_ARGS: Final[dict[str, int | None]] = {
    "map": None, "selectattr": 0, "rejectattr": 0, "sort": None, "groupby": 0, "sum": None,
    "unique": None, "min": None, "max": None, "join": None,
}  # fmt: skip
#: Node types of the allowed subset (statements and expressions real chat templates use).
_ALLOWED_NODES: Final = (
    jn.Template, jn.Output, jn.TemplateData, jn.For, jn.If, jn.Assign, jn.AssignBlock, jn.Macro,
    jn.CallBlock, jn.FilterBlock, jn.With, jn.Scope, jn.Continue, jn.Break, jn.Name, jn.Const,
    jn.Tuple, jn.List, jn.Dict, jn.Pair, jn.Keyword, jn.CondExpr, jn.Compare, jn.Operand, jn.And,
    jn.Or, jn.Not, jn.Neg, jn.Pos, jn.Add, jn.Sub, jn.Mul, jn.Div, jn.FloorDiv, jn.Mod, jn.Concat,
    jn.Getattr, jn.Getitem, jn.Slice, jn.Filter, jn.Test, jn.Call, jn.NSRef, jn.Pow,
    jn.Include, jn.Import, jn.FromImport, jn.Extends,
)  # fmt: skip
#: Attributes that are Python internals without leading underscores (function, frame, code objects).
_INTERNAL_ATTRS: Final = frozenset(
    "mro func_globals func_code func_closure gi_frame gi_code gi_yieldfrom f_globals f_locals f_builtins "
    "f_back f_code co_code co_consts tb_frame tb_next im_func im_self im_class cr_frame cr_code ag_frame "
    "ag_code format_map".split()
)
_DUNDER_WORD: Final = re.compile(r"__[A-Za-z_]\w*__")
_FORMAT_FIELD: Final = re.compile(r"\{([^{}]*)\}")


class _GenerationTag(jinja2.ext.Extension):
    """Parses transformers' ``{% generation %}...{% endgeneration %}`` block (assistant masks)."""

    tags = {"generation"}  # noqa: RUF012 - jinja's Extension API declares it as a class attribute

    def parse(self, parser: jinja2.parser.Parser) -> jn.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jn.Scope(body, lineno=lineno)


def _environment() -> jinja2.Environment:
    # Only used to parse. The extensions match what chat runtimes enable (loop controls, generation).
    return jinja2.Environment(extensions=["jinja2.ext.loopcontrols", _GenerationTag])  # noqa: S701


def analyse_template(name: str, text: str, limits: Limits, offset: int | None = None) -> list[Issue]:
    """Findings for one template (empty when it is clean). Never renders or compiles it."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_template_bytes:
        return [
            Issue(
                "template.parse",
                Severity.ERROR,
                f"template {name}: {size} bytes exceeds limit max_template_bytes {limits.max_template_bytes}",
                offset=offset,
            )
        ]
    try:
        with warnings.catch_warnings():
            # jinja's lexer decodes string escapes with Python's codec, which warns on "\_" etc.
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = _environment().parse(text)
    except TemplateSyntaxError as exc:
        return [
            Issue(
                "template.parse",
                Severity.ERROR,
                f"template {name}: does not parse as Jinja: {exc.message} (line {exc.lineno})",
                offset=offset,
            )
        ]
    except RecursionError:
        return [
            Issue(
                "template.parse",
                Severity.ERROR,
                f"template {name}: nested too deeply to parse",
                offset=offset,
            )
        ]
    walker = _Walker(name, text, offset)
    try:
        walker.walk(tree)
    except RecursionError:
        walker.add(Severity.ERROR, "template.parse", "expression nested too deeply to analyse", None)
        return walker.issues
    for why, node in bound_template(tree, limits.max_template_bytes).findings:
        walker.add(Severity.SUSPICIOUS, "template.resource", f"{why} (resource exhaustion)", node)
    return walker.issues


def _is_internal(attr: str) -> bool:
    return attr.startswith("__") or attr in _INTERNAL_ATTRS


class _Walker:
    def __init__(self, name: str, text: str, offset: int | None) -> None:
        self.name = name
        self.lines = text.splitlines()
        self.offset = offset
        self.issues: list[Issue] = []
        self.consts: dict[str, object] = {}
        self.local_names: set[str] = set()
        self.macros: set[str] = set()
        #: ids of Name nodes that are called directly (``range(3)``): the one allowed use of a global
        self.callees: set[int] = set()
        #: what the template binds each of its names to, and those bound to strings it assembles
        #: (template_fold.built_names)
        self.bindings: dict[str, list[jn.Node]] = {}
        self.built: set[str] = set()
        self._seen: set[tuple[str, str]] = set()

    # ---- reporting -------------------------------------------------------------------------

    def add(
        self, severity: Severity, rule: str, what: str, node: jn.Node | None, construct: str | None = None
    ) -> None:
        key = (rule, what)
        if key in self._seen:
            return
        self._seen.add(key)
        line = getattr(node, "lineno", None)
        evidence = None
        if line is not None and 0 < line <= len(self.lines):
            evidence = self.lines[line - 1].strip()[:200]
        where = f" (line {line})" if line is not None else ""
        self.issues.append(
            Issue(
                rule,
                severity,
                f"template {self.name}: {what}{where}",
                offset=self.offset,
                callable=construct,
                evidence=evidence,
            )
        )

    def ssti(self, what: str, node: jn.Node, construct: str | None) -> None:
        self.add(
            Severity.MALICIOUS,
            "template.ssti",
            f"{what}; Python internals reachable from a template run code when it is rendered "
            "(server-side template injection, expected none)",
            node,
            construct,
        )

    def check_key(self, key: str, node: jn.Node, how: str) -> None:
        """A string used as an attribute name (dotted paths checked part by part)."""
        for part in key.split("."):
            if _is_internal(part):
                self.ssti(f"attribute {part!r} reached via {how}", node, _expr(node))
                return
            if part.startswith("_"):
                self.add(
                    Severity.SUSPICIOUS,
                    "template.private-attribute",
                    f"private attribute {part!r} reached via {how} (expected public names only)",
                    node,
                    _expr(node),
                )

    # ---- walking ---------------------------------------------------------------------------

    def walk(self, tree: jn.Template) -> None:
        # Pass 1: names the template binds itself (loop variables, set targets, macros and their
        # arguments) shadow globals; constant assignments are remembered for key folding.
        for node in tree.find_all((jn.Name, jn.Macro, jn.Assign)):
            if isinstance(node, jn.Name) and node.ctx in ("store", "param"):
                self.local_names.add(node.name)
            elif isinstance(node, jn.Macro):
                self.macros.add(node.name)
            elif isinstance(node, jn.Assign) and isinstance(node.target, jn.Name):
                value = _fold(node.node, self.consts)
                if value is not None:
                    self.consts[node.target.name] = value
        self.bind(tree)
        self.built = _built_names(self.bindings, self.consts)
        stack: list[jn.Node] = [tree]
        while stack:
            node = stack.pop()
            self.visit(node)
            stack.extend(reversed(list(node.iter_child_nodes())))

    def bind(self, tree: jn.Template) -> None:
        """Every expression each name of the template is bound to; a key built through them is
        followed (``{% set k %}__init__{% endset %}`` then ``x[k]``)."""

        def add(target: jn.Node, value: jn.Node) -> None:
            if isinstance(target, jn.NSRef):
                self.bindings.setdefault("." + target.attr, []).append(value)
            for name in target.find_all(jn.Name) if not isinstance(target, jn.Name) else [target]:
                self.bindings.setdefault(name.name, []).append(value)

        macros: dict[str, jn.Macro] = {}
        for node in tree.find_all((jn.Assign, jn.AssignBlock, jn.For, jn.With, jn.Macro, jn.CallBlock)):
            if isinstance(node, jn.Assign):
                add(node.target, node.node)
            elif isinstance(node, jn.AssignBlock):
                add(node.target, _BUILT)
            elif isinstance(node, jn.For):
                add(node.target, node.iter)
            elif isinstance(node, jn.With):
                for target, value in zip(node.targets, node.values, strict=False):
                    add(target, value)
            elif isinstance(node, jn.Macro | jn.CallBlock):
                if isinstance(node, jn.Macro):
                    macros[node.name] = node
                    self.bindings.setdefault("()" + node.name, []).append(_BUILT)  # its output
                params = node.args
                for param, default in zip(
                    params[len(params) - len(node.defaults) :], node.defaults, strict=True
                ):
                    add(param, default)
                if isinstance(node, jn.CallBlock):  # caller(x) binds the block's parameters
                    for call in node.find_all(jn.Call):
                        if isinstance(call.node, jn.Name) and call.node.name == "caller":
                            for param, arg in zip(params, call.args, strict=False):
                                add(param, arg)
        for call in tree.find_all(jn.Call):  # a macro's arguments bind its parameters
            if isinstance(call.node, jn.Name) and (macro := macros.get(call.node.name)) is not None:
                for param, arg in zip(macro.args, call.args, strict=False):
                    add(param, arg)
                for keyword in call.kwargs:
                    add(jn.Name(keyword.key, "param"), keyword.value)

    def visit(self, node: jn.Node) -> None:
        if not isinstance(node, _ALLOWED_NODES):
            self.add(
                Severity.SUSPICIOUS,
                "template.construct",
                f"{type(node).__name__} is outside the constructs chat templates use",
                node,
            )
        if isinstance(node, jn.Getattr):
            if _is_internal(node.attr):
                self.ssti(f"attribute {node.attr!r} accessed", node, _expr(node))
            elif node.attr.startswith("_"):
                self.check_key(node.attr, node, "attribute access")
        elif isinstance(node, jn.Getitem):
            self.visit_getitem(node)
        elif isinstance(node, jn.NSRef):
            self.check_key(node.attr, node, f"namespace assignment {node.name}.{node.attr}")
        elif isinstance(node, jn.Name) and node.ctx == "load":
            if node.name in SSTI_NAMES and node.name not in self.local_names:
                self.ssti(f"name {node.name!r} referenced", node, node.name)
            elif (
                node.name in OBJECT_GLOBALS
                and node.name not in self.local_names
                and id(node) not in self.callees
            ):
                self.ssti(
                    f"Jinja global {node.name!r} used as an object (only calling it is allowed)",
                    node,
                    node.name,
                )
        elif isinstance(node, jn.Filter | jn.Test):
            self.visit_filter(node)
        elif isinstance(node, jn.Call):
            self.visit_call(node)
        elif isinstance(node, jn.Keyword):
            if _is_internal(node.key):
                self.ssti(f"keyword argument {node.key!r}", node, node.key)
        elif isinstance(node, jn.Pow):
            self.add(
                Severity.SUSPICIOUS, "template.resource", "exponentiation '**' (resource exhaustion)", node
            )
        elif isinstance(node, jn.Include | jn.Import | jn.FromImport | jn.Extends):
            self.add(
                Severity.SUSPICIOUS,
                "template.include",
                f"{type(node).__name__.lower()} of another template (chat templates are self-contained)",
                node,
            )
        elif isinstance(node, jn.Const) and isinstance(node.value, str):
            # However it reaches a lookup ({% with %}, loop variables, macro defaults ...), a string
            # naming a dunder has no place in a chat template.
            if any(_DUNDER_WORD.fullmatch(part) for part in node.value.split(".")):
                self.ssti(
                    f"string constant {node.value[:60]!r} names a Python internal", node, node.value[:60]
                )
        elif isinstance(node, jn.Concat | jn.Add | jn.Mod | jn.Mul):
            value = _fold(node, self.consts)
            if isinstance(value, str) and _DUNDER_WORD.search(value):
                self.ssti(f"string {value[:60]!r} assembled from pieces", node, value[:60])

    def visit_getitem(self, node: jn.Getitem) -> None:
        if isinstance(node.arg, jn.Slice):
            return
        key = _fold(node.arg, self.consts)
        if isinstance(key, str):
            how = "subscript" if isinstance(node.arg, jn.Const) else "a subscript built from constants"
            if _is_internal(key):
                self.ssti(f"item {key!r} accessed via {how}", node, _expr(node))
            elif key.startswith("_"):
                self.check_key(key, node, how)
        elif key is None and _may_build_string(node.arg, self.consts, self.built):
            self.add(
                Severity.SUSPICIOUS,
                "template.computed-key",
                f"subscript key computed at render time ({_expr(node.arg)}) cannot be checked statically",
                node,
                _expr(node),
            )

    def visit_filter(self, node: jn.Filter | jn.Test) -> None:
        is_filter = isinstance(node, jn.Filter)
        kind = "filter" if is_filter else "test"
        if is_filter and node.name == "attr":
            arg = _fold(node.args[0], self.consts) if node.args else None
            shown = repr(arg) if isinstance(arg, str) else "a computed name"
            self.ssti(f"'|attr({shown})' filter (bypasses attribute checks)", node, _expr(node))
        elif node.name not in (ALLOWED_FILTERS if is_filter else ALLOWED_TESTS):
            self.add(
                Severity.SUSPICIOUS,
                f"template.unknown-{kind}",
                f"{kind} {node.name!r} is outside the {kind}s chat templates use",
                node,
            )
        if not isinstance(node, jn.Filter):
            return
        position = _ATTRIBUTE_ARGS.get(node.name, -1)
        if position != -1:
            candidates = [kw.value for kw in node.kwargs if kw.key == "attribute"]
            if position is not None and len(node.args) > position:
                candidates.append(node.args[position])
            for arg in candidates:
                self.check_attribute_name(arg, node)
        # map applies the filter named by its first positional argument whenever there is one,
        # passing ``attribute=`` on to that filter (jinja's prepare_map)
        if node.name == "map" and node.args:
            self.check_named(node.args[0], node, "filter")
        elif node.name in ("select", "reject") and node.args:
            self.check_named(node.args[0], node, "test")
        elif node.name in ("selectattr", "rejectattr") and len(node.args) > 1:
            self.check_named(node.args[1], node, "test")

    def check_attribute_name(self, arg: jn.Node, node: jn.Filter) -> None:
        """The attribute name a filter looks up on every item must be a constant public name."""
        value = _fold(arg, self.consts)
        if isinstance(value, int) and not isinstance(value, bool):
            return  # an index (groupby(0))
        if not isinstance(value, str):
            self.ssti(
                f"attribute name of filter {node.name!r} comes from data ({_expr(arg)}), so the template "
                "can reach any attribute",
                node,
                _expr(node),
            )
            return
        how = f"the attribute argument of filter {node.name!r}"
        self.check_key(value, node, how if isinstance(arg, jn.Const) else how + " (built from constants)")

    def check_named(self, arg: jn.Node, node: jn.Filter, what: str) -> None:
        """``map('lower')``, ``select('defined')``: the filter or test applied must be constant and allowed."""
        value = _fold(arg, self.consts)
        if not isinstance(value, str):
            self.ssti(
                f"{what} applied by filter {node.name!r} is chosen by data ({_expr(arg)})", node, _expr(node)
            )
        elif what == "filter" and value == "attr":
            self.ssti(f"'attr' filter applied through filter {node.name!r}", node, _expr(node))
        elif value not in (ALLOWED_FILTERS if what == "filter" else ALLOWED_TESTS):
            self.add(
                Severity.SUSPICIOUS,
                f"template.unknown-{what}",
                f"{what} {value!r} applied by filter {node.name!r} is outside the {what}s chat templates use",
                node,
            )

    def visit_call(self, node: jn.Call) -> None:
        target = node.node
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            self.add(
                Severity.SUSPICIOUS,
                "template.construct",
                "call with *args or **kwargs (arguments cannot be checked statically)",
                node,
                _expr(target),
            )
        if isinstance(target, jn.Getattr):
            method = target.attr
            if method == "format":
                self.check_format(target.node, node)
            elif method not in SAFE_METHODS and not _is_internal(method):
                self.add(
                    Severity.SUSPICIOUS,
                    "template.method-call",
                    f"call of method {method!r} (not among the string/list/dict methods chat templates use)",
                    node,
                    _expr(target),
                )
        elif isinstance(target, jn.Name):
            self.callees.add(id(target))
            if target.name in ("range", *self.macros) or target.name in SSTI_NAMES:
                pass  # range's size is bounded by template_cost; a macro of the template; the
                # SSTI vocabulary is reported as a name
            elif target.name in self.macros or target.name in SSTI_NAMES:
                pass  # a macro of the template; the SSTI vocabulary is reported as a name
            elif target.name in self.local_names:
                self.ssti(
                    f"call of {target.name!r}, a value the template got from data (only Jinja's globals "
                    "and the template's macros may be called)",
                    node,
                    target.name,
                )
            elif target.name not in KNOWN_CALLS:
                self.add(
                    Severity.SUSPICIOUS,
                    "template.unknown-call",
                    f"call of {target.name!r}, which is neither a Jinja global nor a macro of the template",
                    node,
                    target.name,
                )
        else:
            self.ssti(
                f"call of a value the template computed ({_expr(target)}); only Jinja's globals, the "
                "template's macros and string/list/dict methods may be called",
                node,
                _expr(target),
            )
        for arg in node.args:
            value = _fold(arg, self.consts)
            if isinstance(value, str) and _is_internal(value):
                self.ssti(f"string {value!r} passed to a call", node, _expr(node))

    def check_format(self, receiver: jn.Node, node: jn.Call) -> None:
        fmt = _fold(receiver, self.consts)
        if not isinstance(fmt, str):
            self.add(
                Severity.SUSPICIOUS,
                "template.method-call",
                "str.format on a format string that is not a constant (fields can reach attributes)",
                node,
                _expr(node.node),
            )
            return
        for field in _FORMAT_FIELD.findall(fmt):
            name = field.split("!")[0].split(":")[0]
            for part in re.split(r"[.\[\]]", name):
                if _is_internal(part) or part.startswith("_"):
                    self.ssti(f"format field {{{field}}} reaches {part!r}", node, _expr(node))
                    return


def _expr(node: jn.Node, depth: int = 0) -> str:
    """A short source-like rendering of an expression for messages (``cycler.__init__.__globals__``)."""
    if depth > 12:
        return "..."
    if isinstance(node, jn.Name):
        return node.name
    if isinstance(node, jn.Const):
        return repr(node.value)[:40]
    if isinstance(node, jn.Getattr):
        return f"{_expr(node.node, depth + 1)}.{node.attr}"
    if isinstance(node, jn.Getitem):
        arg = "..." if isinstance(node.arg, jn.Slice) else _expr(node.arg, depth + 1)
        return f"{_expr(node.node, depth + 1)}[{arg}]"
    if isinstance(node, jn.Call):
        return f"{_expr(node.node, depth + 1)}()"
    if isinstance(node, jn.Filter) and node.node is not None:
        args = ", ".join(_expr(a, depth + 1) for a in node.args)
        return (
            f"{_expr(node.node, depth + 1)}|{node.name}({args})"
            if args
            else f"{_expr(node.node, depth + 1)}|{node.name}"
        )
    if isinstance(node, jn.Tuple | jn.List):
        return "()" if not node.items else f"({', '.join(_expr(i, depth + 1) for i in node.items[:3])})"
    return f"<{type(node).__name__.lower()}>"
