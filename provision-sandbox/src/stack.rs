//! The little the sandbox needs from a stack file: `[stack] name` and the
//! names of the `[hosts.NAME]` tables, in file order.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};

use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackHosts {
    /// `[stack] name`, if set.
    pub name: Option<String>,
    /// Host names, in the order of the file.
    pub hosts: Vec<String>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    stack: Option<StackTable>,
    #[serde(default)]
    hosts: Option<Keys>,
}

#[derive(Deserialize)]
struct StackTable {
    #[serde(default)]
    name: Option<String>,
}

/// Keys of a table in document order; values are skipped.
struct Keys(Vec<String>);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Keys, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of hosts")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

pub fn parse_stack(path: &Path, text: &str) -> Result<StackHosts> {
    let file: File = toml::from_str(text).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let mut hosts = file.hosts.map(|k| k.0).unwrap_or_default();
    // the toml map is sorted; addresses follow the file's order
    hosts.sort_by_key(|name| first_mention(text, name));
    if hosts.is_empty() {
        return Err(Error::Parse {
            path: path.to_path_buf(),
            detail: "no [hosts.NAME] tables: the sandbox boots one host per entry".into(),
        });
    }
    Ok(StackHosts {
        name: file.stack.and_then(|s| s.name),
        hosts,
    })
}

/// Where a host's table first appears (`[hosts.NAME]`, `hosts.NAME.x = ...`,
/// or `NAME = {` inside an inline `hosts` table).
fn first_mention(text: &str, name: &str) -> usize {
    let patterns = [
        format!("hosts.{name}]"),
        format!("hosts.{name}."),
        format!("hosts.\"{name}\""),
        format!("{name} = {{"),
        format!("{name}={{"),
    ];
    patterns
        .iter()
        .filter_map(|p| text.find(p.as_str()))
        .min()
        .unwrap_or(usize::MAX)
}

pub fn read_stack(path: &Path) -> Result<StackHosts> {
    let text = std::fs::read_to_string(path)
        .ctx(|| format!("cannot read the stack file {}", path.display()))?;
    parse_stack(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_in_file_order() {
        let s = parse_stack(
            Path::new("stack.toml"),
            "[stack]\nname = \"mysite\"\n[hosts.zeo]\naddress = \"10.0.0.5\"\nlayers = [\"zeoserver\"]\n[hosts.app1]\naddress = \"10.0.0.6\"\n[hosts.app2.extra]\nx = 1\n[apps.site]\nkind = \"pip\"\n",
        )
        .unwrap();
        assert_eq!(s.name.as_deref(), Some("mysite"));
        assert_eq!(s.hosts, ["zeo", "app1", "app2"]);
        let err = parse_stack(Path::new("s.toml"), "[stack]\nname = 1\n").unwrap_err();
        assert!(err.to_string().starts_with("s.toml: "), "{err}");
        assert!(parse_stack(Path::new("s.toml"), "[stack]\nname = \"x\"\n").is_err());
    }
}
