"""Chunking strategies on real text and code, sized with the real MiniLM tokenizer."""
from __future__ import annotations

import textwrap

import pytest

from plugins.rag.chunking import Budget, chunk, default_strategy, detect_language

SMALL = Budget(max_tokens=64, overlap=8, min_tokens=12)


def code_chunks(minilm, source: str, language: str, budget: Budget = SMALL):
    return chunk(textwrap.dedent(source), "code", language=language, budget=budget, embedder=minilm)


def lines_of(text: str, c) -> str:
    return "\n".join(text.split("\n")[c.start_line - 1:c.end_line])


def test_python_chunks_follow_functions_and_classes_with_symbols_and_line_ranges(minilm):
    source = textwrap.dedent('''\
        """Geometry helpers."""
        import math


        def area_of_circle(radius):
            """Area of a circle of the given radius, using pi times the radius squared."""
            value = math.pi * radius * radius
            return round(value, 6)


        class Rectangle:
            """An axis-aligned rectangle described by its width and height in metres."""

            def __init__(self, width, height):
                self.width = width
                self.height = height

            def area(self):
                """Width times height: the surface the rectangle covers on the plane."""
                return self.width * self.height

            def perimeter(self):
                """Twice the sum of width and height: the length of its border."""
                return 2 * (self.width + self.height)
        ''')
    chunks = chunk(source, "code", language="python", budget=SMALL, embedder=minilm)
    symbols = [c.symbol for c in chunks]
    assert any(s and "area_of_circle" in s for s in symbols)
    # The class is too big for 64 tokens: it is split at its methods, each named Class.method.
    assert any(s and "Rectangle.area" in s for s in symbols)
    assert any(s and "Rectangle.perimeter" in s for s in symbols)
    for c in chunks:
        assert c.token_count <= SMALL.max_tokens
        assert c.content.strip() == lines_of(source, c).strip()  # line ranges point at the chunk's text
    perimeter = next(c for c in chunks if c.symbol and "Rectangle.perimeter" in c.symbol)
    assert "def perimeter" in perimeter.content and perimeter.end_line == source.rstrip().count("\n") + 1


def test_tiny_siblings_are_merged_and_an_oversize_function_is_split_by_lines(minilm):
    small = "\n\n".join(f"def f{i}():\n    return {i}" for i in range(6))
    merged = code_chunks(minilm, small, "python", Budget(max_tokens=200, overlap=10, min_tokens=40))
    assert len(merged) < 6 and "f0" in merged[0].symbol and "f1" in merged[0].symbol
    body = "\n".join(f"    total = total + compute_value_number_{i}(argument_{i})" for i in range(60))
    big = f"def enormous(total):\n{body}\n    return total\n"
    parts = code_chunks(minilm, big, "python")
    assert len(parts) > 3
    assert all(p.symbol == "enormous" and p.token_count <= SMALL.max_tokens for p in parts)
    assert parts[0].start_line == 1 and parts[-1].end_line == 62
    assert [p.start_line for p in parts] == sorted(p.start_line for p in parts)


@pytest.mark.parametrize("language, source, expected", [
    ("javascript", """
        import fs from 'fs';
        export function readConfig(path) { return JSON.parse(fs.readFileSync(path, 'utf8')); }
        class Cache {
          constructor() { this.items = new Map(); }
          get(key) { return this.items.get(key); }
        }
        const double = (x) => x * 2;
        """, {"readConfig", "Cache", "double"}),
    ("typescript", """
        interface User { id: number; name: string }
        export function greet(user: User): string { return `hello ${user.name}`; }
        type Id = number;
        """, {"User", "greet", "Id"}),
    ("go", """
        package main

        type Server struct{ port int }

        func (s *Server) Start() error { return nil }

        func main() { s := &Server{port: 8080}; s.Start() }
        """, {"Server", "Start", "main"}),
    ("rust", """
        struct Point { x: f64, y: f64 }
        impl Point {
            fn norm(&self) -> f64 { (self.x * self.x + self.y * self.y).sqrt() }
        }
        fn main() { println!("{}", Point { x: 3.0, y: 4.0 }.norm()); }
        """, {"Point", "main"}),
    ("java", """
        public class Greeter {
            private final String name;
            public Greeter(String name) { this.name = name; }
            public String greet() { return "Hello " + name; }
        }
        """, {"Greeter"}),
])
def test_other_languages_split_at_definitions_through_tree_sitter(minilm, language, source, expected):
    chunks = code_chunks(minilm, source, language, Budget(max_tokens=200, overlap=10, min_tokens=1))
    names = {part.strip().split(".")[0] for c in chunks if c.symbol for part in c.symbol.split(",")}
    assert expected <= names, [c.symbol for c in chunks]
    text = textwrap.dedent(source)
    for c in chunks:
        assert c.content.strip() == lines_of(text, c).strip()


