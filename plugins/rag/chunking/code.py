"""`code`: chunks that follow the program's structure.

Functions, classes and methods become chunks of their own (Python through
`ast`, other languages through tree-sitter grammar packages). A definition too
large for the budget is split into its header and its members, and a member
still too large into groups of whole lines; small neighbours (imports,
constants, one-line helpers) are merged until they reach a useful size. Every
chunk keeps its line range and the symbols it holds.
"""
from __future__ import annotations

import ast
import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

from .base import Budget, Chunk, TokenCounter
from .fixed import SPECIAL_TOKENS, char_windows, token_spans

log = logging.getLogger("lunaos.rag")


@dataclass
class Span:
    """A definition: lines start..end (1-based, inclusive), its name and the definitions inside it."""

    start: int
    end: int
    symbol: str | None
    children: list[Span] = field(default_factory=list)


# --- Python through ast ---------------------------------------------------------------------------

_PY_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def python_spans(text: str) -> list[Span]:
    tree = ast.parse(text)

    def walk(body: list[ast.stmt], prefix: str) -> list[Span]:
        spans = []
        for node in body:
            if isinstance(node, _PY_DEFS):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                name = f"{prefix}{node.name}"
                spans.append(Span(start, node.end_lineno or node.lineno, name, walk(node.body, name + ".")))
        return spans

    return walk(tree.body, "")


# --- other languages through tree-sitter ----------------------------------------------------------

@dataclass(frozen=True)
class Grammar:
    module: str
    function: str  # the module's function returning the language pointer
    definitions: frozenset[str]
    wrappers: frozenset[str] = frozenset()  # e.g. `export` statements: take the wrapped definition's name


_JS_DEFS = {"function_declaration", "generator_function_declaration", "class_declaration", "method_definition",
            "lexical_declaration", "variable_declaration"}
_TS_DEFS = _JS_DEFS | {"interface_declaration", "type_alias_declaration", "enum_declaration",
                       "abstract_class_declaration", "module", "internal_module", "function_signature"}
GRAMMARS: dict[str, Grammar] = {
    "python": Grammar("tree_sitter_python", "language", frozenset({
        "function_definition", "class_definition", "decorated_definition"})),
    "javascript": Grammar("tree_sitter_javascript", "language", frozenset(_JS_DEFS),
                          frozenset({"export_statement"})),
    "typescript": Grammar("tree_sitter_typescript", "language_typescript", frozenset(_TS_DEFS),
                          frozenset({"export_statement"})),
    "tsx": Grammar("tree_sitter_typescript", "language_tsx", frozenset(_TS_DEFS), frozenset({"export_statement"})),
    "go": Grammar("tree_sitter_go", "language", frozenset({
        "function_declaration", "method_declaration", "type_declaration"})),
    "rust": Grammar("tree_sitter_rust", "language", frozenset({
        "function_item", "impl_item", "struct_item", "enum_item", "trait_item", "mod_item", "macro_definition",
        "union_item"})),
    "java": Grammar("tree_sitter_java", "language", frozenset({
        "class_declaration", "interface_declaration", "enum_declaration", "record_declaration",
        "method_declaration", "constructor_declaration", "annotation_type_declaration"})),
    "c": Grammar("tree_sitter_c", "language", frozenset({"function_definition", "struct_specifier"})),
    "cpp": Grammar("tree_sitter_cpp", "language", frozenset({
        "function_definition", "class_specifier", "struct_specifier", "namespace_definition"})),
    "ruby": Grammar("tree_sitter_ruby", "language", frozenset({"method", "singleton_method", "class", "module"})),
}
_NAME_TYPES = ("identifier", "type_identifier", "property_identifier", "field_identifier", "constant",
               "namespace_identifier", "name")
_parsers: dict[str, Any] = {}


def grammar_available(language: str) -> bool:
    grammar = GRAMMARS.get(language)
    if grammar is None:
        return False
    try:
        importlib.import_module(grammar.module)
    except ImportError:
        return False
    return True


