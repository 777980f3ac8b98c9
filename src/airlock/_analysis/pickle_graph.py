"""The object graph the symbolic pickle machine builds: what a pickle *would* build, as nodes.

Imports are :class:`Global` nodes, calls :class:`Call` nodes with their argument nodes, containers
are built as nodes too. Nothing here is ever executed or instantiated from the pickle's contents.
"""

from __future__ import annotations

from airlock.errors import FormatError

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from airlock._record import NamedTuple

__all__ = [
    "Buffer",
    "BuildEvent",
    "Call",
    "Const",
    "DictNode",
    "Ext",
    "Global",
    "ListNode",
    "Node",
    "PersId",
    "PickleResult",
    "SetNode",
    "TupleNode",
]


class Node:
    """A value the pickle would build. ``offset`` is where the opcode that made it starts."""

    __slots__ = ("offset",)

    def __init__(self, offset: int) -> None:
        self.offset = offset


class Const(Node):
    """A literal: None, bool, int, float, str, bytes, or a memoryview for large str/bytes."""

    __slots__ = ("value",)

    def __init__(self, value: object, offset: int) -> None:
        self.offset = offset  # Node.__init__, inlined: nodes are made per opcode
        self.value = value


class Py2Str(Const):
    """A Python 2 ``str`` (STRING, BINSTRING, SHORT_BINSTRING), kept as bytes.

    Every default unpickler (``pickle.load``, ``torch.load``, ``numpy.load``, joblib) decodes these
    to ``str`` (``encoding="ASCII"``, ``"utf-8"`` or ``"latin1"``), so STACK_GLOBAL imports by them
    exactly as by a unicode string; only ``encoding="bytes"`` keeps them bytes.
    """

    __slots__ = ()


class Global(Node):
    """A global the unpickler would import: ``module`` and ``name`` after the Python 2 name mapping.

    ``name`` may be dotted (an attribute walk from the module). ``dynamic`` is set when the module
    or name did not come from constant strings (STACK_GLOBAL on computed values). ``opaque`` is
    set when a dynamic operand is not a constant at all (a call's result, an extension code, a
    persistent id, a memo entry of such): at run time it may well be a string, so the import may
    succeed. A dynamic global that is not opaque has a constant operand that is not a string,
    which every unpickler refuses ("STACK_GLOBAL requires str").
    """

    __slots__ = ("dynamic", "module", "name", "opaque", "opcode")

    def __init__(
        self, module: str, name: str, offset: int, opcode: str, dynamic: bool = False, opaque: bool = False
    ) -> None:
        self.offset = offset  # Node.__init__, inlined: nodes are made per opcode
        self.module = module
        self.name = name
        self.opcode = opcode
        self.dynamic = dynamic
        self.opaque = opaque

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"


class Call(Node):
    """A call the unpickler would make: ``func(*args, **kwargs)``.

    ``kind``: ``reduce``, ``newobj`` (``cls.__new__(cls, *args)``), ``newobj_ex``, ``obj``, ``inst``,
    ``setstate`` (BUILD calling a ``__setstate__`` injected through an earlier BUILD), ``extend``,
    ``append``, ``setitem`` or ``add`` (container opcodes applied to a non-container object).
    ``states`` holds the BUILD states applied to the result, in order.
    """

    __slots__ = ("args", "func", "kind", "kwargs", "setstate", "states")

    def __init__(self, func: Node, args: Node, kwargs: Node | None, kind: str, offset: int) -> None:
        self.offset = offset  # Node.__init__, inlined: nodes are made per opcode
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.kind = kind
        self.states: list[Node] = []
        #: a ``__setstate__`` planted in the instance dict by an earlier BUILD
        self.setstate: Node | None = None


class TupleNode(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[Node], offset: int) -> None:
        self.offset = offset  # Node.__init__, inlined: nodes are made per opcode
        self.items = items


class ListNode(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[Node], offset: int) -> None:
        self.offset = offset  # Node.__init__, inlined: nodes are made per opcode
        self.items = items


class DictNode(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[tuple[Node, Node]], offset: int) -> None:
        self.offset = offset  # Node.__init__, inlined: nodes are made per opcode
        self.items = items


class SetNode(Node):
    __slots__ = ("frozen", "items")

    def __init__(self, items: list[Node], frozen: bool, offset: int) -> None:
        self.offset = offset  # Node.__init__, inlined: nodes are made per opcode
        self.items = items
        self.frozen = frozen


class PersId(Node):
    """A persistent id: the loader's ``persistent_load(pid)`` decides (torch: storages)."""

    __slots__ = ("pid",)

    def __init__(self, pid: Node, offset: int) -> None:
        self.offset = offset  # Node.__init__, inlined: nodes are made per opcode
        self.pid = pid


class Ext(Node):
    """An extension-registry code (EXT1/2/4): resolved through copyreg at load time."""

    __slots__ = ("code",)

    def __init__(self, code: int, offset: int) -> None:
        self.offset = offset  # Node.__init__, inlined: nodes are made per opcode
        self.code = code


class Buffer(Node):
    """An out-of-band buffer (protocol 5 NEXT_BUFFER): supplied by the caller, not the stream."""

    __slots__ = ()


class BuildEvent(NamedTuple):
    """BUILD applied ``state`` to ``target`` (a ``__setstate__`` call or an attribute update)."""

    target: Node
    state: Node
    offset: int


class PickleResult:
    """What one pickle in a stream would do. ``error`` is set when the stream broke off."""

    __slots__ = (
        "anomalies",
        "builds",
        "calls",
        "end",
        "error",
        "frame_crossing",
        "globals",
        "opcodes",
        "persids",
        "protocol",
        "resume",
        "root",
        "start",
    )

    def __init__(self, start: int, end: int, protocol: int, root: Node | None) -> None:
        self.start = start
        self.end = end
        self.protocol = protocol
        self.root = root
        self.globals: list[Global] = []
        self.calls: list[Call] = []
        self.builds: list[BuildEvent] = []
        #: persistent ids in the order the unpickler would call ``persistent_load`` on them
        self.persids: list[PersId] = []
        #: structural oddities: (kind, offset, detail)
        self.anomalies: list[tuple[str, int, str]] = []
        #: STOP came inside a FRAME that goes on: the end of that frame, where a file reader that
        #: read the frame exactly (no ``peek``, or a frame of 8 KiB or more) stands after ``load``
        #: and the next ``load`` of the same file starts (pickle_ops.FileReading)
        self.resume: int | None = None
        #: offset of the first opcode that reads past the end of a FRAME (readers disagree there)
        self.frame_crossing: int | None = None
        self.opcodes = 0
        self.error: FormatError | None = None
