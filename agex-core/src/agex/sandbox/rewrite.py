"""Agent code is parsed, checked and rewritten, then compiled once and run with ``exec``.

Refused before anything runs (:class:`~agex.errors.CodeRejected`): builtins the sandbox never
provides (``eval``, ``open``, ...), names that are dunders or start with ``_agex``, dunder
attributes other than a few plain strings, attributes that lead into frames, class keywords
(``metaclass=``), dunder methods with power over the host (``__reduce__``, ``__del__``,
``__init_subclass__``, ...), relative and ``__future__`` imports, ``return``/``break``/
``continue`` in ``finally`` (they would swallow a signal), and string annotations that would
do any of this when something evaluates them later.

Rewritten: attribute reads become ``_agex_attr(obj, "name")``, attribute writes and deletes
become ``_agex_store``/``_agex_delattr`` calls, and every ``except`` clause re-raises
signals first, as does every ``with`` statement's ``__exit__``. Nothing else changes, so
loops and arithmetic stay plain bytecode.
"""

from __future__ import annotations

import ast
from types import CodeType
from typing import Any, NoReturn

from agex.errors import CodeRejected
from agex.sandbox.guards import FORMAT_NAMES, READABLE_DUNDERS, forbidden_attribute
from agex.sandbox.ownership import AGENT_FILENAME
from agex.sandbox.patterns import Compiled
from agex.sandbox.policy import FORBIDDEN_NAMES

#: Dunder methods agent classes may define.
AGENT_DUNDERS = frozenset(
    [
        "__init__",
        "__new__",
        "__repr__",
        "__str__",
        "__format__",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__hash__",
        "__bool__",
        "__len__",
        "__length_hint__",
        "__iter__",
        "__next__",
        "__reversed__",
        "__contains__",
        "__getitem__",
        "__setitem__",
        "__delitem__",
        "__missing__",
        "__call__",
        "__enter__",
        "__exit__",
        "__aenter__",
        "__aexit__",
        "__aiter__",
        "__anext__",
        "__await__",
        "__getattr__",
        "__get__",
        "__set__",
        "__delete__",
        "__post_init__",
        "__neg__",
        "__pos__",
        "__abs__",
        "__invert__",
        "__int__",
        "__float__",
        "__complex__",
        "__index__",
        "__round__",
        "__trunc__",
        "__floor__",
        "__ceil__",
        "__add__",
        "__radd__",
        "__iadd__",
        "__sub__",
        "__rsub__",
        "__isub__",
        "__mul__",
        "__rmul__",
        "__imul__",
        "__matmul__",
        "__rmatmul__",
        "__imatmul__",
        "__truediv__",
        "__rtruediv__",
        "__itruediv__",
        "__floordiv__",
        "__rfloordiv__",
        "__ifloordiv__",
        "__mod__",
        "__rmod__",
        "__imod__",
        "__pow__",
        "__rpow__",
        "__ipow__",
        "__lshift__",
        "__rlshift__",
        "__ilshift__",
        "__rshift__",
        "__rrshift__",
        "__irshift__",
        "__and__",
        "__rand__",
        "__iand__",
        "__or__",
        "__ror__",
        "__ior__",
        "__xor__",
        "__rxor__",
        "__ixor__",
    ]
)
#: Of those, the ones agent code may call through ``super()``.
SUPER_CALLABLE = AGENT_DUNDERS - {"__getattr__", "__get__", "__set__", "__delete__"}
#: Dunder names agent class bodies may assign.
CLASS_DUNDER_ATTRIBUTES = frozenset({"__slots__", "__hash__"})


def compile_agent_code(source: str, filename: str = AGENT_FILENAME) -> CodeType:
    """Check and rewrite ``source``, then compile it. Raises SyntaxError or CodeRejected."""
    tree = ast.parse(source, filename=filename, mode="exec")
    tree = _Rewriter(source.splitlines()).visit(tree)
    ast.fix_missing_locations(tree)
    # dont_inherit: this module's __future__ flags must not leak into agent code.
    return compile(tree, filename, "exec", dont_inherit=True)


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _tripwire() -> ast.Name:
    """Opens every agent function: a name only the sandbox's builtins define, so a function
    that finds itself running with any other builtins (unpickled without its namespace, or
    handed to code outside the sandbox) stops at a NameError before doing anything."""
    return ast.Name("_agex_ok", ast.Load())


