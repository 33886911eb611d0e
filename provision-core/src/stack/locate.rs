//! Where things are in the input files: TOML (through toml_edit spans) and JSON (through a
//! small position-tracking scanner), so that every error can name file:line:column.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};
use toml_edit::{Document, Item};

use super::error::Location;

/// A TOML syntax error: its message and where it is (a byte range of the text).
pub(crate) struct TomlSyntax {
    pub message: String,
    pub span: Option<std::ops::Range<usize>>,
}

/// Parses TOML text into a document with spans. The text is checked with the `toml` crate
/// first: toml_edit 0.23 panics ("all items have spans") on some malformed documents (found by
/// the fuzz target), so only well-formed text reaches it.
pub(crate) fn parse_document(text: &str) -> Result<Document<&str>, TomlSyntax> {
    if let Err(e) = text.parse::<toml::Table>() {
        return Err(TomlSyntax {
            message: e.message().to_string(),
            span: e.span(),
        });
    }
    Document::parse(text).map_err(|e| TomlSyntax {
        message: e.message().to_string(),
        span: e.span(),
    })
}

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    pub(crate) fn key(name: &str) -> Seg {
        Seg::Key(name.to_string())
    }
}

/// A path written the way a TOML user writes it: `hosts.app1.layers[1]`,
/// `attributes.plone_instances.subsites."www.example.com"`.
pub(crate) struct DisplayPath<'a>(pub(crate) &'a [Seg]);

impl fmt::Display for DisplayPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

pub(crate) fn display_path(path: &[Seg]) -> String {
    DisplayPath(path).to_string()
}

/// Which input format a file is in; changes a few words in messages ("table" or "object").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Toml,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Spot {
    key: Option<Pos>,
    value: Option<Pos>,
}

/// Positions of every key and value of one file, by path.
#[derive(Debug, Clone)]
pub(crate) struct SourceMap {
    pub(crate) file: String,
    spots: HashMap<Vec<Seg>, Spot>,
}

impl SourceMap {
    fn new(file: &str) -> Self {
        SourceMap {
            file: file.to_string(),
            spots: HashMap::new(),
        }
    }

    pub(crate) fn contains(&self, path: &[Seg]) -> bool {
        self.spots.contains_key(path)
    }

    fn location(&self, pos: Pos) -> Location {
        Location {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
        }
    }

    /// Where the key that ends `path` is written (for tables from a `[header]`, the name in
    /// the header).
    pub(crate) fn key_location(&self, path: &[Seg]) -> Option<Location> {
        let spot = self.spots.get(path)?;
        spot.key.or(spot.value).map(|p| self.location(p))
    }

    /// Where the value at `path` is written (for tables from a `[header]`, the header).
    pub(crate) fn value_location(&self, path: &[Seg]) -> Option<Location> {
        let spot = self.spots.get(path)?;
        spot.value.or(spot.key).map(|p| self.location(p))
    }
}

/// Turns byte offsets into 1-based line and column (in characters).
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    pub(crate) fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        Pos {
            line: line + 1,
            column: column + 1,
        }
    }
}

/// Converts a parsed TOML document into a JSON value (tables keep their order) and records where
/// every key and value is.
pub(crate) fn toml_to_json(doc: &Document<&str>, file: &str) -> (Value, SourceMap) {
    let index = LineIndex::new(doc.raw());
    let mut map = SourceMap::new(file);
    let mut path = Vec::new();
    let value = convert_item(doc.as_item(), &mut path, &index, &mut map);
    (value, map)
}

fn convert_item(item: &Item, path: &mut Vec<Seg>, index: &LineIndex, map: &mut SourceMap) -> Value {
    match item {
        Item::None => Value::Null,
        Item::Value(value) => convert_value(value, path, index, map),
        Item::Table(table) => {
            let mut object = Map::new();
            for (name, child) in table.iter() {
                let key = table.get_key_value(name).map(|(k, _)| k);
                record(
                    key.and_then(|k| k.span()),
                    child.span(),
                    path,
                    name,
                    index,
                    map,
                );
                path.push(Seg::key(name));
                let value = convert_item(child, path, index, map);
                path.pop();
                object.insert(name.to_string(), value);
            }
            Value::Object(object)
        }
        Item::ArrayOfTables(tables) => {
            let mut array = Vec::new();
            for (i, table) in tables.iter().enumerate() {
                path.push(Seg::Index(i));
                let spot = Spot {
                    key: None,
                    value: table.span().map(|s| index.pos(s.start)),
                };
                map.spots.insert(path.clone(), spot);
                array.push(convert_item(&Item::Table(table.clone()), path, index, map));
                path.pop();
            }
            Value::Array(array)
        }
    }
}

