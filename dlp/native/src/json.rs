//! Structure-preserving redaction of one JSON text (`dlp._json.redact_text`), for the
//! well-formed common case. Anything unusual — invalid JSON, duplicate keys, nesting deeper
//! than `MAX_DEPTH`, lone surrogates, integers beyond 64 bits, numbers beyond a double — is
//! `Outcome::Defer`: the Python path handles it and raises its precise error.
//!
//! The output is compact JSON as the Python path writes it (orjson's string escaping), except
//! that number literals are copied as written instead of being re-encoded.

use std::borrow::Cow;

use crate::scan::{KeyHint, Scanner, Span, Wanted};
use crate::types::{Date, Detector};

pub const MAX_DEPTH: usize = 512;
/// A value of letters only shorter than this holds no candidate of any pattern.
const MIN_ALPHA_CANDIDATE: usize = 20;

/// What the plan does with a value held under one key (`dlp._plan` SCAN / NAMED / BY_DETECTOR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Scan,
    Named,
    ByDetector,
}

/// What the caller (the Python plan) decides that the core does not.
pub trait Host {
    /// `plan.key_entry(key, parent)`: the hint and action for a value under `key`.
    fn key_entry(&self, key: &str, parent: &str) -> (KeyHint, Action);
    /// `key_hint(key, parent)` (list elements).
    fn key_hint(&self, key: &str, parent: &str) -> KeyHint;
    /// `replacement(type, value, mode, key)` for a mode other than mask; `number` when the
    /// value is a JSON number literal (Python formats it with `json.dumps`).
    fn replacement(&self, type_name: &str, value: &str, number: bool) -> String;
    /// `_paths._piece(key)` for a key that is not an ASCII identifier.
    fn piece(&self, key: &str) -> String;
}

/// One redaction: type, location, char offsets in the value (or -1), reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Redaction {
    pub type_name: &'static str,
    pub location: String,
    pub start: i64,
    pub end: i64,
    pub reason: &'static str,
}

pub enum Outcome {
    /// Not handled here: the caller runs the Python path.
    Defer,
    /// Nothing to redact: the text stays as it is.
    Unchanged,
    Redacted(String, Vec<Redaction>),
}

pub struct Job<'h> {
    pub wanted: &'h Wanted,
    pub mask: bool,
    pub prefix: &'h str,
    pub today: Date,
    pub host: &'h dyn Host,
}

