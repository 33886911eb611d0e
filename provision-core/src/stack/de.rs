//! A serde deserializer over `serde_json::Value` that knows the path of every value and keeps
//! serde's errors structured (the unknown field and the fields that were expected, the type
//! found and the type wanted), so that messages can name the place and the nearest valid key.
//!
//! [`collect`] deserializes again after each error with the offending key removed, so one run
//! reports every unknown key and wrong type of a file, not only the first.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde_json::Value;

use super::error::{Problem, ProblemKind, nearest};
use super::layer::Layer;
use super::locate::{Format, Part, Seg, Sources, display_path};

/// What was found where another type was wanted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Found {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    Array,
    Table,
    Null,
    Other(String),
}

impl Found {
    fn from_unexpected(unexp: de::Unexpected<'_>) -> Self {
        use de::Unexpected as U;
        match unexp {
            U::Bool(b) => Found::Bool(b),
            U::Unsigned(n) => Found::Int(i128::from(n)),
            U::Signed(n) => Found::Int(i128::from(n)),
            U::Float(x) => Found::Float(x),
            U::Char(c) => Found::Str(c.to_string()),
            U::Str(s) => Found::Str(s.to_string()),
            U::Seq => Found::Array,
            U::Map => Found::Table,
            U::Unit | U::Option => Found::Null,
            other => Found::Other(other.to_string()),
        }
    }

    fn describe(&self, format: Format) -> String {
        match self {
            Found::Str(s) => format!("the string {s:?}"),
            Found::Int(n) => format!("the integer {n}"),
            Found::Float(x) => format!("the number {x}"),
            Found::Bool(b) => format!("`{b}`"),
            Found::Array => "an array".to_string(),
            Found::Table => table_word(format).to_string(),
            Found::Null => "null".to_string(),
            Found::Other(s) => s.clone(),
        }
    }
}

fn table_word(format: Format) -> &'static str {
    match format {
        Format::Toml => "a table",
        Format::Json => "an object",
    }
}

/// serde's names for what a visitor expects, in words a sysadmin uses.
fn humanize_expected(expected: &str, format: Format) -> String {
    match expected {
        "u8" => "a whole number from 0 to 255".to_string(),
        "u16" => "a whole number from 0 to 65535".to_string(),
        "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)".to_string(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a boolean" => "`true` or `false`".to_string(),
        "a sequence" => "an array".to_string(),
        "a map" => table_word(format).to_string(),
        s if s.starts_with("struct ") => table_word(format).to_string(),
        s => s.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DeErrorKind {
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    UnknownVariant {
        variant: String,
        expected: &'static [&'static str],
    },
    InvalidType {
        found: Found,
        expected: String,
    },
    InvalidValue {
        found: Found,
        expected: String,
    },
    MissingField {
        field: &'static str,
    },
    Custom(String),
}

/// A deserialization error and the path of the value it is about.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeError {
    path: Option<Vec<Seg>>,
    kind: DeErrorKind,
}

impl DeError {
    fn new(kind: DeErrorKind) -> Self {
        DeError { path: None, kind }
    }

    /// Sets the path unless a deeper value already set it.
    fn at(mut self, path: &[Seg]) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_vec());
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.as_deref().map(display_path).unwrap_or_default();
        match &self.kind {
            DeErrorKind::UnknownField { field, .. } => write!(f, "{path}: unknown key `{field}`"),
            DeErrorKind::UnknownVariant { variant, .. } => {
                write!(f, "{path}: unknown value `{variant}`")
            }
            DeErrorKind::InvalidType { found, expected }
            | DeErrorKind::InvalidValue { found, expected } => {
                write!(
                    f,
                    "{path}: expected {expected}, found {}",
                    found.describe(Format::Toml)
                )
            }
            DeErrorKind::MissingField { field } => write!(f, "{path}: missing key `{field}`"),
            DeErrorKind::Custom(message) => write!(f, "{path}: {message}"),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(DeErrorKind::Custom(msg.to_string()))
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(DeErrorKind::InvalidType {
            found: Found::from_unexpected(unexp),
            expected: exp.to_string(),
        })
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(DeErrorKind::InvalidValue {
            found: Found::from_unexpected(unexp),
            expected: exp.to_string(),
        })
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(DeErrorKind::UnknownVariant {
            variant: variant.to_string(),
            expected,
        })
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(DeErrorKind::UnknownField {
            field: field.to_string(),
            expected,
        })
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::new(DeErrorKind::MissingField { field })
    }
}