fn record(
    key_span: Option<std::ops::Range<usize>>,
    value_span: Option<std::ops::Range<usize>>,
    path: &[Seg],
    name: &str,
    index: &LineIndex,
    map: &mut SourceMap,
) {
    let mut child = path.to_vec();
    child.push(Seg::key(name));
    let spot = Spot {
        key: key_span.map(|s| index.pos(s.start)),
        value: value_span.map(|s| index.pos(s.start)),
    };
    map.spots.insert(child, spot);
}

fn convert_value(
    value: &toml_edit::Value,
    path: &mut Vec<Seg>,
    index: &LineIndex,
    map: &mut SourceMap,
) -> Value {
    use toml_edit::Value as T;
    match value {
        T::String(s) => Value::String(s.value().clone()),
        T::Integer(i) => {
            let i = *i.value();
            match u64::try_from(i) {
                Ok(u) => Value::from(u),
                Err(_) => Value::from(i),
            }
        }
        T::Float(x) => {
            let x = *x.value();
            // JSON has no infinities or NaN: keep them as text so that a type error says what
            // was written.
            serde_json::Number::from_f64(x)
                .map_or_else(|| Value::String(x.to_string()), Value::Number)
        }
        T::Boolean(b) => Value::Bool(*b.value()),
        T::Datetime(d) => Value::String(d.value().to_string()),
        T::Array(array) => {
            let mut out = Vec::new();
            for (i, element) in array.iter().enumerate() {
                path.push(Seg::Index(i));
                let spot = Spot {
                    key: None,
                    value: element.span().map(|s| index.pos(s.start)),
                };
                map.spots.insert(path.clone(), spot);
                out.push(convert_value(element, path, index, map));
                path.pop();
            }
            Value::Array(out)
        }
        T::InlineTable(table) => {
            let mut object = Map::new();
            for (name, child) in table.iter() {
                let key = table.get_key_value(name).map(|(k, _)| k);
                record(
                    key.and_then(|k| k.span()),
                    child.span(),
                    path,
                    name,
                    index,
                    map,
                );
                path.push(Seg::key(name));
                let converted = convert_value(child, path, index, map);
                path.pop();
                object.insert(name.to_string(), converted);
            }
            Value::Object(object)
        }
    }
}

/// Records where every key and value of a JSON text is. The text must already have parsed as
/// JSON (serde_json reports syntax errors with their own positions); the scanner then only has
/// to follow the structure.
pub(crate) fn scan_json(text: &str, file: &str) -> SourceMap {
    let mut scanner = JsonScanner {
        text,
        bytes: text.as_bytes(),
        at: 0,
        index: LineIndex::new(text),
        map: SourceMap::new(file),
    };
    let mut path = Vec::new();
    scanner.skip_ws();
    scanner.value(&mut path);
    scanner.map
}

struct JsonScanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    index: LineIndex<'a>,
    map: SourceMap,
}

impl JsonScanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Skips a string starting at the opening quote and returns its raw text, quotes included.
    fn string(&mut self) -> &str {
        let start = self.at;
        self.at += 1;
        while let Some(b) = self.peek() {
            self.at += 1;
            match b {
                b'\\' => self.at += 1,
                b'"' => break,
                _ => {}
            }
        }
        &self.text[start..self.at.min(self.text.len())]
    }

    fn value(&mut self, path: &mut Vec<Seg>) {
        match self.peek() {
            Some(b'{') => {
                self.at += 1;
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b'"') => {}
                        Some(b'}') => {
                            self.at += 1;
                            return;
                        }
                        _ => return,
                    }
                    let key_pos = self.index.pos(self.at);
                    let raw = self.string();
                    let name: String = serde_json::from_str(raw).unwrap_or_default();
                    self.skip_ws();
                    if self.peek() == Some(b':') {
                        self.at += 1;
                    }
                    self.skip_ws();
                    path.push(Seg::Key(name));
                    let spot = Spot {
                        key: Some(key_pos),
                        value: Some(self.index.pos(self.at)),
                    };
                    self.map.spots.insert(path.clone(), spot);
                    self.value(path);
                    path.pop();
                    self.skip_ws();
                    if self.peek() == Some(b',') {
                        self.at += 1;
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut i = 0;
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b']') => {
                            self.at += 1;
                            return;
                        }
                        None => return,
                        _ => {}
                    }
                    path.push(Seg::Index(i));
                    let spot = Spot {
                        key: None,
                        value: Some(self.index.pos(self.at)),
                    };
                    self.map.spots.insert(path.clone(), spot);
                    self.value(path);
                    path.pop();
                    i += 1;
                    self.skip_ws();
                    if self.peek() == Some(b',') {
                        self.at += 1;
                    }
                }
            }
            Some(b'"') => {
                self.string();
            }
            Some(_) => {
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.at += 1;
                }
            }
            None => {}
        }
    }
}