def _parser(language: str) -> Any:
    if language not in _parsers:
        import tree_sitter

        grammar = GRAMMARS[language]
        module = importlib.import_module(grammar.module)
        _parsers[language] = tree_sitter.Language(getattr(module, grammar.function)())
    import tree_sitter

    return tree_sitter.Parser(_parsers[language])  # a parser per call: parsers are not thread-safe


def _name(node: Any, depth: int = 0) -> str | None:
    for field_name in ("name", "declarator", "type"):
        child = node.child_by_field_name(field_name)
        if child is not None:
            if child.type in _NAME_TYPES or child.type.endswith("identifier"):
                return child.text.decode("utf-8", "replace")
            if depth < 3:
                found = _name(child, depth + 1)
                if found:
                    return found
    if depth == 0:
        for child in node.named_children:
            if child.type in _NAME_TYPES:
                return child.text.decode("utf-8", "replace")
            if child.type in ("variable_declarator", "type_spec", "const_spec", "var_spec"):
                return _name(child, depth + 1)
    return None


def _is_definition(node: Any, grammar: Grammar) -> bool:
    if node.type not in grammar.definitions:
        return False
    if node.type in ("lexical_declaration", "variable_declaration"):
        # `const f = () => ...` is a definition; `const x = 1` is not.
        return any(d.child_by_field_name("value") is not None
                   and d.child_by_field_name("value").type in ("arrow_function", "function_expression",
                                                               "function", "class", "generator_function")
                   for d in node.named_children if d.type == "variable_declarator")
    return True


def tree_sitter_spans(text: str, language: str) -> list[Span]:
    grammar = GRAMMARS[language]
    tree = _parser(language).parse(text.encode("utf-8"))

    def definitions(node: Any, prefix: str, depth: int) -> list[Span]:
        spans: list[Span] = []
        for child in node.named_children:
            target = child
            if child.type in grammar.wrappers:
                inner = [c for c in child.named_children if _is_definition(c, grammar)]
                target = inner[0] if inner else child
            if target is not child or _is_definition(child, grammar):
                if target.type == "decorated_definition":
                    target = target.child_by_field_name("definition") or target
                name = _name(target)
                symbol = f"{prefix}{name}" if name else None
                inner_prefix = f"{symbol}." if symbol else prefix
                spans.append(Span(child.start_point[0] + 1, child.end_point[0] + 1, symbol,
                                  definitions(target, inner_prefix, 0)))
            elif depth < 3:
                spans.extend(definitions(child, prefix, depth + 1))
        return spans

    return definitions(tree.root_node, "", 0)


def spans_for(text: str, language: str) -> list[Span] | None:
    """Definitions of a source file, or None when the language has no parser here."""
    if language == "python":
        try:
            return python_spans(text)
        except (SyntaxError, ValueError, RecursionError):
            pass  # Python 2, a fragment, a template: tree-sitter tolerates errors
    if grammar_available(language):
        return tree_sitter_spans(text, language)
    return None


# --- from definitions to chunks -------------------------------------------------------------------

@dataclass
class _Unit:
    start: int
    end: int
    symbols: list[str]
    tokens: int


