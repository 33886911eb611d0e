//! Names of sandboxes and hosts: they become host names, netns names, cgroup
//! and directory names, so they are kept to lowercase host name labels.

use crate::error::{Error, Result};

/// Longest sandbox name (the nspawn machine name `psb-SANDBOX-HOST` must stay under 64).
pub const MAX_SANDBOX_NAME: usize = 24;
/// Longest host name.
pub const MAX_HOST_NAME: usize = 32;

fn check_label(name: &str, max: usize, what: &str) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > max {
        return bad(format!("a {what} name has 1 to {max} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return bad(format!(
            "a {what} name is a host name label: lowercase letters, digits and '-' only"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad(format!("a {what} name cannot start or end with '-'"));
    }
    Ok(())
}

pub fn check_sandbox_name(name: &str) -> Result<()> {
    check_label(name, MAX_SANDBOX_NAME, "sandbox")
}

pub fn check_host_name(name: &str) -> Result<()> {
    check_label(name, MAX_HOST_NAME, "host")?;
    if name == "localhost" {
        return Err(Error::InvalidName {
            name: name.into(),
            reason: "localhost is reserved".into(),
        });
    }
    Ok(())
}

/// Checks a list of host names: valid, at least one, no duplicates.
pub fn check_host_names(names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Err(Error::InvalidInput(
            "a sandbox needs at least one host".into(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        check_host_name(name)?;
        if !seen.insert(name) {
            return Err(Error::InvalidInput(format!(
                "host {name:?} is listed twice"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_sandbox_name("sandbox").is_ok());
        assert!(check_sandbox_name("my-site-2").is_ok());
        assert!(check_sandbox_name("My Site").is_err());
        assert!(check_sandbox_name("-x").is_err());
        assert!(check_sandbox_name(&"a".repeat(25)).is_err());
        assert!(check_host_name("app_1").is_err());
        assert!(check_host_name("web1.example.com").is_err());
        assert!(check_host_names(&["a".into(), "a".into()]).is_err());
        assert!(check_host_names(&[]).is_err());
    }
}
