//! The optional host firewall (`[attributes.firewall]`): one nftables table, `inet provision`,
//! on every host of a stack. Its input chain drops what no rule accepts; the rules accept
//! loopback, replies, ICMP, SSH, the ports open to anyone and the ports open to the stack's
//! hosts. Other tables (Debian's `/etc/nftables.conf`, Docker's) are left alone.
//!
//! The ruleset file replaces the whole table in one transaction (`table` + `delete table` + the
//! new table), is checked with `nft -c -f` before it replaces the live file, and is loaded by a
//! oneshot unit at boot and reloaded on change. SSH and established connections are accepted
//! before anything is dropped, so loading it never cuts the controller's session.

use std::net::IpAddr;

use serde::Serialize;

use crate::phase::Phase;
use crate::resource::{File, Packages, Resource, Script, Service, Unit};
use crate::template::{TemplateError, TemplateSource, Templates};

/// The nftables table, family and name.
pub const TABLE: &str = "inet provision";
/// The ruleset file.
pub const RULESET_PATH: &str = "/etc/provision/firewall.nft";
/// The unit that loads the ruleset at boot.
pub const UNIT: &str = "provision-firewall.service";

const RULESET_TEMPLATE: &str = "system/firewall.nft.j2";
const UNIT_TEMPLATE: &str = "system/provision-firewall.service.j2";

pub const TEMPLATES: &[TemplateSource] = &[
    TemplateSource {
        name: RULESET_TEMPLATE,
        source: include_str!("templates/system/firewall.nft.j2"),
        example: r#"{"host": "db1", "ssh_ports": "22",
            "ssh_from": {"v4": ["0.0.0.0/0"], "v6": ["::/0"]},
            "members": {"v4": ["10.0.0.10", "10.0.0.11", "192.0.2.0/24"], "v6": []},
            "public": [{"what": "firewall.extra_tcp_ports", "protocol": "tcp", "ports": "9100"}],
            "members_only": [
                {"what": "ZEO (zeoserver)", "protocol": "tcp", "ports": "8001"},
                {"what": "NFS (shared_blobs)", "protocol": "udp", "ports": "{ 111, 2049 }"}
            ]}"#,
    },
    TemplateSource {
        name: UNIT_TEMPLATE,
        source: include_str!("templates/system/provision-firewall.service.j2"),
        example: r#"{"path": "/etc/provision/firewall.nft", "table": "inet provision"}"#,
    },
];

/// A transport protocol of an opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A port or an inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ports {
    pub first: u16,
    pub last: u16,
}

impl Ports {
    pub fn one(port: u16) -> Ports {
        Ports {
            first: port,
            last: port,
        }
    }

    pub fn range(first: u16, last: u16) -> Ports {
        Ports {
            first: first.min(last),
            last: first.max(last),
        }
    }
}

impl std::fmt::Display for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// The ports of one service, opened by one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// What listens there, for the comment above the rule (`ZEO (zeoserver)`).
    pub what: String,
    pub protocol: Protocol,
    pub ports: Vec<Ports>,
}

impl Opening {
    pub fn tcp(what: impl Into<String>, ports: impl IntoIterator<Item = Ports>) -> Opening {
        Opening::new(what, Protocol::Tcp, ports)
    }

    pub fn udp(what: impl Into<String>, ports: impl IntoIterator<Item = Ports>) -> Opening {
        Opening::new(what, Protocol::Udp, ports)
    }

    fn new(
        what: impl Into<String>,
        protocol: Protocol,
        ports: impl IntoIterator<Item = Ports>,
    ) -> Opening {
        let mut ports: Vec<Ports> = ports.into_iter().collect();
        ports.sort_unstable();
        ports.dedup();
        Opening {
            what: what.into(),
            protocol,
            ports,
        }
    }

    /// nftables' port expression: `8001` or `{ 80, 443 }`.
    pub fn expression(&self) -> String {
        match self.ports.as_slice() {
            [one] => one.to_string(),
            many => format!(
                "{{ {} }}",
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// IP addresses and networks, by family, without repeats, in the order added.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Networks {
    pub v4: Vec<String>,
    pub v6: Vec<String>,
}

impl Networks {
    /// Adds an address or a network ([`parse_network`]); the error says what is wrong.
    pub fn add(&mut self, text: &str) -> Result<(), String> {
        let (address, prefix) = parse_network(text)?;
        let written = match prefix {
            Some(prefix) => format!("{address}/{prefix}"),
            None => address.to_string(),
        };
        let list = if address.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        };
        if !list.contains(&written) {
            list.push(written);
        }
        Ok(())
    }
}

/// `10.0.0.5`, `fd00::5`, `10.0.0.0/24` or `fd00::/64`: the address (with host bits cleared
/// for a network) and the prefix length, if one was given. The error ends a sentence about the
/// value: "which is not ...".
pub fn parse_network(text: &str) -> Result<(IpAddr, Option<u8>), String> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let address: IpAddr = address.parse().map_err(|_| {
        "which is not an IP address or network: write it like `203.0.113.7` or \
         `203.0.113.0/24`"
            .to_string()
    })?;
    let Some(prefix) = prefix else {
        return Ok((address, None));
    };
    let most = if address.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= most)
        .ok_or_else(|| format!("whose prefix length is not a number from 0 to {most}"))?;
    let network = match address {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    Ok((network, Some(prefix)))
}

/// The firewall of one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallSettings {
    /// The host's name in the stack, for the file's header.
    pub host: String,
    /// The ports sshd may listen on: 22 and the host's SSH port.
    pub ssh_ports: Vec<u16>,
    /// Who may connect to SSH besides the members (`firewall.ssh_from`).
    pub ssh_from: Networks,
    /// The stack's hosts and `firewall.trusted`.
    pub members: Networks,
    /// Ports open to anyone.
    pub public: Vec<Opening>,
    /// Ports open to the members only.
    pub members_only: Vec<Opening>,
}

