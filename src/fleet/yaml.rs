//! Splitting fleet files into YAML documents, and remembering where every node of a document
//! stands in its file.
//!
//! `serde_yaml` resolves the documents into values (YAML 1.2 scalars, anchors, tags); a second,
//! event-level pass with `yaml-rust2` records the line and column of every key and value by
//! path, so that an error found long after parsing (a bound violated, a duplicate name) can
//! still name the file, line and column it comes from. Pure: text in, values out.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl From<Marker> for Position {
    fn from(m: Marker) -> Self {
        Position {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// One step of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path into a document, e.g. `spec.disks[1].size`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Path(pub Vec<Seg>);

impl Path {
    pub fn root() -> Self {
        Path(Vec::new())
    }

    /// The path one key further down.
    pub fn key(&self, key: &str) -> Path {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Path(segs)
    }

    /// The path one sequence index further down.
    pub fn index(&self, index: usize) -> Path {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Path(segs)
    }

    /// Parse a dotted path such as `spec.disks[1].size` (keys must not contain `.` or `[`).
    pub fn parse(dotted: &str) -> Path {
        let mut segs = Vec::new();
        for part in dotted.split('.').filter(|p| !p.is_empty()) {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !key.is_empty() {
                segs.push(Seg::Key(key.to_owned()));
            }
            while let Some(close) = rest.find(']') {
                if let Ok(i) = rest[1..close].parse() {
                    segs.push(Seg::Index(i));
                }
                rest = &rest[close + 1..];
            }
        }
        Path(segs)
    }

    pub fn parent(&self) -> Option<Path> {
        let mut segs = self.0.clone();
        segs.pop().map(|_| Path(segs))
    }

    /// Replace a prefix of this path by another (used to map an expanded WukongSet member
    /// back to its template).
    pub fn rebase(&self, onto: &Path) -> Path {
        let mut segs = onto.0.clone();
        segs.extend(self.0.iter().cloned());
        Path(segs)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct NodePos {
    key: Option<Position>,
    value: Position,
}

/// Where every key and value of one document stands in its file.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    start: Position,
    nodes: HashMap<Path, NodePos>,
}

impl Positions {
    /// Position of the value at `path`, or of its nearest recorded ancestor.
    pub fn value(&self, path: &Path) -> Position {
        self.walk_up(path, |n| n.value)
    }

    /// Position of the key that introduces `path` (for "unknown field" and similar), falling
    /// back to the value and then to ancestors.
    pub fn key(&self, path: &Path) -> Position {
        self.walk_up(path, |n| n.key.unwrap_or(n.value))
    }

    /// Where the document starts.
    pub fn start(&self) -> Position {
        self.start
    }

    fn walk_up(&self, path: &Path, pick: impl Fn(&NodePos) -> Position) -> Position {
        let mut p = Some(path.clone());
        while let Some(cur) = p {
            if let Some(n) = self.nodes.get(&cur) {
                return pick(n);
            }
            p = cur.parent();
        }
        self.start
    }
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// 0-based position of the document in its file.
    pub index: usize,
    pub value: serde_yaml::Value,
    pub positions: Positions,
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub position: Position,
    pub message: String,
}

/// Parse every document of a file. Empty documents (`---` alone, comments only) are returned
/// as `Value::Null`; the caller skips them.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut values = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let value: serde_yaml::Value =
            serde::Deserialize::deserialize(de).map_err(|e| syntax_error(&e))?;
        values.push(value);
    }
    let mut recorder = Recorder::default();
    let mut parser = Parser::new_from_str(text);
    // serde_yaml accepted the text; if yaml-rust2 disagrees on it, positions fall back to the
    // start of the file rather than failing a valid document.
    let positions = match parser.load(&mut recorder, true) {
        Ok(()) if recorder.docs.len() == values.len() => recorder.docs,
        _ => vec![Positions::default(); values.len()],
    };
    Ok(values
        .into_iter()
        .zip(positions)
        .enumerate()
        .map(|(index, (value, positions))| Document {
            index,
            value,
            positions,
        })
        .collect())
}

fn syntax_error(e: &serde_yaml::Error) -> SyntaxError {
    let position = e
        .location()
        .map(|l| Position {
            line: l.line(),
            column: l.column(),
        })
        .unwrap_or(Position { line: 1, column: 1 });
    // serde_yaml appends " at line L column C" to its messages; the position is reported
    // separately, so strip it.
    let mut message = e.to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    SyntaxError { position, message }
}

enum Frame {
    Map {
        path: Path,
        /// The key just read, waiting for its value.
        key: Option<(String, Position)>,
    },
    Seq {
        path: Path,
        next: usize,
    },
    /// A complex (non-scalar) mapping key: its contents are not addressable by path.
    Skip,
}

#[derive(Default)]
struct Recorder {
    docs: Vec<Positions>,
    current: Option<Positions>,
    stack: Vec<Frame>,
}

impl Recorder {
    /// Record a node that starts at `mark` and return its path (None when inside a skipped
    /// complex key).
    fn node(&mut self, pos: Position, is_scalar_text: Option<&str>) -> Option<Option<Path>> {
        let doc = self.current.as_mut()?;
        match self.stack.last_mut() {
            None => {
                doc.start = pos;
                doc.nodes.insert(
                    Path::root(),
                    NodePos {
                        key: None,
                        value: pos,
                    },
                );
                Some(Some(Path::root()))
            }
            Some(Frame::Skip) => Some(None),
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                doc.nodes.insert(
                    p.clone(),
                    NodePos {
                        key: None,
                        value: pos,
                    },
                );
                Some(Some(p))
            }
            Some(Frame::Map { path, key }) => match key.take() {
                None => {
                    // This node is a key. yaml-rust2 marks a block mapping where it sees the
                    // first `:`; the mapping really starts at its first key.
                    if let Some(n) = doc.nodes.get_mut(path)
                        && pos < n.value
                    {
                        n.value = pos;
                    }
                    if let Some(text) = is_scalar_text {
                        *key = Some((text.to_owned(), pos));
                        Some(None)
                    } else {
                        // complex key: mark with a placeholder so the value is skipped too
                        *key = Some((String::new(), pos));
                        None
                    }
                }
                Some((k, kpos)) => {
                    let p = path.key(&k);
                    doc.nodes.insert(
                        p.clone(),
                        NodePos {
                            key: Some(kpos),
                            value: pos,
                        },
                    );
                    Some(Some(p))
                }
            },
        }
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Position::from(mark);
        match ev {
            Event::DocumentStart => {
                self.current = Some(Positions {
                    start: pos,
                    nodes: HashMap::new(),
                });
                self.stack.clear();
            }
            Event::DocumentEnd => {
                if let Some(doc) = self.current.take() {
                    self.docs.push(doc);
                }
            }
            Event::Scalar(text, ..) => {
                self.node(pos, Some(&text));
            }
            Event::Alias(_) => {
                self.node(pos, Some(""));
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                let frame = match self.node(pos, None) {
                    Some(Some(path)) if is_map => Frame::Map { path, key: None },
                    Some(Some(path)) => Frame::Seq { path, next: 0 },
                    _ => Frame::Skip,
                };
                self.stack.push(frame);
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
    fn positions_of_keys_and_values_in_a_multi_document_file() {
        let text = "\
a: 1
---
kind: Wukong
spec:
  disks:
    - name: system
      size: 20Gi
    - name: data
      size: 100Gi
";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        let p = &docs[1].positions;
        assert_eq!(
            p.value(&Path::parse("kind")),
            Position { line: 3, column: 7 }
        );
        assert_eq!(
            p.value(&Path::parse("spec.disks[1].size")),
            Position {
                line: 9,
                column: 13
            }
        );
        assert_eq!(
            p.key(&Path::parse("spec.disks[1].size")),
            Position { line: 9, column: 7 }
        );
        // unknown paths fall back to the nearest ancestor
        assert_eq!(
            p.value(&Path::parse("spec.disks[1].nope")),
            Position { line: 8, column: 7 }
        );
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let err = parse_documents("a: 1\nb: [1, 2\n").unwrap_err();
        assert_eq!(err.position.line, 3);
        assert!(!err.message.contains(" at line "), "{}", err.message);
    }

    #[test]
    fn complex_keys_do_not_derail_the_index() {
        let docs = parse_documents("? [a, b]\n: 1\nc: 2\n").unwrap();
        assert_eq!(
            docs[0].positions.value(&Path::parse("c")),
            Position { line: 3, column: 4 }
        );
    }

    #[test]
    fn path_display_and_parse_round_trip() {
        let p = Path::parse("spec.networks[2].ipConfig.address");
        assert_eq!(p.to_string(), "spec.networks[2].ipConfig.address");
        assert_eq!(Path::parse("a[0][1].b").to_string(), "a[0][1].b");
    }
}
