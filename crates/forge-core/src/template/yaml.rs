//! YAML to JSON with positions: the template is read into a `serde_json::Value` (what the schema
//! and serde see) plus a map from document path to source position (what error messages cite).
//!
//! Built on saphyr-parser's event stream, so the YAML 1.2 core schema applies: `yes`/`no` stay
//! strings. Guards against hostile input: one document only, duplicate keys refused, the input
//! at most [`MAX_YAML_BYTES`], nesting depth bounded, and alias expansion budgeted both in nodes
//! and in bytes ([`MAX_EXPANDED_BYTES`]): a node budget alone lets a few aliases of one long
//! anchored string expand a small file into gigabytes ("billion laughs" by bytes).

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

use super::diagnostics::Diagnostic;

/// Deepest nesting accepted; templates need about 8.
const MAX_DEPTH: usize = 64;
/// Most nodes a document may expand to, aliases included.
const MAX_NODES: usize = 200_000;
/// Largest YAML input (template or playbook) accepted, checked before parsing; the bundled
/// templates are a few KiB. Readers of files should stop reading past it.
pub const MAX_YAML_BYTES: usize = 1024 * 1024;
/// Most bytes of scalars and keys a document may expand to, aliases included (each alias counts
/// the full size of what it repeats).
pub const MAX_EXPANDED_BYTES: usize = 4 * MAX_YAML_BYTES;
/// What a collection, number, boolean or null counts towards [`MAX_EXPANDED_BYTES`]: enough that
/// aliases of empty or tiny nodes cannot multiply for free.
const NODE_BYTES: usize = 8;

/// A parsed YAML document and where each of its paths starts in the source.
#[derive(Debug, Clone)]
pub struct SpannedDoc {
    pub value: Value,
    positions: HashMap<String, (usize, usize)>,
}

impl SpannedDoc {
    /// 1-based line and column of the node at `path` or, failing that, of its nearest ancestor.
    pub fn position(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            if p.is_empty() {
                return None;
            }
            p = parent_path(p);
        }
    }
}

fn parent_path(p: &str) -> &str {
    match p.rfind(['.', '[']) {
        Some(i) => &p[..i],
        None => "",
    }
}

enum Frame {
    Seq {
        items: Vec<Value>,
        path: String,
        anchor: usize,
    },
    Map {
        obj: Map<String, Value>,
        path: String,
        anchor: usize,
        key: Option<(String, Span)>,
    },
}

/// An anchored value and its cost: (nodes, bytes) of one more copy of it.
type Anchored = (Value, usize, usize);

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    positions: HashMap<String, (usize, usize)>,
    nodes: usize,
    bytes: usize,
    root: Option<Value>,
}

fn pos(span: &Span) -> (usize, usize) {
    (span.start.line(), span.start.col() + 1)
}

fn err_at(span: &Span, reason: impl Into<String>) -> Diagnostic {
    let (l, c) = pos(span);
    Diagnostic::new("", reason).at(l, c)
}