enum Node<'a> {
    Null,
    True,
    False,
    Number(&'a str),
    Str(Cow<'a, str>),
    Array(Vec<usize>),
    Object(Vec<(Cow<'a, str>, usize)>),
}

struct Defer;

struct Parser<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    nodes: Vec<Node<'a>>,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while self.pos < self.b.len() && matches!(self.b[self.pos], b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<usize, Defer> {
        self.ws();
        let c = *self.b.get(self.pos).ok_or(Defer)?;
        let node = match c {
            b'{' => {
                if depth >= MAX_DEPTH {
                    return Err(Defer);
                }
                self.pos += 1;
                let mut members: Vec<(Cow<'a, str>, usize)> = Vec::new();
                self.ws();
                if self.b.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                } else {
                    loop {
                        self.ws();
                        if self.b.get(self.pos) != Some(&b'"') {
                            return Err(Defer);
                        }
                        let key = self.string()?;
                        self.ws();
                        if self.b.get(self.pos) != Some(&b':') {
                            return Err(Defer);
                        }
                        self.pos += 1;
                        let v = self.value(depth + 1)?;
                        if members.iter().any(|(k, _)| *k == key) {
                            return Err(Defer); // duplicate key: Python raises DuplicateKey
                        }
                        members.push((key, v));
                        self.ws();
                        match self.b.get(self.pos) {
                            Some(b',') => self.pos += 1,
                            Some(b'}') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(Defer),
                        }
                    }
                }
                Node::Object(members)
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return Err(Defer);
                }
                self.pos += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                } else {
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.ws();
                        match self.b.get(self.pos) {
                            Some(b',') => self.pos += 1,
                            Some(b']') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(Defer),
                        }
                    }
                }
                Node::Array(items)
            }
            b'"' => Node::Str(self.string()?),
            b't' => self.literal(b"true", Node::True)?,
            b'f' => self.literal(b"false", Node::False)?,
            b'n' => self.literal(b"null", Node::Null)?,
            b'-' | b'0'..=b'9' => Node::Number(self.number()?),
            _ => return Err(Defer),
        };
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    fn literal(&mut self, word: &[u8], node: Node<'a>) -> Result<Node<'a>, Defer> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(node)
        } else {
            Err(Defer)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.pos < self.b.len() && self.b[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<&'a str, Defer> {
        let start = self.pos;
        if self.b[self.pos] == b'-' {
            self.pos += 1;
        }
        let int_start = self.pos;
        let n = self.digits();
        if n == 0 || (n > 1 && self.b[int_start] == b'0') {
            return Err(Defer);
        }
        let mut integer = true;
        if self.b.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Defer);
            }
            integer = false;
        }
        if matches!(self.b.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.b.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Defer);
            }
            integer = false;
        }
        let literal = &self.src[start..self.pos];
        if integer {
            // Beyond 64 bits the Python path re-parses and re-encodes differently: defer.
            if literal.parse::<i64>().is_err() && literal.parse::<u64>().is_err() {
                return Err(Defer);
            }
        } else if !literal.parse::<f64>().map_or(false, f64::is_finite) {
            return Err(Defer); // out of the range of a double: Python raises InvalidJson
        }
        Ok(literal)
    }

    fn hex4(&mut self) -> Result<u32, Defer> {
        let h = self.src.get(self.pos..self.pos + 4).ok_or(Defer)?;
        if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Defer);
        }
        self.pos += 4;
        u32::from_str_radix(h, 16).map_err(|_| Defer)
    }

    fn string(&mut self) -> Result<Cow<'a, str>, Defer> {
        self.pos += 1; // the opening quote
        let start = self.pos;
        // Fast path: no escapes.
        loop {
            let c = *self.b.get(self.pos).ok_or(Defer)?;
            match c {
                b'"' => {
                    let s = &self.src[start..self.pos];
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                b'\\' => break,
                0..=0x1f => return Err(Defer),
                _ => self.pos += 1,
            }
        }
        let mut out = String::from(&self.src[start..self.pos]);
        loop {
            let c = *self.b.get(self.pos).ok_or(Defer)?;
            match c {
                b'"' => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                b'\\' => {
                    self.pos += 1;
                    let e = *self.b.get(self.pos).ok_or(Defer)?;
                    self.pos += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.b.get(self.pos) != Some(&b'\\') || self.b.get(self.pos + 1) != Some(&b'u') {
                                    return Err(Defer); // a lone surrogate
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(Defer);
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(Defer);
                            } else {
                                hi
                            };
                            out.push(char::from_u32(code).ok_or(Defer)?);
                        }
                        _ => return Err(Defer),
                    }
                }
                0..=0x1f => return Err(Defer),
                _ => {
                    // copy one UTF-8 character
                    let ch_len = utf8_len(c);
                    out.push_str(&self.src[self.pos..self.pos + ch_len]);
                    self.pos += ch_len;
                }
            }
        }
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// orjson's string encoding: `"`, `\` and control characters escaped, the rest as it is.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let b = s.as_bytes();
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: Option<&str> = match c {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[run..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => out.push_str(&format!("\\u{:04x}", c)),
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

#[derive(Clone)]
enum Item<'a> {
    Key(Cow<'a, str>),
    Index(usize),
}

/// Paths as parent links: (parent path node, this container's slot).
struct PathArena<'a> {
    nodes: Vec<(Option<usize>, Item<'a>)>,
}

impl<'a> PathArena<'a> {
    fn push(&mut self, parent: Option<usize>, item: Item<'a>) -> usize {
        self.nodes.push((parent, item));
        self.nodes.len() - 1
    }

    fn items(&self, mut node: Option<usize>) -> Vec<Item<'a>> {
        let mut items = Vec::new();
        while let Some(n) = node {
            items.push(self.nodes[n].1.clone());
            node = self.nodes[n].0;
        }
        items.reverse();
        items
    }
}

fn is_ascii_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn format_path(prefix: &str, items: &[Item<'_>], host: &dyn Host) -> String {
    let mut out = String::with_capacity(prefix.len() + 16);
    out.push_str(prefix);
    out.push('$');
    for item in items {
        match item {
            Item::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
            Item::Key(k) if is_ascii_identifier(k) => {
                out.push('.');
                out.push_str(k);
            }
            Item::Key(k) => out.push_str(&host.piece(k)),
        }
    }
    out
}

struct Walk<'a, 'h> {
    job: &'h Job<'h>,
    scanner: &'h Scanner,
    scan: bool,
    paths: PathArena<'a>,
    /// Queued string values: (node, hint, parent path node, slot)
    queued: Vec<(usize, KeyHint, Option<usize>, Item<'a>)>,
    replaced: std::collections::HashMap<usize, String>,
    redactions: Vec<Redaction>,
}

fn field_type(hint: &KeyHint) -> &'static str {
    hint.detector.map_or("FIELD", Detector::name)
}

impl<'a, 'h> Walk<'a, 'h> {
    fn wants_scan(&self, s: &str) -> bool {
        !s.is_empty()
            && self.scan
            && !(s.len() < MIN_ALPHA_CANDIDATE && s.bytes().all(|c| c.is_ascii_alphabetic()))
    }

    fn container(&mut self, nodes: &[Node<'a>], id: usize, key: &str, parent: &str, pnode: Option<usize>) {
        match &nodes[id] {
            Node::Object(members) => {
                for (k, v) in members {
                    let (hint, action) = self.job.host.key_entry(k, key);
                    match (&nodes[*v], action) {
                        (_, Action::Named) => self.force(nodes, *v, field_type(&hint), pnode, Item::Key(k.clone())),
                        (Node::Null | Node::True | Node::False, Action::ByDetector) => {}
                        (_, Action::ByDetector) => {
                            self.force(nodes, *v, field_type(&hint), pnode, Item::Key(k.clone()))
                        }
                        (Node::Str(s), Action::Scan) => {
                            if self.wants_scan(s) {
                                self.queued.push((*v, hint, pnode, Item::Key(k.clone())));
                            }
                        }
                        (Node::Object(_) | Node::Array(_), Action::Scan) => {
                            let child = self.paths.push(pnode, Item::Key(k.clone()));
                            self.container(nodes, *v, k, key, Some(child));
                        }
                        _ => {}
                    }
                }
            }
            Node::Array(items) => {
                let hint = if key.is_empty() { KeyHint::default() } else { self.job.host.key_hint(key, parent) };
                for (i, v) in items.iter().enumerate() {
                    match &nodes[*v] {
                        Node::Str(s) => {
                            if self.wants_scan(s) {
                                self.queued.push((*v, hint, pnode, Item::Index(i)));
                            }
                        }
                        Node::Object(_) | Node::Array(_) => {
                            let child = self.paths.push(pnode, Item::Index(i));
                            self.container(nodes, *v, key, parent, Some(child));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// Redact `id` whole because of its field name (leaf by leaf, keeping its shape).
    fn force(&mut self, nodes: &[Node<'a>], id: usize, type_name: &'static str, pnode: Option<usize>, slot: Item<'a>) {
        let mut path = self.paths.items(pnode);
        path.push(slot);
        self.force_leaves(nodes, id, type_name, &mut path);
    }

    fn force_leaves(&mut self, nodes: &[Node<'a>], id: usize, type_name: &'static str, path: &mut Vec<Item<'a>>) {
        let value: (&str, bool) = match &nodes[id] {
            Node::Object(members) => {
                for (k, v) in members {
                    path.push(Item::Key(k.clone()));
                    self.force_leaves(nodes, *v, type_name, path);
                    path.pop();
                }
                return;
            }
            Node::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(Item::Index(i));
                    self.force_leaves(nodes, *v, type_name, path);
                    path.pop();
                }
                return;
            }
            Node::Str(s) => {
                if s.starts_with('[') && self.scanner.own_token_fullmatch(s) {
                    return; // already redacted
                }
                (s, false)
            }
            Node::Number(n) => (n, true),
            Node::Null | Node::True | Node::False => return,
        };
        let new = if self.job.mask {
            format!("[REDACTED:{type_name}]")
        } else {
            self.job.host.replacement(type_name, value.0, value.1)
        };
        self.replaced.insert(id, new);
        let location = format_path(self.job.prefix, path, self.job.host);
        self.redactions.push(Redaction { type_name, location, start: -1, end: -1, reason: "field" });
    }
}

fn char_offset(s: &str, byte: usize) -> i64 {
    let head = &s.as_bytes()[..byte];
    if head.is_ascii() {
        byte as i64
    } else {
        s[..byte].chars().count() as i64
    }
}

fn emit(nodes: &[Node<'_>], id: usize, replaced: &std::collections::HashMap<usize, String>, out: &mut String) {
    if let Some(r) = replaced.get(&id) {
        write_string(out, r);
        return;
    }
    match &nodes[id] {
        Node::Null => out.push_str("null"),
        Node::True => out.push_str("true"),
        Node::False => out.push_str("false"),
        Node::Number(n) => out.push_str(n),
        Node::Str(s) => write_string(out, s),
        Node::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                emit(nodes, *v, replaced, out);
            }
            out.push(']');
        }
        Node::Object(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                emit(nodes, *v, replaced, out);
            }
            out.push('}');
        }
    }
}

fn mask_spans(value: &str, found: &[Span]) -> String {
    let mut out = String::with_capacity(value.len() + 16 * found.len());
    let mut pos = 0;
    for f in found {
        out.push_str(&value[pos..f.start]);
        out.push_str("[REDACTED:");
        out.push_str(f.detector.name());
        out.push(']');
        pos = f.end;
    }
    out.push_str(&value[pos..]);
    out
}

/// Redact one JSON text; see the module docstring for what is deferred to Python.
pub fn redact_text(text: &str, scanner: &Scanner, job: &Job<'_>) -> Outcome {
    let mut parser = Parser { src: text, b: text.as_bytes(), pos: 0, nodes: Vec::new() };
    let root = match parser.value(0) {
        Ok(r) => r,
        Err(Defer) => return Outcome::Defer,
    };
    parser.ws();
    if parser.pos != text.len() {
        return Outcome::Defer;
    }
    let nodes = parser.nodes;
    let mut walk = Walk {
        job,
        scanner,
        scan: job.wanted.on.iter().any(|&w| w),
        paths: PathArena { nodes: Vec::new() },
        queued: Vec::new(),
        replaced: std::collections::HashMap::new(),
        redactions: Vec::new(),
    };
    match &nodes[root] {
        Node::Str(s) => {
            if !s.is_empty() && walk.scan {
                walk.queued.push((root, KeyHint::default(), None, Item::Index(0)));
            }
        }
        Node::Object(_) | Node::Array(_) => walk.container(&nodes, root, "", "", None),
        _ => {}
    }
    if !walk.queued.is_empty() {
        let values: Vec<&str> = walk
            .queued
            .iter()
            .map(|(id, _, _, _)| match &nodes[*id] {
                Node::Str(s) => s.as_ref(),
                _ => "",
            })
            .collect();
        let hints: Vec<KeyHint> = walk.queued.iter().map(|q| q.1).collect();
        let found_all = scanner.scan_segments(&values, &hints, job.wanted, job.today);
        for (i, found) in found_all.iter().enumerate() {
            if found.is_empty() {
                continue;
            }
            let (id, _, pnode, slot) = &walk.queued[i];
            let mut path = walk.paths.items(*pnode);
            path.push(slot.clone());
            let location = format_path(job.prefix, &path, job.host);
            let value = values[i];
            for f in found {
                walk.redactions.push(Redaction {
                    type_name: f.detector.name(),
                    location: location.clone(),
                    start: char_offset(value, f.start),
                    end: char_offset(value, f.end),
                    reason: "detector",
                });
            }
            let new = if job.mask {
                mask_spans(value, found)
            } else {
                let mut out = String::new();
                let mut pos = 0;
                for f in found {
                    out.push_str(&value[pos..f.start]);
                    out.push_str(&job.host.replacement(f.detector.name(), &value[f.start..f.end], false));
                    pos = f.end;
                }
                out.push_str(&value[pos..]);
                out
            };
            walk.replaced.insert(*id, new);
        }
    }
    if walk.redactions.is_empty() {
        return Outcome::Unchanged;
    }
    let mut out = String::with_capacity(text.len() + 64);
    emit(&nodes, root, &walk.replaced, &mut out);
    Outcome::Redacted(out, walk.redactions)
}