/// Deserializes one value; `path` is where it sits in the document.
pub(crate) struct ValueDe<'a> {
    value: &'a Value,
    path: Vec<Seg>,
}

impl<'a> ValueDe<'a> {
    pub(crate) fn new(value: &'a Value, path: Vec<Seg>) -> Self {
        ValueDe { value, path }
    }
}

fn child(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut path = path.to_vec();
    path.push(seg);
    path
}

impl<'de> de::Deserializer<'de> for ValueDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let path = self.path;
        let result = match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_str(s),
            Value::Array(items) => visitor.visit_seq(SeqDe {
                items: items.iter().enumerate(),
                path: &path,
            }),
            Value::Object(map) => visitor.visit_map(MapDe {
                entries: map.iter(),
                pending: None,
                path: &path,
            }),
        };
        result.map_err(|e| e.at(&path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Null => visitor
                .visit_none::<DeError>()
                .map_err(|e| e.at(&self.path)),
            _ => {
                let path = self.path.clone();
                visitor.visit_some(self).map_err(|e| e.at(&path))
            }
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        visitor.visit_newtype_struct(self).map_err(|e| e.at(&path))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            Value::String(s) => {
                let access: de::value::StrDeserializer<'_, DeError> =
                    s.as_str().into_deserializer();
                visitor.visit_enum(access).map_err(|e| e.at(&self.path))
            }
            other => {
                let expected = format!(
                    "one of {}",
                    variants
                        .iter()
                        .map(|v| format!("`{v}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Err(DeError::new(DeErrorKind::InvalidType {
                    found: found_of(other),
                    expected,
                })
                .at(&self.path))
            }
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            Value::Object(_) => self.deserialize_any(visitor),
            // serde would read a struct from an array too (as a tuple): not in a config file.
            other => Err(DeError::new(DeErrorKind::InvalidType {
                found: found_of(other),
                expected: format!("struct {name}"),
            })
            .at(&self.path)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

fn found_of(value: &Value) -> Found {
    match value {
        Value::Null => Found::Null,
        Value::Bool(b) => Found::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Found::Int(i128::from(i)),
            (_, Some(u), _) => Found::Int(i128::from(u)),
            (_, _, x) => Found::Float(x.unwrap_or(f64::NAN)),
        },
        Value::String(s) => Found::Str(s.clone()),
        Value::Array(_) => Found::Array,
        Value::Object(_) => Found::Table,
    }
}

struct SeqDe<'a, I> {
    items: I,
    path: &'a [Seg],
}

impl<'de, 'v, I> de::SeqAccess<'de> for SeqDe<'_, I>
where
    I: Iterator<Item = (usize, &'v Value)>,
{
    type Error = DeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((i, value)) => seed
                .deserialize(ValueDe::new(value, child(self.path, Seg::Index(i))))
                .map(Some),
            None => Ok(None),
        }
    }
}

struct MapDe<'a, 'v, I> {
    entries: I,
    pending: Option<(&'v String, &'v Value)>,
    path: &'a [Seg],
}

impl<'de, 'v, I> de::MapAccess<'de> for MapDe<'_, 'v, I>
where
    I: Iterator<Item = (&'v String, &'v Value)>,
{
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.pending = Some((key, value));
                let key_de: de::value::StrDeserializer<'_, DeError> =
                    key.as_str().into_deserializer();
                seed.deserialize(key_de)
                    .map(Some)
                    .map_err(|e| e.at(&child(self.path, Seg::Key(key.clone()))))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let (key, value) = self
            .pending
            .take()
            .ok_or_else(|| de::Error::custom("value without a key"))?;
        seed.deserialize(ValueDe::new(value, child(self.path, Seg::Key(key.clone()))))
    }
}

