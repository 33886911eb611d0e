//! The one template environment: minijinja with strict undefined (a missing value is an error,
//! not an empty string), no auto-escaping (we render config files, not HTML: `schema.xml` must
//! not be HTML-escaped), trailing newlines kept, and block tags that leave no blank lines.
//!
//! Each crate embeds its templates at compile time (`include_str!`) and lists them with an
//! example context, so one test can render every template of the workspace.

use minijinja::{AutoEscape, Environment, UndefinedBehavior, syntax::SyntaxConfig};
use serde::Serialize;

/// A template embedded in a crate, with a context that renders it (for tests and docs).
#[derive(Clone, Copy)]
pub struct TemplateSource {
    pub name: &'static str,
    pub source: &'static str,
    /// A JSON context that exercises the template.
    pub example: &'static str,
}

#[derive(Debug, thiserror::Error)]
#[error("template {name}: {message}")]
pub struct TemplateError {
    pub name: String,
    pub message: String,
}

impl TemplateError {
    fn new(name: &str, error: &minijinja::Error) -> TemplateError {
        // `{:#}` includes the line of the template that failed.
        TemplateError {
            name: name.to_string(),
            message: format!("{error:#}"),
        }
    }
}

pub struct Templates {
    env: Environment<'static>,
    names: Vec<&'static str>,
}

impl Templates {
    /// An environment holding the given templates; a syntax error in any of them is an error
    /// here, not at render time.
    pub fn new(sources: &[TemplateSource]) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(true)
                .build()
                .expect("the default delimiters are valid"),
        );
        env.add_filter("shell_quote", |s: String| crate::shell::quote(&s));
        let mut names = Vec::new();
        for t in sources {
            env.add_template(t.name, t.source)
                .map_err(|e| TemplateError::new(t.name, &e))?;
            names.push(t.name);
        }
        Ok(Templates { env, names })
    }

    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    pub fn render(&self, name: &str, context: &impl Serialize) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| TemplateError::new(name, &e))?;
        template
            .render(minijinja::value::Serde(context))
            .map_err(|e| TemplateError::new(name, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCES: &[TemplateSource] = &[TemplateSource {
        name: "test.conf.j2",
        source: "{% for s in servers %}\nserver {{ s }}\n{% endfor %}\nraw {{ raw }}\n",
        example: r#"{"servers": ["a", "b"], "raw": "a&b<c"}"#,
    }];

    #[test]
    fn renders_without_escaping_and_keeps_the_final_newline() {
        let t = Templates::new(SOURCES).unwrap();
        let ctx: serde_json::Value = serde_json::from_str(SOURCES[0].example).unwrap();
        assert_eq!(
            t.render("test.conf.j2", &ctx).unwrap(),
            "server a\nserver b\nraw a&b<c\n"
        );
    }

    #[test]
    fn a_missing_value_is_an_error_naming_the_template() {
        let t = Templates::new(SOURCES).unwrap();
        let err = t
            .render("test.conf.j2", &serde_json::json!({"servers": []}))
            .unwrap_err();
        assert!(
            err.to_string().starts_with("template test.conf.j2:"),
            "{err}"
        );
        assert!(err.to_string().contains("undefined"), "{err}");
    }

    #[test]
    fn a_syntax_error_is_found_when_the_environment_is_built() {
        let bad = [TemplateSource {
            name: "bad.j2",
            source: "{% if x %}",
            example: "{}",
        }];
        assert!(Templates::new(&bad).is_err());
    }
}