class _Builder:
    def __init__(self, lines: list[str], budget: Budget, count: TokenCounter, tokenizer: Any):
        self.lines = lines
        self.limit = budget.max_tokens - SPECIAL_TOKENS
        self.min = budget.min_tokens
        self.count = count
        self.tokenizer = tokenizer
        self._line_tokens: dict[int, int] = {}

    def line_tokens(self, number: int) -> int:
        if number not in self._line_tokens:
            line = self.lines[number - 1]
            self._line_tokens[number] = max(self.count(line) - SPECIAL_TOKENS, 0) if line.strip() else 0
        return self._line_tokens[number]

    def tokens(self, start: int, end: int) -> int:
        return sum(self.line_tokens(n) for n in range(start, end + 1))

    def units(self, spans: list[Span], start: int, end: int) -> list[_Unit]:
        """Units covering lines start..end: definitions (split when too big) and the code between them."""
        out: list[_Unit] = []
        cursor = start
        for span in sorted(spans, key=lambda s: s.start):
            s, e = max(span.start, cursor), min(span.end, end)
            if s > e:
                continue
            if s > cursor:
                out.extend(self.glue(cursor, s - 1))
            out.extend(self.definition(span, s, e))
            cursor = e + 1
        if cursor <= end:
            out.extend(self.glue(cursor, end))
        return out

    def glue(self, start: int, end: int) -> list[_Unit]:
        while start <= end and not self.lines[start - 1].strip():
            start += 1
        while end >= start and not self.lines[end - 1].strip():
            end -= 1
        if start > end:
            return []
        return self.split_lines(start, end, [])

    def definition(self, span: Span, start: int, end: int) -> list[_Unit]:
        symbols = [span.symbol] if span.symbol else []
        size = self.tokens(start, end)
        if size <= self.limit:
            return [_Unit(start, end, symbols, size)]
        if span.children:
            first_child = min(c.start for c in span.children)
            units = []
            if first_child > start:  # the header: signature, docstring, attributes
                units.extend(self.split_lines(start, first_child - 1, symbols))
            inner = self.units(span.children, max(first_child, start), end)
            for unit in inner:
                if not unit.symbols:
                    unit.symbols = list(symbols)
            return units + inner
        return self.split_lines(start, end, symbols)

    def split_lines(self, start: int, end: int, symbols: list[str]) -> list[_Unit]:
        """Groups of whole lines within the limit; a single line too long is cut by tokens."""
        out: list[_Unit] = []
        group_start, total = start, 0
        for number in range(start, end + 1):
            size = self.line_tokens(number)
            if size > self.limit:
                if number > group_start:
                    out.append(_Unit(group_start, number - 1, list(symbols), total))
                out.append(_Unit(number, number, list(symbols), size))  # cut later by characters
                group_start, total = number + 1, 0
                continue
            if total + size > self.limit and number > group_start:
                out.append(_Unit(group_start, number - 1, list(symbols), total))
                group_start, total = number, 0
            total += size
        if group_start <= end:
            out.append(_Unit(group_start, end, list(symbols), total))
        return out

    def merge(self, units: list[_Unit]) -> list[_Unit]:
        """Merge neighbours while one of them is small and both fit together."""
        merged: list[_Unit] = []
        for unit in units:
            if merged:
                last = merged[-1]
                if (last.tokens < self.min or unit.tokens < self.min) and last.tokens + unit.tokens <= self.limit:
                    last.end = unit.end
                    last.tokens += unit.tokens
                    last.symbols += [s for s in unit.symbols if s not in last.symbols]
                    continue
            merged.append(_Unit(unit.start, unit.end, list(unit.symbols), unit.tokens))
        return merged

    def chunks(self, units: list[_Unit]) -> list[Chunk]:
        out: list[Chunk] = []
        for unit in units:
            content = "\n".join(self.lines[unit.start - 1:unit.end]).strip("\n")
            if not content.strip():
                continue
            symbol = ", ".join(unit.symbols)[:300] or None
            if unit.tokens > self.limit:  # one enormous line (minified code, data)
                spans = token_spans(content, self.tokenizer)
                for s, e in char_windows(content, spans, self.limit, 0):
                    piece = content[s:e].strip()
                    if piece:
                        out.append(Chunk(piece, unit.start, unit.end, symbol, self.count(piece)))
                continue
            out.append(Chunk(content, unit.start, unit.end, symbol, self.count(content),
                             {"symbols": unit.symbols} if len(unit.symbols) > 1 else {}))
        return out


def chunk_code(text: str, language: str | None, budget: Budget, tokenizer: Any, count: TokenCounter) -> list[Chunk]:
    """Chunks at definition boundaries; None-parsable languages fall back to line groups."""
    lines = text.split("\n")
    spans: list[Span] | None = None
    if language:
        try:
            spans = spans_for(text, language)
        except Exception:  # a grammar crash must not lose the file: fall back to line groups
            log.warning("could not parse %s source; chunking it by lines", language, exc_info=True)
    builder = _Builder(lines, budget, count, tokenizer)
    units = builder.units(spans or [], 1, len(lines))
    return builder.chunks(builder.merge(units))