/// Parses one YAML document into JSON, recording positions.
pub fn parse_yaml(text: &str) -> Result<SpannedDoc, Diagnostic> {
    check_input_size(text.len())?;
    let mut b = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        positions: HashMap::new(),
        nodes: 0,
        bytes: 0,
        root: None,
    };
    let mut docs = 0usize;
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            let m = e.marker();
            Diagnostic::new("", format!("invalid YAML: {}", e.info())).at(m.line(), m.col() + 1)
        })?;
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                docs += 1;
                if docs > 1 {
                    return Err(err_at(
                        &span,
                        "a template file holds exactly one YAML document",
                    ));
                }
            }
            Event::Alias(id) => {
                let (nodes, bytes) = b
                    .anchors
                    .get(&id)
                    .map(|(_, n, by)| (*n, *by))
                    .ok_or_else(|| err_at(&span, "alias refers to an unknown anchor"))?;
                // Counted before the copy is made, so a bomb fails without allocating it.
                b.count(nodes, bytes, &span)?;
                let v = b.anchors[&id].0.clone();
                b.push_value(v, &span)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let bytes = text.len().max(NODE_BYTES);
                b.count(1, bytes, &span)?;
                let forced_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let v = if forced_str || style != ScalarStyle::Plain {
                    Value::String(text.into_owned())
                } else {
                    resolve_plain(&text)
                };
                if anchor > 0 {
                    b.anchors.insert(anchor, (v.clone(), 1, bytes));
                }
                b.push_value(v, &span)?;
            }
            Event::SequenceStart(anchor, _) => {
                b.count(1, NODE_BYTES, &span)?;
                let path = b.child_path(&span)?;
                b.open(
                    Frame::Seq {
                        items: Vec::new(),
                        path,
                        anchor,
                    },
                    &span,
                )?;
            }
            Event::MappingStart(anchor, _) => {
                b.count(1, NODE_BYTES, &span)?;
                let path = b.child_path(&span)?;
                b.open(
                    Frame::Map {
                        obj: Map::new(),
                        path,
                        anchor,
                        key: None,
                    },
                    &span,
                )?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (v, anchor) = match b.stack.pop() {
                    Some(Frame::Seq { items, anchor, .. }) => (Value::Array(items), anchor),
                    Some(Frame::Map { obj, anchor, .. }) => (Value::Object(obj), anchor),
                    None => return Err(err_at(&span, "unbalanced YAML collection")),
                };
                if anchor > 0 {
                    let (n, bytes) = cost(&v);
                    b.anchors.insert(anchor, (v.clone(), n, bytes));
                }
                b.attach(v, &span)?;
            }
        }
    }
    match b.root {
        Some(value) => Ok(SpannedDoc {
            value,
            positions: b.positions,
        }),
        None => Err(Diagnostic::new("", "template is empty").at(1, 1)),
    }
}

