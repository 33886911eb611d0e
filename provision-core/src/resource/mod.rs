//! Resources: the things a host should have. Each one knows how to check itself (a shell
//! fragment that prints its state), how to tell what differs, and how to fix that (another
//! fragment). The engine batches the checks of all resources of a host into one script and the
//! fixes into another, so a converge costs a constant number of round trips.

mod directory;
mod file;
mod mount;
mod package;
mod script;
mod service;
mod symlink;
mod timer;
mod user;

pub use directory::Directory;
pub use file::File;
pub use mount::Mount;
pub use package::Packages;
pub use script::Script;
pub use service::{Instances, Service, ServiceState, Unit};
pub use symlink::Symlink;
pub use timer::Timer;
pub use user::{Group, User, is_valid_account_name};

/// One thing a host should have.
#[derive(Debug, Clone)]
pub enum Resource {
    File(File),
    Directory(Directory),
    Symlink(Symlink),
    Packages(Packages),
    User(User),
    Group(Group),
    Unit(Unit),
    Service(Service),
    Instances(Instances),
    Mount(Mount),
    Script(Script),
}

/// What a resource found to change, and how to change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// One line per difference, e.g. `mode 0644 -> 0640`.
    pub summary: Vec<String>,
    /// A unified diff of file content, when content differs.
    pub diff: Option<String>,
    /// The shell fragment that fixes it; runs with `set -e` as root.
    pub fix: String,
}

impl Resource {
    /// A name unique on the host, e.g. `file:/etc/haproxy/haproxy.cfg`; services name the
    /// resources they depend on by it.
    pub fn id(&self) -> String {
        match self {
            Resource::File(r) => format!("file:{}", r.path),
            Resource::Directory(r) => format!("directory:{}", r.path),
            Resource::Symlink(r) => format!("symlink:{}", r.path),
            Resource::Packages(r) => format!("packages:{}", r.names.join(",")),
            Resource::User(r) => format!("user:{}", r.name),
            Resource::Group(r) => format!("group:{}", r.name),
            Resource::Unit(r) => format!("unit:{}", r.name),
            Resource::Service(r) => format!("service:{}", r.name),
            Resource::Instances(r) => format!("instances:{}", r.prefix()),
            Resource::Mount(r) => format!("mount:{}", r.mount_point),
            Resource::Script(r) => format!("script:{}", r.name),
        }
    }

    /// The file this resource writes, if it is one (files and units are checked in one batch).
    fn as_file(&self) -> Option<File> {
        match self {
            Resource::File(r) => Some(r.clone()),
            Resource::Unit(r) => Some(r.file()),
            _ => None,
        }
    }

    /// A shell fragment that prints this resource's state, every line starting with `@<tag> `
    /// (files and units: see [`check_script`]).
    fn check_fragment(&self, tag: &str) -> String {
        match self {
            Resource::File(_)
            | Resource::Unit(_)
            | Resource::Packages(_)
            | Resource::Service(_)
            | Resource::Instances(_) => String::new(),
            Resource::Directory(r) if file::batchable(&r.path) => String::new(),
            Resource::Directory(r) => r.check_script(tag),
            Resource::Symlink(r) => r.check_script(tag),
            Resource::User(r) => r.check_script(tag),
            Resource::Group(r) => r.check_script(tag),
            Resource::Mount(r) => r.check_script(tag),
            Resource::Script(r) => r.check_script(tag),
        }
    }

    /// Compare the state printed by the check (the lines with the tag stripped) with what is
    /// wanted. `triggered` lists the changed resources this one depends on (services only).
    pub(crate) fn drift(
        &self,
        state: &[&str],
        triggered: &[String],
    ) -> Result<Option<Drift>, String> {
        match self {
            Resource::File(r) => r.drift(state),
            Resource::Directory(r) => r.drift(state),
            Resource::Symlink(r) => r.drift(state),
            Resource::Packages(r) => r.drift(state),
            Resource::User(r) => r.drift(state),
            Resource::Group(r) => r.drift(state),
            Resource::Unit(r) => r.file().drift(state),
            Resource::Service(r) => r.drift(state, triggered),
            Resource::Instances(r) => r.drift(state),
            Resource::Mount(r) => r.drift(state),
            Resource::Script(r) => r.drift(state),
        }
    }