def _own_nodes(function: ast.AST) -> list[ast.AST]:
    """The nodes of a function's body, not those of functions or classes nested in it."""
    found, todo = [], list(ast.iter_child_nodes(function))
    while todo:
        node = todo.pop()
        found.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(node))
    return found


def _call(function: str, *args: ast.expr) -> ast.Call:
    return ast.Call(ast.Name(function, ast.Load()), list(args), [])


class _Rewriter(ast.NodeTransformer):
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.classes: list[str] = []  # enclosing class names, for private-name mangling
        self.allowed: set[int] = set()  # ids of nodes allowed to define a dunder name
        self.temps = 0
        self.generators: list[bool] = [False]  # is the innermost function a generator?

    # -- helpers -----------------------------------------------------------------------

    def reject(self, node: ast.AST, message: str) -> NoReturn:
        lineno = getattr(node, "lineno", None)
        line = self.lines[lineno - 1] if lineno and 0 < lineno <= len(self.lines) else None
        raise CodeRejected(message, lineno, line)

    def check_name(self, node: ast.AST, name: str) -> None:
        if name in FORBIDDEN_NAMES:
            self.reject(node, f"{name} is not available in agent code: {FORBIDDEN_NAMES[name]}")
        if name.startswith("_agex"):
            self.reject(node, f"names starting with _agex are reserved: {name!r}")
        if _is_dunder(name) and id(node) not in self.allowed:
            self.reject(node, f"the name {name!r} is not available in agent code")

    def mangle(self, name: str) -> str:
        """Private-name mangling, which the compiler would have done for a plain attribute."""
        if self.classes and name.startswith("__") and not name.endswith("__"):
            owner = self.classes[-1].lstrip("_")
            if owner:
                return f"_{owner}{name}"
        return name

    def temp(self) -> str:
        self.temps += 1
        return f"_agex_tmp{self.temps}"

    def statement(self, node: ast.AST, call: ast.expr) -> ast.Expr:
        return ast.copy_location(ast.Expr(call), node)

    def check_attribute_name(self, node: ast.AST, name: str, verb: str) -> None:
        if _is_dunder(name) or forbidden_attribute(name):
            self.reject(node, f"agent code cannot {verb} attribute {name!r}")

    # -- names and attributes ----------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> ast.AST:
        self.check_name(node, node.id)
        if node.id == "super" and not isinstance(node.ctx, ast.Load):
            self.reject(node, "super cannot be rebound in agent code")
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if not isinstance(node.ctx, ast.Load):
            self.reject(node, "assign to attributes in assignment, for and with statements only")
        name = self.mangle(node.attr)
        problem = forbidden_attribute(name)
        if problem:
            value = node.value
            if (
                name in SUPER_CALLABLE
                and isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name)
                and value.func.id == "super"
                and not value.args
                and not value.keywords
            ):
                return self.generic_visit(node)  # super().__init__(...), bound to self
            self.reject(node, problem)
        guard = (
            "_agex_getattr" if name in FORMAT_NAMES or name in READABLE_DUNDERS else "_agex_attr"
        )
        call = _call(guard, self.visit(node.value), ast.Constant(name))
        return ast.copy_location(call, node)

    # -- statements that store into attributes -------------------------------------------

    def store_target(self, target: ast.expr, after: list[ast.stmt]) -> ast.expr:
        """The target to assign to; attribute targets become temporaries set afterwards."""
        if isinstance(target, ast.Attribute):
            name = self.mangle(target.attr)
            self.check_attribute_name(target, name, "set")
            temp = self.temp()
            obj = self.visit(target.value)
            value = ast.Name(temp, ast.Load())
            after.append(
                self.statement(target, _call("_agex_store", value, obj, ast.Constant(name)))
            )
            after.append(ast.Delete([ast.Name(temp, ast.Del())]))
            return ast.copy_location(ast.Name(temp, ast.Store()), target)
        if isinstance(target, ast.Tuple | ast.List):
            target.elts = [self.store_target(e, after) for e in target.elts]
            return target
        if isinstance(target, ast.Starred):
            target.value = self.store_target(target.value, after)
            return target
        result: ast.expr = self.visit(target)
        return result

    def visit_Assign(self, node: ast.Assign) -> Any:
        node.value = self.visit(node.value)
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Attribute):
            # obj.name = value, in Python's order: the value first, then the object.
            target = node.targets[0]
            name = self.mangle(target.attr)
            self.check_attribute_name(target, name, "set")
            call = _call("_agex_store", node.value, self.visit(target.value), ast.Constant(name))
            return self.statement(node, call)
        after: list[ast.stmt] = []
        node.targets = [self.store_target(t, after) for t in node.targets]
        return [node, *after] if after else node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> Any:
        self.check_annotation(node.annotation)
        node.annotation = self.annotation(self.visit(node.annotation))
        if isinstance(node.target, ast.Attribute):
            self.check_attribute_name(node.target, self.mangle(node.target.attr), "set")
            if node.value is None:  # an annotation alone assigns nothing
                return ast.copy_location(ast.Expr(self.visit(node.target.value)), node)
            assign = ast.copy_location(ast.Assign([node.target], node.value), node)
            return self.visit_Assign(assign)
        node.target = self.visit(node.target)
        if node.value is not None:
            node.value = self.visit(node.value)
        return node

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        if isinstance(node.target, ast.Attribute):
            name = self.mangle(node.target.attr)
            self.check_attribute_name(node.target, name, "set")
            call = _call(
                "_agex_augattr",
                self.visit(node.target.value),
                ast.Constant(name),
                ast.Constant(type(node.op).__name__),
                self.visit(node.value),
            )
            return self.statement(node, call)
        return self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> Any:
        out: list[ast.stmt] = []
        kept = []
        targets: list[ast.expr] = []
        for target in node.targets:  # del (a.b, c) deletes each in turn
            targets += target.elts if isinstance(target, ast.Tuple | ast.List) else [target]
        for target in targets:
            if isinstance(target, ast.Attribute):
                name = self.mangle(target.attr)
                self.check_attribute_name(target, name, "delete")
                call = _call("_agex_delattr", self.visit(target.value), ast.Constant(name))
                out.append(self.statement(target, call))
            else:
                kept.append(self.visit(target))
        if kept:
            node.targets = kept
            out.insert(0, node)
        return out

    def visit_For(self, node: ast.For | ast.AsyncFor) -> Any:
        node.iter = self.visit(node.iter)
        if self.generators[-1] and isinstance(node, ast.For):
            node.iter = _call("_agex_separated", node.iter)  # see nesting.separated
        after: list[ast.stmt] = []
        node.target = self.store_target(node.target, after)
        node.body = after + [self.visit(s) for s in node.body]
        node.body = self.flatten(node.body)
        node.orelse = self.flatten([self.visit(s) for s in node.orelse])
        return node

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> Any:
        after: list[ast.stmt] = []
        for item in node.items:
            item.context_expr = _call("_agex_with", self.visit(item.context_expr))
            if item.optional_vars is not None:
                item.optional_vars = self.store_target(item.optional_vars, after)
        node.body = self.flatten(after + [self.visit(s) for s in node.body])
        return node

    visit_AsyncWith = visit_With

    @staticmethod
    def flatten(statements: list[Any]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for s in statements:
            out.extend(s if isinstance(s, list) else [s])
        return out

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> ast.AST:
        node = self.generic_visit(node)  # type: ignore[assignment]
        first = node.generators[0]
        if not first.is_async:
            first.iter = _call("_agex_separated", first.iter)  # see nesting.separated
        return node

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        targets = [node.target]
        while targets:
            target = targets.pop()
            if isinstance(target, ast.Attribute):
                self.reject(target, "comprehension targets cannot be attributes")
            if isinstance(target, ast.Tuple | ast.List):
                targets += target.elts
            elif isinstance(target, ast.Starred):
                targets.append(target.value)
        return self.generic_visit(node)

    # -- exceptions ----------------------------------------------------------------------

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        node = self.generic_visit(node)  # type: ignore[assignment]
        if node.name is None:
            node.name = self.temp()
        else:
            self.check_name(node, node.name)
        reraise = self.statement(node, _call("_agex_reraise", ast.Name(node.name, ast.Load())))
        node.body.insert(0, reraise)
        return node

    def visit_Try(self, node: ast.Try | ast.TryStar) -> ast.AST:
        for statement in node.finalbody:
            self.check_finally(statement, in_loop=False)
        node = self.generic_visit(node)  # type: ignore[assignment]
        if node.finalbody:
            node.finalbody.insert(0, self.statement(node.finalbody[0], _call("_agex_pending")))
        return node

    visit_TryStar = visit_Try

    def check_finally(self, node: ast.AST, in_loop: bool) -> None:
        """``return``, ``break`` or ``continue`` leaving a finally block would swallow a signal."""
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            return
        if isinstance(node, ast.Return) or (
            isinstance(node, ast.Break | ast.Continue) and not in_loop
        ):
            kind = type(node).__name__.lower()
            self.reject(node, f"{kind} inside a finally block is not allowed in agent code")
        loop = isinstance(node, ast.For | ast.AsyncFor | ast.While)
        for child in ast.iter_child_nodes(node):
            self.check_finally(child, in_loop or loop)

    # -- definitions ---------------------------------------------------------------------

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        if node.keywords:
            self.reject(node, "class keywords such as metaclass= are not available in agent code")
        self.check_name(node, node.name)
        for statement in node.body:
            self.allow_class_dunders(statement)
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.bases = [self.visit(b) for b in node.bases]
        self.classes.append(node.name)
        try:
            node.body = self.flatten([self.visit(s) for s in node.body])
        finally:
            self.classes.pop()
        return node

    def allow_class_dunders(self, statement: ast.stmt) -> None:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            if _is_dunder(statement.name):
                if statement.name not in AGENT_DUNDERS:
                    self.reject(
                        statement,
                        f"agent classes cannot define {statement.name}; it would run outside "
                        "the sandbox's control",
                    )
                self.allowed.add(id(statement))
        elif isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in CLASS_DUNDER_ATTRIBUTES:
                    self.allowed.add(id(target))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        self.check_name(node, node.name)
        if node.returns is not None:
            self.check_annotation(node.returns)
        generator = any(isinstance(n, ast.Yield | ast.YieldFrom) for n in _own_nodes(node))
        self.generators.append(generator and isinstance(node, ast.FunctionDef))
        try:
            node = self.generic_visit(node)  # type: ignore[assignment]
        finally:
            self.generators.pop()
        if node.returns is not None:
            node.returns = self.annotation(node.returns)
        body = node.body
        docstring = (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        )
        # A generator's clean-up runs where exceptions are discarded, so a pending signal
        # must stop it from starting at all; async functions likewise.
        resumable = isinstance(node, ast.AsyncFunctionDef) or generator
        opening = _call("_agex_pending") if resumable else _tripwire()
        body.insert(1 if docstring else 0, self.statement(body[0], opening))
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        self.generators.append(False)
        try:
            node = self.generic_visit(node)  # type: ignore[assignment]
        finally:
            self.generators.pop()
        node.body = ast.BoolOp(ast.And(), [_tripwire(), node.body])
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_arg(self, node: ast.arg) -> ast.AST:
        self.check_name(node, node.arg)
        if node.annotation is not None:
            self.check_annotation(node.annotation)
            node.annotation = self.annotation(self.visit(node.annotation))
        return node

    def annotation(self, annotation: ast.expr) -> ast.expr:
        """An annotation, checked when it is evaluated: see guards.checked_annotation."""
        return ast.copy_location(_call("_agex_annotation", annotation), annotation)

    def check_annotation(self, annotation: ast.expr) -> None:
        """String annotations are evaluated later by whoever asks for type hints, without
        this rewriting; they must pass the same checks now."""
        for node in ast.walk(annotation):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                try:
                    tree = ast.parse(node.value.strip(), mode="eval")
                except SyntaxError:
                    continue
                checker = _Rewriter(self.lines)
                for inner in ast.walk(tree):
                    inner.lineno = getattr(node, "lineno", 0)  # type: ignore[attr-defined]
                checker.visit(tree)

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> ast.AST:
        for name in node.names:
            self.check_name(node, name)
        return node

    visit_Nonlocal = visit_Global

    # -- imports -------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> ast.AST:
        for alias in node.names:
            for part in alias.name.split("."):
                if part.startswith("_"):
                    self.reject(node, f"module {alias.name!r} is not available in agent code")
            if alias.asname:
                self.check_name(node, alias.asname)
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.level or not node.module:
            self.reject(node, "relative imports are not available in agent code")
        if any(part.startswith("_") for part in node.module.split(".")):
            self.reject(node, f"module {node.module!r} is not available in agent code")
        for alias in node.names:
            if alias.name != "*" and alias.name.startswith("_"):
                self.reject(node, f"cannot import private name {alias.name!r}")
            self.check_name(node, alias.asname or alias.name)
        return node

    # -- match statements: run through the guards (see patterns.py) ----------------------

    def visit_Match(self, node: ast.Match) -> Any:
        """``match`` becomes a chain of ``if`` statements that ask the sandbox's matcher,
        which reads attributes through the guards; CPython would read them natively."""
        self.check_match(node)
        subject, bound = self.temp(), self.temp()

        def clear() -> ast.stmt:  # the temporaries go once a case is chosen, or none is
            return ast.Delete([ast.Name(subject, ast.Del()), ast.Name(bound, ast.Del())])

        chain: list[ast.stmt] = [clear()]
        for case in reversed(node.cases):
            compiled = Compiled()
            spec = compiled.spec(case.pattern)
            for name in compiled.names:
                self.check_name(case.pattern, name)
            for pattern in ast.walk(case.pattern):
                if isinstance(pattern, ast.MatchClass):
                    for attr in pattern.kwd_attrs:
                        self.check_attribute_name(pattern, attr, "match")
            values = ast.Tuple([self.visit(v) for v in compiled.values], ast.Load())
            ask = _call(
                "_agex_match",
                ast.Name(subject, ast.Load()),
                ast.Constant(spec),  # type: ignore[arg-type]  # compile() takes tuples
                values,
                ast.Constant(len(compiled.names)),
            )
            found: ast.expr = ast.Compare(
                ast.Name(bound, ast.Load()), [ast.IsNot()], [ast.Constant(None)]
            )
            steps: list[ast.stmt] = [ast.Assign([ast.Name(bound, ast.Store())], ask)]
            if compiled.names:
                targets = ast.Tuple([ast.Name(n, ast.Store()) for n in compiled.names], ast.Store())
                unpack = ast.Assign([targets], ast.Name(bound, ast.Load()))
                steps.append(ast.If(found, [unpack], []))
            test = found
            if case.guard is not None:
                test = ast.BoolOp(ast.And(), [found, self.visit(case.guard)])
            body = self.flatten([self.visit(s) for s in case.body])
            steps.append(ast.If(test, [clear(), *body], chain))
            chain = steps
        start = ast.Assign([ast.Name(subject, ast.Store())], self.visit(node.subject))
        out = ast.Module([start, *chain], type_ignores=[])
        for inner in ast.walk(out):
            if isinstance(inner, ast.stmt | ast.expr) and not hasattr(inner, "lineno"):
                ast.copy_location(inner, node)
        return out.body

    def check_match(self, node: ast.Match) -> None:
        """What the compiler itself refuses in patterns (a name bound twice, alternatives
        binding different names, an irrefutable case before others), refused the same way:
        the statement's patterns are compiled alone first."""
        cases = [
            ast.match_case(c.pattern, None if c.guard is None else ast.Constant(True), [ast.Pass()])
            for c in node.cases
        ]
        probe = ast.Module([ast.Match(ast.Constant(None), cases)], type_ignores=[])
        ast.fix_missing_locations(probe)
        compile(probe, AGENT_FILENAME, "exec", dont_inherit=True)