impl Builder {
    fn count(&mut self, nodes: usize, bytes: usize, span: &Span) -> Result<(), Diagnostic> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            return Err(err_at(
                span,
                format!("document expands to more than {MAX_NODES} nodes (aliases included)"),
            ));
        }
        if self.bytes > MAX_EXPANDED_BYTES {
            return Err(err_at(
                span,
                format!(
                    "document expands to more than {MAX_EXPANDED_BYTES} bytes (aliases included)"
                ),
            ));
        }
        Ok(())
    }

    /// The path the next value will have, recording its position.
    fn child_path(&mut self, span: &Span) -> Result<String, Diagnostic> {
        let path = match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { items, path, .. }) => format!("{path}[{}]", items.len()),
            Some(Frame::Map {
                key: Some((k, _)),
                path,
                ..
            }) => {
                if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                }
            }
            Some(Frame::Map { key: None, .. }) => {
                return Err(err_at(span, "mapping keys must be plain scalars"));
            }
        };
        // Keys are located at the key itself: that is the line an author looks for.
        let at = match self.stack.last() {
            Some(Frame::Map {
                key: Some((_, kspan)),
                ..
            }) => pos(kspan),
            _ => pos(span),
        };
        self.positions.entry(path.clone()).or_insert(at);
        Ok(path)
    }

    fn open(&mut self, frame: Frame, span: &Span) -> Result<(), Diagnostic> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(err_at(
                span,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    /// A scalar or alias: either a mapping key or a value.
    fn push_value(&mut self, v: Value, span: &Span) -> Result<(), Diagnostic> {
        if let Some(Frame::Map {
            key: key @ None,
            obj,
            ..
        }) = self.stack.last_mut()
        {
            let k = match v {
                Value::String(s) => s,
                Value::Null => "null".to_owned(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => return Err(err_at(span, "mapping keys must be plain scalars")),
            };
            if obj.contains_key(&k) {
                return Err(err_at(span, format!("duplicate key `{k}`")));
            }
            *key = Some((k, *span));
            return Ok(());
        }
        self.child_path(span)?;
        self.attach(v, span)
    }

    /// Places a finished value into its parent (or makes it the root).
    fn attach(&mut self, v: Value, span: &Span) -> Result<(), Diagnostic> {
        match self.stack.last_mut() {
            None => self.root = Some(v),
            Some(Frame::Seq { items, .. }) => items.push(v),
            Some(Frame::Map { obj, key, .. }) => match key.take() {
                Some((k, _)) => {
                    obj.insert(k, v);
                }
                None => return Err(err_at(span, "mapping keys must be plain scalars")),
            },
        }
        Ok(())
    }
}

/// Refuses input larger than [`MAX_YAML_BYTES`]; readers call it with a file's size too, so an
/// oversized file is refused before it is read whole.
pub fn check_input_size(len: usize) -> Result<(), Diagnostic> {
    if len > MAX_YAML_BYTES {
        return Err(Diagnostic::new(
            "",
            format!("file is {len} bytes; at most {MAX_YAML_BYTES} bytes of YAML are accepted"),
        ));
    }
    Ok(())
}

/// (nodes, bytes) of a finished value, counted as the parser counts them while reading it.
fn cost(v: &Value) -> (usize, usize) {
    let add = |(n, b): (usize, usize), (n2, b2): (usize, usize)| (n + n2, b + b2);
    match v {
        Value::Array(a) => a.iter().map(cost).fold((1, NODE_BYTES), add),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| add((1, k.len().max(NODE_BYTES)), cost(v)))
            .fold((1, NODE_BYTES), add),
        Value::String(s) => (1, s.len().max(NODE_BYTES)),
        _ => (1, NODE_BYTES),
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::Number(i.into());
        }
        // Past i64 but still a whole number (e.g. u64::MAX): keep it exact, so range checks
        // report the number the author wrote rather than a rounded float.
        if let Ok(u) = digits.parse::<u64>()
            && !s.starts_with('-')
        {
            return Value::Number(u.into());
        }
    }
    if let Some(h) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(h, 16)
    {
        return Value::Number(i.into());
    }
    if let Some(o) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(o, 8)
    {
        return Value::Number(i.into());
    }
    let looks_float = digits
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_float && let Some(n) = s.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_follow_the_core_schema() {
        let d = parse_yaml("a: 1\nb: 2.5\nc: yes\nd: true\ne: ~\nf: '3'\ng: 0x10\n").unwrap();
        assert_eq!(
            d.value,
            serde_json::json!({"a":1,"b":2.5,"c":"yes","d":true,"e":null,"f":"3","g":16})
        );
    }

    #[test]
    fn positions_point_at_keys_and_items() {
        let d = parse_yaml("spec:\n  list:\n    - x\n    - name: y\n").unwrap();
        assert_eq!(d.position("spec"), Some((1, 1)));
        assert_eq!(d.position("spec.list"), Some((2, 3)));
        assert_eq!(d.position("spec.list[1]"), Some((4, 7)));
        assert_eq!(d.position("spec.list[1].name"), Some((4, 7)));
        assert_eq!(d.position("spec.list[1].missing"), Some((4, 7)));
    }

    #[test]
    fn refuses_duplicate_keys_and_many_documents() {
        let e = parse_yaml("a: 1\na: 2\n").unwrap_err();
        assert!(e.reason.contains("duplicate key `a`"), "{e}");
        assert_eq!(e.line, Some(2));
        let e = parse_yaml("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.reason.contains("exactly one YAML document"), "{e}");
    }

    #[test]
    fn bounds_alias_expansion() {
        let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            y.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = parse_yaml(&y).unwrap_err();
        assert!(e.reason.contains("more than"), "{e}");
    }

    #[test]
    fn bounds_nesting_depth() {
        let y = "[".repeat(100) + &"]".repeat(100);
        assert!(parse_yaml(&y).unwrap_err().reason.contains("nesting"));
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let e = parse_yaml("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.reason.starts_with("invalid YAML"), "{e}");
        assert!(e.line.is_some());
    }
}