/// Removes the value at `path` (relative to `root`); false if there is nothing to remove.
fn remove_at(root: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut current = root;
    for seg in parents {
        current = match (seg, current) {
            (Seg::Key(k), Value::Object(map)) => match map.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Index(i), Value::Array(items)) => match items.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, current) {
        (Seg::Key(k), Value::Object(map)) => map.shift_remove(k).is_some(),
        (Seg::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

/// Keeps array indices as written in the file while elements are removed between retries.
#[derive(Default)]
struct Removed {
    /// Original indices removed, by the original path of their array.
    by_array: HashMap<Vec<Seg>, Vec<usize>>,
    /// Original paths removed.
    paths: HashSet<Vec<Seg>>,
}

impl Removed {
    fn original(&self, path: &[Seg]) -> Vec<Seg> {
        let mut out: Vec<Seg> = Vec::with_capacity(path.len());
        for seg in path {
            match seg {
                Seg::Index(i) => {
                    let removed = self.by_array.get(&out).map(Vec::as_slice).unwrap_or(&[]);
                    // The i-th index (from 0) that was not removed.
                    let mut n = *i;
                    let mut original = 0;
                    loop {
                        if !removed.contains(&original) {
                            if n == 0 {
                                break;
                            }
                            n -= 1;
                        }
                        original += 1;
                    }
                    out.push(Seg::Index(original));
                }
                key => out.push(key.clone()),
            }
        }
        out
    }

    fn record(&mut self, original: &[Seg]) {
        if let Some((Seg::Index(i), array)) = original.split_last() {
            self.by_array.entry(array.to_vec()).or_default().push(*i);
        }
        self.paths.insert(original.to_vec());
    }
}

/// Stop after this many errors in one document; the rest would only be noise.
const MAX_ERRORS: usize = 50;

/// Deserializes `value` (found at `root` in the stack) into `T`, collecting every unknown key and
/// wrong type: after each error the offending entry is removed and deserialization is retried.
/// Returned paths are full paths, with array indices as written in the file.
pub(crate) fn collect<T: DeserializeOwned>(
    mut value: Value,
    root: &[Seg],
) -> Result<T, Vec<DeError>> {
    let mut errors = Vec::new();
    let mut removed = Removed::default();
    // (table, key) pairs suggested for unknown keys: when that key is then missing, the
    // misspelling was already reported.
    let mut suggested: HashSet<(Vec<Seg>, String)> = HashSet::new();
    loop {
        let error = match T::deserialize(ValueDe::new(&value, root.to_vec())) {
            Ok(t) if errors.is_empty() => return Ok(t),
            Ok(_) => return Err(errors),
            Err(e) => e,
        };
        let full = error.path.clone().unwrap_or_else(|| root.to_vec());
        let relative = full.get(root.len()..).unwrap_or(&[]).to_vec();
        let original = removed.original(&full);
        if let DeErrorKind::MissingField { field } = &error.kind {
            // A required key we removed ourselves after a type error: already reported.
            let mut missing = original.clone();
            missing.push(Seg::key(field));
            let misspelt = suggested.contains(&(original.clone(), field.to_string()));
            if !removed.paths.contains(&missing) && !misspelt {
                errors.push(DeError {
                    path: Some(original),
                    kind: error.kind,
                });
            }
            return Err(errors);
        }
        if let DeErrorKind::UnknownField { field, expected } = &error.kind
            && let Some(suggestion) = nearest(field, expected.iter().copied())
        {
            let table = original[..original.len().saturating_sub(1)].to_vec();
            suggested.insert((table, suggestion));
        }
        errors.push(DeError {
            path: Some(original.clone()),
            kind: error.kind,
        });
        if errors.len() >= MAX_ERRORS || !remove_at(&mut value, &relative) {
            return Err(errors);
        }
        removed.record(&original);
    }
}

/// Turns a deserialization error into a problem a sysadmin can act on.
pub(crate) fn to_problem(error: &DeError, sources: &Sources) -> Problem {
    let path = error.path.clone().unwrap_or_default();
    let valid = |expected: &[&str]| expected.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match &error.kind {
        DeErrorKind::UnknownField { field, expected } => {
            let located = sources.locate(&path, Part::Key);
            Problem {
                kind: ProblemKind::UnknownKey {
                    path: located.path,
                    suggestion: nearest(field, expected.iter().copied()),
                    valid: valid(expected),
                },
                location: located.location,
            }
        }
        DeErrorKind::UnknownVariant { variant, expected } => {
            let located = sources.locate(&path, Part::Value);
            let suggestion = nearest(variant, expected.iter().copied());
            let is_layer = expected.len() == Layer::ALL.len()
                && Layer::ALL
                    .iter()
                    .zip(expected.iter())
                    .all(|(l, e)| l.as_str() == *e);
            let kind = if is_layer {
                // Name the list, not the element: `hosts.app1.layers`.
                let list = match path.split_last() {
                    Some((Seg::Index(_), list)) => sources.locate(list, Part::Value).path,
                    _ => located.path,
                };
                ProblemKind::UnknownLayer {
                    path: list,
                    value: variant.clone(),
                    suggestion,
                }
            } else {
                ProblemKind::UnknownValue {
                    path: located.path,
                    value: variant.clone(),
                    suggestion,
                    valid: valid(expected),
                }
            };
            Problem {
                kind,
                location: located.location,
            }
        }
        DeErrorKind::InvalidType { found, expected } => {
            let located = sources.locate(&path, Part::Value);
            Problem {
                kind: ProblemKind::WrongType {
                    path: located.path,
                    expected: humanize_expected(expected, located.format),
                    found: found.describe(located.format),
                },
                location: located.location,
            }
        }
        DeErrorKind::InvalidValue { found, expected } => {
            let located = sources.locate(&path, Part::Value);
            Problem {
                kind: ProblemKind::InvalidValue {
                    path: located.path,
                    expected: humanize_expected(expected, located.format),
                    found: found.describe(located.format),
                },
                location: located.location,
            }
        }
        DeErrorKind::MissingField { field } => {
            let table = sources.locate(&path, Part::Value);
            let mut full = path.clone();
            full.push(Seg::key(field));
            let shown = sources.locate(&full, Part::Value).path;
            let shown = if table.format == Format::Json {
                // Only the table was written, in the JSON: name the key as the JSON does.
                let mut p = table.path.clone();
                if !p.is_empty() {
                    p.push('.');
                }
                p.push_str(field);
                p
            } else {
                shown
            };
            Problem {
                kind: ProblemKind::MissingKey { path: shown },
                location: table.location,
            }
        }
        DeErrorKind::Custom(message) => {
            let located = sources.locate(&path, Part::Value);
            let at = located
                .location
                .as_ref()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            Problem {
                kind: ProblemKind::Impossible {
                    message: format!("invalid value for `{}`{at}: {message}", located.path),
                },
                location: located.location,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: u32,
        #[serde(default)]
        list: Vec<Layer>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Inner,
        #[serde(default)]
        name: Option<String>,
    }

    #[test]
    fn collects_every_error_with_original_indices() {
        let value = json!({
            "inner": {"a": 1, "b": 2, "list": ["lb", "nope", "zeoserver", "bad"]},
            "nmae": "x",
        });
        let errors = collect::<Outer>(value, &[]).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "inner.b: unknown key `b`",
                "inner.list[1]: unknown value `nope`",
                "inner.list[3]: unknown value `bad`",
                "nmae: unknown key `nmae`",
            ]
        );
    }

    #[test]
    fn a_removed_required_key_is_not_reported_twice() {
        let errors = collect::<Outer>(json!({"inner": {"a": "one"}}), &[]).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "inner.a: expected u32, found the string \"one\""
        );
    }

    #[test]
    fn missing_keys_name_the_table() {
        let errors = collect::<Outer>(json!({"inner": {}}), &[Seg::key("root")]).unwrap_err();
        assert_eq!(errors[0].to_string(), "root.inner: missing key `a`");
    }
}