    /// The ids of resources whose change makes this one act (restart or reload).
    pub fn depends_on(&self) -> Vec<&str> {
        match self {
            Resource::Service(s) => s
                .restart_on
                .iter()
                .chain(s.reload_on.iter())
                .map(String::as_str)
                .collect(),
            _ => Vec::new(),
        }
    }
}

macro_rules! impl_from {
    ($($kind:ident),*) => {$(
        impl From<$kind> for Resource {
            fn from(r: $kind) -> Resource {
                Resource::$kind(r)
            }
        }
    )*};
}
impl_from!(
    File, Directory, Symlink, Packages, User, Group, Unit, Service, Instances, Mount, Script
);

/// The value of `key` in `key=value` state lines.
pub(crate) fn state_value<'a>(state: &[&'a str], key: &str) -> Option<&'a str> {
    state.iter().find_map(|line| {
        line.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

/// Parse an octal mode as printed by `stat -c %a`.
pub(crate) fn parse_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 8).ok()
}

/// The check of all resources of a host as one script. Files, units and directories share one
/// `stat` (and files one `sha256sum`), packages one `dpkg-query`, services and template
/// instances two `systemctl` calls, so the number of processes stays constant however many
/// there are; every other resource is one fragment. A no-op converge of a host costs tens of
/// milliseconds there.
pub(crate) fn check_script(resources: &[Resource]) -> Result<String, String> {
    let files: Vec<File> = resources.iter().filter_map(Resource::as_file).collect();
    if let Some(bad) = files.iter().find(|f| !file::batchable(&f.path)) {
        return Err(format!(
            "file path {:?} holds a newline, a backslash or `|`, which provision does not support",
            bad.path
        ));
    }
    let directories: Vec<&str> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Directory(d) if file::batchable(&d.path) => Some(d.path.as_str()),
            _ => None,
        })
        .collect();
    let packages: Vec<&Packages> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Packages(p) => Some(p),
            _ => None,
        })
        .collect();
    let services: Vec<(String, &Service)> = resources
        .iter()
        .enumerate()
        .filter_map(|(index, r)| match r {
            Resource::Service(s) => Some((index.to_string(), s)),
            _ => None,
        })
        .collect();
    let instances: Vec<(String, &Instances)> = resources
        .iter()
        .enumerate()
        .filter_map(|(index, r)| match r {
            Resource::Instances(i) => Some((index.to_string(), i)),
            _ => None,
        })
        .collect();
    let mut script = file::batch_check_script(&files.iter().collect::<Vec<_>>(), &directories);
    script.push_str(&package::batch_check_script(&packages));
    script.push_str(&service::batch_check_script(&services, &instances));
    for (index, resource) in resources.iter().enumerate() {
        script.push_str(&resource.check_fragment(&index.to_string()));
    }
    Ok(script)
}

/// Each resource's state lines (tag stripped) from the output of [`check_script`].
pub(crate) fn parse_check(resources: &[Resource], output: &str) -> Vec<Vec<String>> {
    let mut states: Vec<Vec<String>> = vec![Vec::new(); resources.len()];
    for line in output.lines() {
        let Some((tag, value)) = line.strip_prefix('@').and_then(|r| r.split_once(' ')) else {
            continue;
        };
        if let Some(state) = tag.parse::<usize>().ok().and_then(|i| states.get_mut(i)) {
            state.push(value.to_string());
        }
    }
    for (index, resource) in resources.iter().enumerate() {
        match resource {
            Resource::File(f) => states[index] = file::batch_states(&f.path, output),
            Resource::Unit(u) => states[index] = file::batch_states(&u.path(), output),
            Resource::Directory(d) if file::batchable(&d.path) => {
                states[index] = d.batch_state(output);
            }
            Resource::Packages(p) => states[index] = p.batch_state(output),
            _ => {}
        }
    }
    states
}
