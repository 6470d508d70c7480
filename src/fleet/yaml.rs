//! Splitting fleet files into YAML documents, and remembering where every node of a document
//! stands in its file.
//!
//! `serde_yaml` resolves the documents into values (YAML 1.2 scalars, anchors, tags); a second,
//! event-level pass with `yaml-rust2` records the line and column of every key and value by
//! path, so that an error found long after parsing (a bound violated, a duplicate name) can
//! still name the file, line and column it comes from. Pure: text in, values out.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, Parser};
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

/// Deepest nesting of collections a fleet document may have. A fleet document needs fewer
/// than ten levels; the bound keeps hostile input (thousands of nested `[`) from costing
/// quadratic time in the YAML parser or deep recursion anywhere after it.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy)]
struct NodePos {
    key: Option<Position>,
    value: Position,
}

/// Where every key and value of one document stands in its file.
///
/// Stored as a tree (each node its parent's child by key or index), so the index stays linear
/// in the size of the document however deep its paths are.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    start: Position,
    nodes: Vec<NodePos>,
    children: HashMap<(usize, Seg), usize>,
}

impl Positions {
    /// Position of the value at `path`, or of its nearest recorded ancestor.
    pub fn value(&self, path: &Path) -> Position {
        self.nearest(path).map_or(self.start, |n| n.value)
    }

    /// Position of the key that introduces `path` (for "unknown field" and similar), falling
    /// back to the value and then to ancestors.
    pub fn key(&self, path: &Path) -> Position {
        self.nearest(path)
            .map_or(self.start, |n| n.key.unwrap_or(n.value))
    }

    /// Where the document starts.
    pub fn start(&self) -> Position {
        self.start
    }

    /// The deepest recorded node on `path`.
    fn nearest(&self, path: &Path) -> Option<&NodePos> {
        let mut cur = 0;
        let mut found = self.nodes.first()?;
        for seg in &path.0 {
            match self.children.get(&(cur, seg.clone())) {
                Some(&child) => {
                    cur = child;
                    found = &self.nodes[child];
                }
                None => break,
            }
        }
        Some(found)
    }

    fn add(&mut self, parent: Option<(usize, Seg)>, pos: NodePos) -> usize {
        let id = self.nodes.len();
        self.nodes.push(pos);
        if let Some(edge) = parent {
            self.children.insert(edge, id);
        }
        id
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
///
/// The event pass of `yaml-rust2` runs first, in time linear in the text: it records the
/// positions and refuses nesting deeper than [`MAX_DEPTH`] before `serde_yaml` (whose scanner
/// costs time proportional to the nesting depth for every token) ever sees the text.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let positions = match record(text) {
        Ok(docs) => Some(docs),
        Err(Failure::TooDeep(position)) => {
            return Err(SyntaxError {
                position,
                message: format!(
                    "nesting deeper than {MAX_DEPTH} levels (a fleet document needs fewer than 10)"
                ),
            });
        }
        Err(Failure::Syntax(e)) => return Err(explain(text, e)),
    };
    let mut values = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let value: serde_yaml::Value =
            serde::Deserialize::deserialize(de).map_err(|e| syntax_error(&e))?;
        values.push(value);
    }
    // If yaml-rust2 disagrees with serde_yaml on the number of documents, positions fall back
    // to the start of the file rather than failing a valid document.
    let positions = match positions {
        Some(docs) if docs.len() == values.len() => docs,
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

enum Failure {
    TooDeep(Position),
    Syntax(yaml_rust2::ScanError),
}

/// The event pass: every document's positions, or why the text cannot be read.
fn record(text: &str) -> Result<Vec<Positions>, Failure> {
    let mut recorder = Recorder::default();
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| {
            // yaml-rust2 counts flow levels in a u8 and reports the overflow as a syntax error
            if e.info().contains("recursion limit") {
                Failure::TooDeep(Position::from(*e.marker()))
            } else {
                Failure::Syntax(e)
            }
        })?;
        match event {
            Event::StreamEnd => break,
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Failure::TooDeep(Position::from(mark)));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
        recorder.on_event(event, mark);
    }
    Ok(recorder.docs)
}