/// Both inputs of a stack, to find where a path was written. The custom JSON is merged last,
/// so a path it holds is located there.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    pub(crate) toml: SourceMap,
    pub(crate) json: Option<SourceMap>,
}

/// A path as the user wrote it, and where.
pub(crate) struct Located {
    pub(crate) path: String,
    pub(crate) location: Option<Location>,
    pub(crate) format: Format,
}

#[derive(Clone, Copy)]
pub(crate) enum Part {
    Key,
    Value,
}

impl Sources {
    /// `path` is a full path of the stack file (`attributes.…` for attributes). The custom JSON
    /// holds attributes at its top level.
    pub(crate) fn locate(&self, path: &[Seg], part: Part) -> Located {
        if let (Some(json), Some((Seg::Key(first), rest))) = (&self.json, path.split_first())
            && first == "attributes"
            && !rest.is_empty()
            && json.contains(rest)
        {
            return Located {
                path: display_path(rest),
                location: match part {
                    Part::Key => json.key_location(rest),
                    Part::Value => json.value_location(rest),
                },
                format: Format::Json,
            };
        }
        let location = match part {
            Part::Key => self.toml.key_location(path),
            Part::Value => self.toml.value_location(path),
        };
        let shown = match path.split_first() {
            // An attribute written nowhere (a default): name it as the cookbook does.
            Some((Seg::Key(first), rest)) if first == "attributes" && location.is_none() => {
                display_path(rest)
            }
            _ => display_path(path),
        };
        Located {
            path: shown,
            location,
            format: Format::Toml,
        }
    }

    /// Where the value of an attribute is written, by its cookbook path (`plone_instances.per_cpu`).
    pub(crate) fn attribute(&self, dotted: &str) -> Located {
        let mut path = vec![Seg::key("attributes")];
        path.extend(dotted.split('.').map(Seg::key));
        self.locate(&path, Part::Value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(path: &str) -> Vec<Seg> {
        path.split('.').map(Seg::key).collect()
    }

    #[test]
    fn line_index_counts_characters() {
        let text = "ab\nçé = 1\n";
        let index = LineIndex::new(text);
        assert_eq!(index.pos(0), Pos { line: 1, column: 1 });
        assert_eq!(index.pos(3), Pos { line: 2, column: 1 });
        // "çé" is 4 bytes, 2 characters.
        assert_eq!(index.pos(8), Pos { line: 2, column: 4 });
    }

    #[test]
    fn toml_locations_of_keys_values_and_elements() {
        let text = "[hosts.app1]\naddress = \"10.0.0.1\"\nlayers = [\"lb\", \"zeo\"]\n";
        let doc = Document::parse(text).unwrap();
        let (value, map) = toml_to_json(&doc, "stack.toml");
        assert_eq!(value["hosts"]["app1"]["layers"][1], "zeo");
        let loc = |p: &[Seg]| map.value_location(p).unwrap().to_string();
        assert_eq!(loc(&keys("hosts.app1")), "stack.toml:1:1");
        assert_eq!(
            map.key_location(&keys("hosts.app1")).unwrap().to_string(),
            "stack.toml:1:8"
        );
        assert_eq!(loc(&keys("hosts.app1.address")), "stack.toml:2:11");
        let mut layer = keys("hosts.app1.layers");
        layer.push(Seg::Index(1));
        assert_eq!(loc(&layer), "stack.toml:3:17");
    }

    #[test]
    fn json_scanner_locates_nested_keys() {
        let text = "{\n  \"plone_instances\": {\n    \"per_cpu\": 2,\n    \"l\": [1, {\"a\\u0062\": true}]\n  }\n}";
        let map = scan_json(text, "custom.json");
        let key = |p: &[Seg]| map.key_location(p).unwrap().to_string();
        assert_eq!(key(&keys("plone_instances")), "custom.json:2:3");
        assert_eq!(key(&keys("plone_instances.per_cpu")), "custom.json:3:5");
        assert_eq!(
            map.value_location(&keys("plone_instances.per_cpu"))
                .unwrap()
                .to_string(),
            "custom.json:3:16"
        );
        let mut nested = keys("plone_instances.l");
        nested.push(Seg::Index(1));
        nested.push(Seg::key("ab"));
        assert_eq!(key(&nested), "custom.json:4:15");
    }

    #[test]
    fn paths_display_like_toml() {
        let mut path = keys("attributes.plone_instances.subsites");
        path.push(Seg::key("www.example.com"));
        assert_eq!(
            display_path(&path),
            "attributes.plone_instances.subsites.\"www.example.com\""
        );
        let path = vec![
            Seg::key("hosts"),
            Seg::key("a"),
            Seg::key("layers"),
            Seg::Index(2),
        ];
        assert_eq!(display_path(&path), "hosts.a.layers[2]");
    }
}
