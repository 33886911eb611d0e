//! The deep merge of the custom JSON over the stack's attributes.

use serde_json::Value;

/// Merges `over` into `base`: objects merge key by key, recursively; anything else (arrays,
/// strings, numbers, `null`) replaces what was there. New keys go after the existing ones.
pub(crate) fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_merge_and_everything_else_replaces() {
        let mut base = json!({
            "plone_instances": {"per_cpu": 2, "relstorage": {"db": {"host": "a", "name": "zodb"}}},
            "varnish_purge_urls": ["/a", "/b"],
            "keep": "x",
        });
        deep_merge(
            &mut base,
            json!({
                "plone_instances": {"relstorage": {"db": {"host": "b"}}, "site_id": "Site"},
                "varnish_purge_urls": ["/c"],
                "keep": null,
            }),
        );
        assert_eq!(
            base,
            json!({
                "plone_instances": {
                    "per_cpu": 2,
                    "relstorage": {"db": {"host": "b", "name": "zodb"}},
                    "site_id": "Site",
                },
                "varnish_purge_urls": ["/c"],
                "keep": null,
            })
        );
    }
}
