//! The engine over real SSH (OpenSSH sshd on 127.0.0.1): round trips of a no-op converge, and
//! an unreachable host reported as that host's failure while the others converge.

use std::time::Duration;

use provision_core::engine::{self, Connection, Mode, Options, Outcome, Quiet};
use provision_core::resource::{File, Resource};
use provision_core::testing::Sshd;

fn options(mode: Mode) -> Options<'static> {
    Options {
        mode,
        command_timeout: Some(Duration::from_secs(60)),
        mask: &|s: &str| s.to_string(),
        progress: &Quiet,
    }
}

fn fifty_files(dir: &str) -> Vec<Resource> {
    (0..50)
        .map(|i| File::new(format!("{dir}/site-{i}.conf"), format!("client{i} = on\n")).into())
        .collect()
}

#[tokio::test]
async fn a_second_converge_of_fifty_resources_changes_nothing_in_at_most_three_round_trips() {
    let sshd = Sshd::start().expect("sshd");
    let dir = tempfile::tempdir().unwrap();
    let resources = fifty_files(dir.path().to_str().unwrap());
    let targets = vec![("web1".to_string(), Connection::Ssh(sshd.target("root")))];

    let mut connected = engine::connect_all(&targets, 4, &Quiet).await;
    let (host, _facts) = connected.remove(0).expect("connects");
    let first = engine::converge(&host, &resources, &options(Mode::Apply)).await;
    assert_eq!(first.outcome, Outcome::Changed, "{first:?}");
    assert_eq!(first.changes.len(), 50);
    host.close().await;

    // A fresh run, as `provision up` would do it: connect, facts, check.
    let mut connected = engine::connect_all(&targets, 4, &Quiet).await;
    let (host, _facts) = connected.remove(0).expect("connects");
    let second = engine::converge(&host, &resources, &options(Mode::Apply)).await;
    assert_eq!(second.outcome, Outcome::Unchanged, "{second:?}");
    assert!(
        host.round_trips() <= 3,
        "a no-op converge took {} round trips",
        host.round_trips()
    );
    assert_eq!(host.round_trips(), 2, "facts + one batched check");
}

#[tokio::test]
async fn an_unreachable_host_fails_alone_while_the_others_converge() {
    let sshd = Sshd::start().expect("sshd");
    let dir = tempfile::tempdir().unwrap();
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut gone = sshd.target("root");
    gone.port = closed_port;
    let targets = vec![
        ("app1".to_string(), Connection::Ssh(sshd.target("root"))),
        ("app2".to_string(), Connection::Ssh(gone)),
    ];
    let results = engine::connect_all(&targets, 4, &Quiet).await;
    assert!(results[0].is_ok());
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(error.host(), "app2");
    assert!(
        error.to_string().contains(&closed_port.to_string()),
        "{error}"
    );

    let work: Vec<_> = results
        .into_iter()
        .filter_map(Result::ok)
        .map(|(host, _)| (host, fifty_files(dir.path().to_str().unwrap())))
        .collect();
    let reports = engine::converge_all(work, 4, &options(Mode::Apply)).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].host, "app1");
    assert_eq!(reports[0].outcome, Outcome::Changed);
    assert!(dir.path().join("site-49.conf").exists());
}