def test_python_that_ast_cannot_parse_is_still_chunked_by_tree_sitter(minilm):
    source = "def old_style():\n    print 'python 2'\n\n\ndef other():\n    return 1\n"
    chunks = code_chunks(minilm, source, "python", Budget(max_tokens=200, overlap=10, min_tokens=1))
    assert {c.symbol for c in chunks} >= {"old_style", "other"}


def test_recursive_prefers_headings_and_paragraphs_and_respects_the_budget(minilm):
    sections = []
    for title in ("Install", "Configure", "Run"):
        paragraph = " ".join(f"The {title.lower()} step {i} explains one more detail of the setup." for i in range(8))
        sections.append(f"## {title}\n\n{paragraph}")
    text = "# Guide\n\n" + "\n\n".join(sections)
    chunks = chunk(text, "recursive", language="markdown", budget=SMALL, embedder=minilm)
    assert len(chunks) > 3
    assert all(c.token_count <= SMALL.max_tokens + 2 for c in chunks)
    assert any(c.content.startswith("## Configure") for c in chunks)
    covered = " ".join(c.content for c in chunks)
    assert all(f"The run step {i} " in covered for i in range(8))


def test_fixed_windows_have_the_size_and_overlap_asked_for(minilm):
    text = " ".join(f"word{i}" for i in range(400))
    chunks = chunk(text, "fixed", language=None, budget=Budget(max_tokens=50, overlap=10, min_tokens=5),
                   embedder=minilm)
    assert len(chunks) > 5
    assert all(c.token_count <= 50 for c in chunks)
    first, second = chunks[0].content.split(), chunks[1].content.split()
    assert set(first) & set(second), "neighbouring windows share their overlap"
    assert chunks[-1].content.endswith("word399")


def test_semantic_cuts_where_the_topic_changes(minilm):
    cooking = ["Preheat the oven to two hundred degrees.", "Mix the flour, sugar and butter in a bowl.",
               "Bake the cake for forty minutes until golden.", "Let the cake cool before slicing it."]
    networks = ["A router forwards packets between networks.", "TCP retransmits segments that are lost.",
                "DNS resolves host names to IP addresses.", "A firewall filters incoming connections."]
    text = " ".join(cooking + networks)
    chunks = chunk(text, "semantic", language=None, budget=Budget(max_tokens=200, overlap=0, min_tokens=5),
                   embedder=minilm, semantic_percentile=85)
    assert len(chunks) >= 2
    joined = [c.content for c in chunks]
    # No chunk mixes the oven with the router: the cut falls between the two topics.
    assert not any("oven" in c and "router" in c for c in joined)
    assert any(c.rstrip().endswith("slicing it.") for c in joined)


def test_language_detection_and_default_strategy():
    assert detect_language("src/app/main.py") == "python"
    assert detect_language("web/App.tsx") == "tsx"
    assert detect_language("README.md") == "markdown"
    assert detect_language("Dockerfile") == "dockerfile"
    assert detect_language("notes") is None
    assert default_strategy("rust") == "code" and default_strategy("markdown") == "recursive"