#[derive(Serialize)]
struct OpeningContext<'a> {
    what: &'a str,
    protocol: Protocol,
    ports: String,
}

#[derive(Serialize)]
struct RulesetContext<'a> {
    host: &'a str,
    ssh_ports: String,
    ssh_from: &'a Networks,
    members: &'a Networks,
    public: Vec<OpeningContext<'a>>,
    members_only: Vec<OpeningContext<'a>>,
}

/// The ruleset file of a host.
pub fn ruleset(
    settings: &FirewallSettings,
    templates: &Templates,
) -> Result<String, TemplateError> {
    fn openings(list: &[Opening]) -> Vec<OpeningContext<'_>> {
        list.iter()
            .filter(|o| !o.ports.is_empty())
            .map(|o| OpeningContext {
                what: &o.what,
                protocol: o.protocol,
                ports: o.expression(),
            })
            .collect()
    }
    let mut ssh_ports = settings.ssh_ports.clone();
    ssh_ports.sort_unstable();
    ssh_ports.dedup();
    let ssh = Opening::tcp("SSH", ssh_ports.into_iter().map(Ports::one));
    templates.render(
        RULESET_TEMPLATE,
        &RulesetContext {
            host: &settings.host,
            ssh_ports: ssh.expression(),
            ssh_from: &settings.ssh_from,
            members: &settings.members,
            public: openings(&settings.public),
            members_only: openings(&settings.members_only),
        },
    )
}

/// The unit that loads the ruleset at boot (and reloads it).
pub fn unit(templates: &Templates) -> Result<Unit, TemplateError> {
    let content = templates.render(
        UNIT_TEMPLATE,
        &serde_json::json!({"path": RULESET_PATH, "table": TABLE}),
    )?;
    Ok(Unit::new(UNIT, content))
}

