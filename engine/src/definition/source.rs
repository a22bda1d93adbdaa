//! Positions of YAML keys and values by path, read with yaml-rust2's marked
//! event parser beside serde_yaml.
//!
//! serde_yaml reports positions for syntax and shape errors only; semantic
//! errors found by `compile` (an unknown state, a bad duration) need the
//! position of the offending value. `compile` addresses values by [`Path`]
//! and asks this map where they are. It must not interpret the YAML.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A position in a file, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// A path to a value: `states.reviewing.on.return[0].goto`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Path(String);

impl Path {
    pub fn root() -> Self {
        Path(String::new())
    }
    pub fn key(&self, k: &str) -> Path {
        if self.0.is_empty() {
            Path(k.to_string())
        } else {
            Path(format!("{}.{k}", self.0))
        }
    }
    pub fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: Option<Pos>,
    value: Pos,
}

/// Key and value positions of every node of one YAML document.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    entries: HashMap<String, Entry>,
}

impl SourceMap {
    /// Build the map; a text that does not parse yields an empty map (the
    /// serde_yaml error already carries the position then).
    pub fn build(text: &str) -> SourceMap {
        let mut b = Builder {
            map: SourceMap::default(),
            stack: Vec::new(),
        };
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut b, false).is_err() {
            return SourceMap::default();
        }
        b.map
    }

    /// Position of the value at `path`, or of its nearest ancestor.
    pub fn value(&self, path: &Path) -> Pos {
        self.lookup(path, false)
    }

    /// Position of the key naming the value at `path` (the value's for list items).
    pub fn key(&self, path: &Path) -> Pos {
        self.lookup(path, true)
    }

    fn lookup(&self, path: &Path, key: bool) -> Pos {
        let mut p = path.as_str();
        loop {
            if let Some(e) = self.entries.get(p) {
                return if key {
                    e.key.unwrap_or(e.value)
                } else {
                    e.value
                };
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return Pos { line: 1, col: 1 },
            }
        }
    }
}

enum Frame {
    /// A mapping: the next scalar is a key when `pending` is None.
    Map {
        path: Path,
        pending: Option<(String, Pos)>,
    },
    Seq {
        path: Path,
        next: usize,
    },
}

struct Builder {
    map: SourceMap,
    stack: Vec<Frame>,
}

fn pos(m: Marker) -> Pos {
    // yaml-rust2 0.10 counts lines from 1 and columns from 0.
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

impl Builder {
    /// Where the node starting now lives, taking the pending key if any.
    /// Returns None when the scalar is itself a mapping key.
    fn place(&mut self, is_scalar: bool, text: &str, at: Pos) -> Option<(Path, Option<Pos>)> {
        match self.stack.last_mut() {
            None => Some((Path::root(), None)),
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                Some((p, None))
            }
            Some(Frame::Map { path, pending }) => match pending.take() {
                Some((k, kpos)) => Some((path.key(&k), Some(kpos))),
                None => {
                    if is_scalar {
                        *pending = Some((text.to_string(), at));
                    } else {
                        // Complex keys are not used by the language; track nothing.
                        *pending = Some((String::from("?"), at));
                    }
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = pos(mark);
        match ev {
            Event::Scalar(text, ..) => {
                if let Some((p, key)) = self.place(true, &text, at) {
                    self.map.entries.insert(p.0, Entry { key, value: at });
                }
            }
            Event::Alias(_) => {
                if let Some((p, key)) = self.place(true, "*", at) {
                    self.map.entries.insert(p.0, Entry { key, value: at });
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                let (p, key) = self
                    .place(false, "", at)
                    .unwrap_or((Path(String::from("?")), None));
                self.map
                    .entries
                    .insert(p.0.clone(), Entry { key, value: at });
                self.stack.push(if is_map {
                    Frame::Map {
                        path: p,
                        pending: None,
                    }
                } else {
                    Frame::Seq { path: p, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_values_by_path() {
        let text = "a: 1\nstates:\n  s1:\n    on:\n      go:\n        - goto: x\n          if: y\nlist: [p, q]\n";
        let m = SourceMap::build(text);
        assert_eq!(m.value(&Path::root().key("a")), Pos { line: 1, col: 4 });
        let goto = Path::root()
            .key("states")
            .key("s1")
            .key("on")
            .key("go")
            .index(0)
            .key("goto");
        assert_eq!(m.value(&goto), Pos { line: 6, col: 17 });
        assert_eq!(m.key(&goto), Pos { line: 6, col: 11 });
        assert_eq!(
            m.key(&Path::root().key("states").key("s1")),
            Pos { line: 3, col: 3 }
        );
        assert_eq!(
            m.value(&Path::root().key("list").index(1)),
            Pos { line: 8, col: 11 }
        );
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(m.value(&goto.key("nope")), Pos { line: 6, col: 17 });
    }
}
