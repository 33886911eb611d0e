//! The engine's check of a system user on a real sandbox host: its home, shell and primary
//! group as the host has them. The group's name is read from /etc/group by the shell (no
//! process), with `id` only for a group /etc/group does not name.
//!
//! Without root or systemd-nspawn this test skips with one line, except under
//! PROVISION_SANDBOX=required (CI), where it fails.

mod common;

use provision_core::engine::{HostReport, Outcome};
use provision_core::resource::{Resource, User};
use provision_sandbox::fixture;

fn converge(runtime: &tokio::runtime::Runtime, host: &provision_core::host::Host) -> HostReport {
    let user: Resource = User::system("demo").group("staff").into();
    runtime.block_on(common::engine_apply(host, &[user]))
}

fn summaries(report: &HostReport) -> Vec<String> {
    report
        .changes
        .iter()
        .map(|c| c.summary.join(", "))
        .collect()
}

#[test]
fn a_users_primary_group_is_read_as_the_host_has_it() {
    let Some(hosts) = fixture::named_blocking(&["usr1"]) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (host, _facts) = runtime.block_on(common::engine_host(&hosts, "usr1"));

    let first = converge(&runtime, &host);
    assert_eq!(first.outcome, Outcome::Changed, "{first:#?}");
    assert_eq!(
        common::sh(&hosts, "usr1", "id -gn demo").trim(),
        "staff",
        "{first:#?}"
    );
    let second = converge(&runtime, &host);
    assert_eq!(second.outcome, Outcome::Unchanged, "{second:#?}");

    // Moved to another group by hand: named as /etc/group names it, and moved back.
    common::sh(&hosts, "usr1", "usermod -g users demo");
    let third = converge(&runtime, &host);
    assert_eq!(
        summaries(&third),
        ["primary group users -> staff"],
        "{third:#?}"
    );
    assert_eq!(common::sh(&hosts, "usr1", "id -gn demo").trim(), "staff");

    // A primary group /etc/group does not know: shown as `id` shows it (its number).
    common::sh(
        &hosts,
        "usr1",
        "sed -i 's/^\\(demo:[^:]*:[^:]*:\\)[^:]*:/\\14242:/' /etc/passwd && id -g demo",
    );
    let fourth = converge(&runtime, &host);
    assert_eq!(
        summaries(&fourth),
        ["primary group 4242 -> staff"],
        "{fourth:#?}"
    );
    let fifth = converge(&runtime, &host);
    assert_eq!(fifth.outcome, Outcome::Unchanged, "{fifth:#?}");
    runtime.block_on(host.close());
}