/// The firewall's resources for one phase: with `Some`, nftables, the ruleset, its unit and
/// the loaded table; with `None`, the removal of all of it (from a host that had it).
pub fn resources(
    settings: Option<&FirewallSettings>,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, TemplateError> {
    let Some(settings) = settings else {
        return Ok(match phase {
            Phase::Configure => vec![removed().into()],
            Phase::Setup | Phase::Deploy => Vec::new(),
        });
    };
    Ok(match phase {
        Phase::Setup => vec![Packages::new(["nftables"]).into()],
        Phase::Configure => {
            let file =
                File::new(RULESET_PATH, ruleset(settings, templates)?).validate("nft -c -f {}");
            let unit = unit(templates)?;
            let service = Service::running(UNIT)
                .reload_on(Resource::File(file.clone()).id())
                .reload_on(Resource::Unit(unit.clone()).id());
            vec![file.into(), unit.into(), service.into(), loaded().into()]
        }
        Phase::Deploy => Vec::new(),
    })
}

/// The table is in the kernel: a flushed ruleset (`nft flush ruleset` by hand, or Debian's
/// nftables.service reloading `/etc/nftables.conf`, which starts with one) is loaded again.
fn loaded() -> Script {
    Script::new(
        "firewall-loaded",
        &format!("load the firewall (nftables table {TABLE}) from {RULESET_PATH}"),
        &format!("nft list table {TABLE}"),
        &format!("nft -f {RULESET_PATH}"),
    )
}

/// No firewall of ours: the unit stopped and gone, the table deleted, the file removed. A host
/// that never had one costs two `test`s.
fn removed() -> Script {
    let unit_path = format!("/etc/systemd/system/{UNIT}");
    Script::new(
        "firewall-removed",
        &format!("remove the firewall (nftables table {TABLE}, {UNIT}, {RULESET_PATH})"),
        &format!("[ ! -e {unit_path} ] && [ ! -e {RULESET_PATH} ]"),
        &format!(
            "if [ -e {unit_path} ]; then systemctl disable --now {UNIT}; fi\n\
             if command -v nft >/dev/null && nft list table {TABLE} >/dev/null 2>&1; then \
             nft delete table {TABLE}; fi\n\
             rm -f {unit_path} {RULESET_PATH}\n\
             systemctl daemon-reload"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> Templates {
        Templates::new(TEMPLATES).unwrap()
    }

    #[test]
    fn every_template_renders_its_example() {
        for source in TEMPLATES {
            let context: serde_json::Value = serde_json::from_str(source.example).unwrap();
            let rendered = templates().render(source.name, &context).unwrap();
            insta::assert_snapshot!(source.name.replace('/', "__"), rendered);
        }
    }

    #[test]
    fn networks_are_addresses_or_prefixes_by_family() {
        let mut networks = Networks::default();
        for text in [
            "10.0.0.5",
            "fd00::1",
            "10.0.0.5",
            "10.1.2.3/16",
            "fd00::1/64",
            "::/0",
        ] {
            networks.add(text).unwrap();
        }
        assert_eq!(networks.v4, ["10.0.0.5", "10.1.0.0/16"]);
        assert_eq!(networks.v6, ["fd00::1", "fd00::/64", "::/0"]);
        assert_eq!(
            parse_network("0.0.0.0/0").unwrap(),
            ("0.0.0.0".parse().unwrap(), Some(0))
        );
        for bad in [
            "db1",
            "10.0.0.1/33",
            "10.0.0.1/",
            "fd00::/129",
            "10.0.0.0/x",
            "",
        ] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_are_one_rule_each_with_ranges() {
        let opening = Opening::tcp(
            "x",
            [
                Ports::one(443),
                Ports::range(8082, 8081),
                Ports::one(80),
                Ports::one(80),
            ],
        );
        assert_eq!(opening.expression(), "{ 80, 443, 8081-8082 }");
        assert_eq!(Opening::udp("y", [Ports::one(2049)]).expression(), "2049");
    }

    #[test]
    fn on_means_nftables_a_checked_ruleset_its_unit_and_the_loaded_table() {
        let settings = FirewallSettings {
            host: "db1".into(),
            ssh_ports: vec![22],
            ..FirewallSettings::default()
        };
        let ids = |phase| {
            resources(Some(&settings), phase, &templates())
                .unwrap()
                .iter()
                .map(Resource::id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(Phase::Setup), ["packages:nftables"]);
        assert_eq!(
            ids(Phase::Configure),
            [
                "file:/etc/provision/firewall.nft",
                "unit:provision-firewall.service",
                "service:provision-firewall.service",
                "script:firewall-loaded"
            ]
        );
        assert!(ids(Phase::Deploy).is_empty());
        let configure = resources(Some(&settings), Phase::Configure, &templates()).unwrap();
        let Resource::File(file) = &configure[0] else {
            panic!("{configure:?}")
        };
        assert_eq!(file.validate.as_deref(), Some("nft -c -f {}"));
        let Resource::Service(service) = &configure[2] else {
            panic!("{configure:?}")
        };
        assert_eq!(
            service.reload_on,
            [
                "file:/etc/provision/firewall.nft",
                "unit:provision-firewall.service"
            ]
        );
        assert!(service.restart_on.is_empty());
    }

    #[test]
    fn off_means_removed_in_configure_only() {
        for phase in [Phase::Setup, Phase::Deploy] {
            assert!(resources(None, phase, &templates()).unwrap().is_empty());
        }
        let configure = resources(None, Phase::Configure, &templates()).unwrap();
        let [Resource::Script(script)] = configure.as_slice() else {
            panic!("{configure:?}")
        };
        assert_eq!(script.name, "firewall-removed");
        assert!(script.fix.contains("nft delete table inet provision"));
        assert!(
            script
                .fix
                .contains("systemctl disable --now provision-firewall.service")
        );
    }

    #[test]
    fn the_ruleset_replaces_the_table_and_accepts_ssh_before_services() {
        let mut settings = FirewallSettings {
            host: "lb1".into(),
            ssh_ports: vec![2222, 22, 22],
            ..FirewallSettings::default()
        };
        settings.ssh_from.add("203.0.113.0/24").unwrap();
        settings.members.add("10.0.0.10").unwrap();
        settings.public.push(Opening::tcp(
            "nginx (lb)",
            [Ports::one(80), Ports::one(443)],
        ));
        settings.members_only.push(Opening::tcp("nothing", []));
        let text = ruleset(&settings, &templates()).unwrap();
        let first_rules: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .take(2)
            .collect();
        assert_eq!(
            first_rules,
            ["table inet provision {}", "delete table inet provision"]
        );
        assert!(
            text.contains("tcp dport { 22, 2222 } ip saddr @ssh_v4 accept"),
            "{text}"
        );
        assert!(text.contains("elements = { 203.0.113.0/24 }"), "{text}");
        assert!(text.contains("tcp dport { 80, 443 } accept"), "{text}");
        // An opening without ports makes no rule.
        assert!(!text.contains("nothing"), "{text}");
        let ssh = text.find("@ssh_v4").unwrap();
        let nginx = text.find("{ 80, 443 }").unwrap();
        assert!(ssh < nginx, "{text}");
    }
}
