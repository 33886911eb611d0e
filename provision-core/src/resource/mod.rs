//! Resources: the things a host should have. Each one knows how to check itself (a shell
//! fragment that prints its state), how to tell what differs, and how to fix that (another
//! fragment). The engine batches the checks of all resources of a host into one script and the
//! fixes into another, so a converge costs a constant number of round trips.

mod directory;
mod file;
mod mount;
mod package;
mod service;
mod symlink;
mod timer;
mod user;

pub use directory::Directory;
pub use file::File;
pub use mount::Mount;
pub use package::Packages;
pub use service::{Service, ServiceState, Unit};
pub use symlink::Symlink;
pub use timer::Timer;
pub use user::{Group, User};

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
    Mount(Mount),
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
            Resource::Mount(r) => format!("mount:{}", r.mount_point),
        }
    }

    /// A shell fragment that prints this resource's state, every line starting with `@<tag> `.
    pub(crate) fn check_script(&self, tag: &str) -> String {
        match self {
            Resource::File(r) => r.check_script(tag),
            Resource::Directory(r) => r.check_script(tag),
            Resource::Symlink(r) => r.check_script(tag),
            Resource::Packages(r) => r.check_script(tag),
            Resource::User(r) => r.check_script(tag),
            Resource::Group(r) => r.check_script(tag),
            Resource::Unit(r) => r.file().check_script(tag),
            Resource::Service(r) => r.check_script(tag),
            Resource::Mount(r) => r.check_script(tag),
        }
    }

    /// Compare the state printed by the check (the lines with the tag stripped) with what is
    /// wanted. `triggered` lists the changed resources this one depends on (services only).
    pub(crate) fn drift(&self, state: &[&str], triggered: &[String]) -> Result<Option<Drift>, String> {
        match self {
            Resource::File(r) => r.drift(state),
            Resource::Directory(r) => r.drift(state),
            Resource::Symlink(r) => r.drift(state),
            Resource::Packages(r) => r.drift(state),
            Resource::User(r) => r.drift(state),
            Resource::Group(r) => r.drift(state),
            Resource::Unit(r) => r.file().drift(state),
            Resource::Service(r) => r.drift(state, triggered),
            Resource::Mount(r) => r.drift(state),
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
impl_from!(File, Directory, Symlink, Packages, User, Group, Unit, Service, Mount);

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
