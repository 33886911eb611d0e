//! The engine's check of systemd services on a real sandbox host (systemd-nspawn, real sshd
//! and systemd): units with and without a unit file, instances of a template, an alias, and
//! which instances of a template may run, in one list. Units that do not exist are left out
//! of the one `systemctl is-enabled` call, and `systemctl list-units` shows loaded units by
//! their own names only, so every state must still land on the right service.
//!
//! Without root or systemd-nspawn this test skips with one line, except under
//! PROVISION_SANDBOX=required (CI), where it fails.

mod common;

use provision_core::engine::{HostReport, Outcome};
use provision_core::resource::{Instances, Resource, Service, Unit};
use provision_sandbox::fixture;

const SLEEPER: &str = "[Unit]\nDescription=%N\n\n[Service]\nExecStart=/bin/sleep infinity\n\n\
                       [Install]\nWantedBy=multi-user.target\n";

fn resources() -> Vec<Resource> {
    vec![
        Unit::new("demo-a.service", SLEEPER).into(),
        Unit::new("demo-t@.service", SLEEPER).into(),
        Unit::new("demo-b.service", SLEEPER).into(),
        // Never installed: kept stopped, nothing to do.
        Service::stopped("ghost-one").into(),
        Service::running("demo-a").into(),
        Service::stopped("ghost-t@x").into(),
        Service::running("demo-t@one").into(),
        Service::stopped("demo-b").into(),
        Service::stopped("ghost-two.service").into(),
    ]
}

fn converge(runtime: &tokio::runtime::Runtime, host: &provision_core::host::Host) -> HostReport {
    runtime.block_on(common::engine_apply(host, &resources()))
}

/// `(resource, summary)` of every change.
fn changes(report: &HostReport) -> Vec<(String, String)> {
    report
        .changes
        .iter()
        .map(|c| (c.resource.clone(), c.summary.join(", ")))
        .collect()
}

#[test]
fn services_with_and_without_unit_files_are_each_checked_as_they_are() {
    let Some(hosts) = fixture::named_blocking(&["svc1"]) else {
        return;
    };
    // demo-b runs and is enabled before provision says it should not.
    common::sh(
        &hosts,
        "svc1",
        &format!(
            "cat > /etc/systemd/system/demo-b.service <<'EOF'\n{SLEEPER}EOF\n\
             systemctl daemon-reload && systemctl enable --now demo-b"
        ),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (host, _facts) = runtime.block_on(common::engine_host(&hosts, "svc1"));

    // demo-a and demo-t@ have no unit file when the first check runs (the engine writes them
    // after it): their state is unknown, and they are enabled and started.
    let first = converge(&runtime, &host);
    assert_eq!(first.outcome, Outcome::Changed, "{first:#?}");
    let services: Vec<(String, String)> = changes(&first)
        .into_iter()
        .filter(|(id, _)| id.starts_with("service:"))
        .collect();
    assert_eq!(
        services,
        [
            (
                "service:demo-a".to_string(),
                "enable (is unknown), start (is inactive)".to_string()
            ),
            (
                "service:demo-t@one".to_string(),
                "enable (is unknown), start (is inactive)".to_string()
            ),
            (
                "service:demo-b".to_string(),
                "disable, stop (is active)".to_string()
            ),
        ],
        "{first:#?}"
    );
    let state = common::sh(
        &hosts,
        "svc1",
        "for u in demo-a demo-t@one demo-b; do echo $(systemctl is-enabled $u) $(systemctl is-active $u); done",
    );
    assert_eq!(
        state.lines().collect::<Vec<_>>(),
        ["enabled active", "enabled active", "disabled inactive"]
    );

    let second = converge(&runtime, &host);
    assert_eq!(second.outcome, Outcome::Unchanged, "{second:#?}");

    // One service changed by hand among the others: only it is fixed.
    common::sh(&hosts, "svc1", "systemctl disable demo-t@one");
    let third = converge(&runtime, &host);
    assert_eq!(
        changes(&third),
        [(
            "service:demo-t@one".to_string(),
            "enable (is disabled)".to_string()
        )],
        "{third:#?}"
    );

    // Instances of demo-t@ beyond the one wanted: one started and one enabled by hand, both
    // stopped and disabled; demo-alias (a link to demo-a, which list-units shows as demo-a)
    // is running, nothing to do for it.
    common::sh(
        &hosts,
        "svc1",
        "systemctl start demo-t@extra && systemctl enable demo-t@boot \
         && ln -s demo-a.service /etc/systemd/system/demo-alias.service && systemctl daemon-reload",
    );
    let mut more = resources();
    more.push(Instances::of("demo-t@", vec!["demo-t@one".to_string()]).into());
    more.push(Service::running("demo-alias").into());
    let fourth = runtime.block_on(common::engine_apply(&host, &more));
    assert_eq!(
        changes(&fourth),
        [(
            "instances:demo-t@".to_string(),
            "stop and disable demo-t@boot.service, demo-t@extra.service \
             (wanted: demo-t@one.service)"
                .to_string()
        )],
        "{fourth:#?}"
    );
    let state = common::sh(
        &hosts,
        "svc1",
        "for u in demo-t@extra demo-t@boot demo-t@one; do \
         echo $(systemctl is-enabled $u) $(systemctl is-active $u); done",
    );
    assert_eq!(
        state.lines().collect::<Vec<_>>(),
        ["disabled inactive", "disabled inactive", "enabled active"]
    );
    let fifth = runtime.block_on(common::engine_apply(&host, &more));
    assert_eq!(fifth.outcome, Outcome::Unchanged, "{fifth:#?}");

    // The alias stopped (through its unit): seen through the alias, and started.
    common::sh(&hosts, "svc1", "systemctl stop demo-a");
    let sixth = runtime.block_on(common::engine_apply(&host, &more));
    assert_eq!(
        changes(&sixth),
        [
            (
                "service:demo-a".to_string(),
                "start (is inactive)".to_string()
            ),
            (
                "service:demo-alias".to_string(),
                "start (is inactive)".to_string()
            ),
        ],
        "{sixth:#?}"
    );
    runtime.block_on(host.close());
}