/// A syntax error found by the event pass, in serde_yaml's words where serde_yaml finds the
/// same error: it reads only the text up to the end of the line yaml-rust2 stopped at (nesting
/// there is known to be bounded), and its message is taken when it stops before that end.
fn explain(text: &str, e: yaml_rust2::ScanError) -> SyntaxError {
    let at = Position::from(*e.marker());
    // yaml-rust2 counts characters, not bytes
    let offset = text
        .char_indices()
        .nth(e.marker().index())
        .map_or(text.len(), |(byte, _)| byte);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let prefix = &text[..end];
    let lines_in_prefix = prefix.lines().count().max(1);
    for de in serde_yaml::Deserializer::from_str(prefix) {
        if let Err(e) = <serde_yaml::Value as serde::Deserialize>::deserialize(de) {
            let err = syntax_error(&e);
            if err.position.line <= lines_in_prefix && err.position <= at {
                return err;
            }
            break;
        }
    }
    let mut message = e.info().to_owned();
    if let Some(rest) = message.strip_prefix("while ")
        && let Some((context, problem)) = rest.split_once(", ")
    {
        message = format!("{problem}, while {context}");
    }
    SyntaxError {
        position: at,
        message,
    }
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
        id: usize,
        /// The key just read, waiting for its value.
        key: Option<(String, Position)>,
    },
    Seq {
        id: usize,
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
    /// Record a node that starts at `pos` and return its id (None when it is a key or inside
    /// a skipped complex key; the outer None when there is no document).
    fn node(&mut self, pos: Position, is_scalar_text: Option<&str>) -> Option<Option<usize>> {
        let doc = self.current.as_mut()?;
        let plain = |value| NodePos { key: None, value };
        match self.stack.last_mut() {
            None => {
                doc.start = pos;
                doc.nodes.clear();
                doc.children.clear();
                Some(Some(doc.add(None, plain(pos))))
            }
            Some(Frame::Skip) => Some(None),
            Some(Frame::Seq { id, next }) => {
                let edge = (*id, Seg::Index(*next));
                *next += 1;
                Some(Some(doc.add(Some(edge), plain(pos))))
            }
            Some(Frame::Map { id, key }) => match key.take() {
                None => {
                    // This node is a key. yaml-rust2 marks a block mapping where it sees the
                    // first `:`; the mapping really starts at its first key.
                    if let Some(n) = doc.nodes.get_mut(*id)
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
                    let edge = (*id, Seg::Key(k));
                    let node = NodePos {
                        key: Some(kpos),
                        value: pos,
                    };
                    Some(Some(doc.add(Some(edge), node)))
                }
            },
        }
    }

    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Position::from(mark);
        match ev {
            Event::DocumentStart => {
                self.current = Some(Positions {
                    start: pos,
                    ..Positions::default()
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
                    Some(Some(id)) if is_map => Frame::Map { id, key: None },
                    Some(Some(id)) => Frame::Seq { id, next: 0 },
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
    fn syntax_errors_after_multibyte_characters() {
        let err = parse_documents("a: \"ééééé\"\nb: [1, 2\nc: ü\n").unwrap_err();
        assert_eq!(err.position.line, 3, "{err:?}");
        let err = parse_documents("é: ü\nb: @x\n").unwrap_err();
        assert_eq!(err.position.line, 2, "{err:?}");
    }

    #[test]
    fn nesting_is_bounded_before_serde_yaml_parses() {
        for text in [
            format!("a: {}", "[".repeat(100_000)),
            format!("a: {}", "{b: ".repeat(100_000)),
            format!("a:\n{}x\n", "- ".repeat(100_000)),
        ] {
            let err = parse_documents(&text).unwrap_err();
            assert!(
                err.message.contains("nesting deeper than 64 levels"),
                "{err:?}"
            );
        }
        let ok = format!("a: {}1{}\n", "[".repeat(63), "]".repeat(63));
        assert!(parse_documents(&ok).is_ok());
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
