//! A real HAProxy on loopback, from the rendered config, in front of two small HTTP backends:
//! requests get through, the statistics need the password, and a client drained through the
//! runtime socket (with the commands the rolling restart sends) gets no new requests.

mod common;

use common::{
    HttpBackend, STATS_PASSWORD, basic_auth, have, http, runtime, start_haproxy, status_of,
};
use provision_nginx::haproxy;
use provision_nginx::haproxy_runtime::{
    AdminState, RuntimeError, ServerStatus, parse_set_server_answer, set_server_state,
};

/// Bodies of `n` requests through the balancer.
fn bodies(port: u16, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let response = http(port, "GET", "/some/page", &[]).unwrap();
            assert_eq!(response.status, 200, "{}", response.body);
            response.body
        })
        .collect()
}

#[test]
fn haproxy_balances_checks_guards_its_stats_and_drains_through_the_socket() {
    if !have("haproxy", "-v") || !have("socat", "-V") {
        return;
    }
    let a = HttpBackend::start("app1-1", "127.0.0.1");
    let b = HttpBackend::start("app2-1", "127.0.0.1");
    let lb = start_haproxy(&[&a, &b], |_| {});

    // Both clients serve, in turn.
    let seen = bodies(lb.port, 6);
    assert!(
        seen.iter().any(|body| body == "app1-1 /some/page"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|body| body == "app2-1 /some/page"),
        "{seen:?}"
    );

    // The statistics page wants the password, quotes and all.
    let stats = http(lb.port, "GET", "/balancer/stats", &[]).unwrap();
    assert_eq!(stats.status, 401);
    let wrong = basic_auth("stats", "wrong");
    let stats = http(
        lb.port,
        "GET",
        "/balancer/stats",
        &[("Authorization", &wrong)],
    )
    .unwrap();
    assert_eq!(stats.status, 401);
    let right = basic_auth("stats", STATS_PASSWORD);
    let stats = http(
        lb.port,
        "GET",
        "/balancer/stats;csv",
        &[("Authorization", &right)],
    )
    .unwrap();
    assert_eq!(stats.status, 200, "{}", lb.child.log());
    assert!(stats.body.contains("app1-1"), "{}", stats.body);

    // maxconn per server comes from the client's threads.
    let csv = runtime(&lb.socket, "show stat");
    let header: Vec<&str> = csv
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let slim = header.iter().position(|c| *c == "slim").unwrap();
    let limits: Vec<&str> = csv
        .lines()
        .filter(|l| l.starts_with("plone_instances,app"))
        .map(|l| l.split(',').nth(slim).unwrap())
        .collect();
    assert_eq!(limits, ["2", "3"]);

    // Drain app1-1: it reports DRAIN and gets no new request; app2-1 takes them all.
    let drain = set_server_state(haproxy::BACKEND, "app1-1", AdminState::Drain).unwrap();
    parse_set_server_answer(&runtime(&lb.socket, &drain)).unwrap();
    assert_eq!(status_of(&lb.socket, "app1-1"), ServerStatus::Drain);
    assert!(!ServerStatus::Drain.takes_requests());
    let before = a.hits();
    let seen = bodies(lb.port, 6);
    assert!(
        seen.iter().all(|body| body == "app2-1 /some/page"),
        "{seen:?}"
    );
    assert_eq!(a.hits(), before);

    // Ready again: both serve.
    let ready = set_server_state(haproxy::BACKEND, "app1-1", AdminState::Ready).unwrap();
    parse_set_server_answer(&runtime(&lb.socket, &ready)).unwrap();
    assert_eq!(status_of(&lb.socket, "app1-1"), ServerStatus::Up);
    let seen = bodies(lb.port, 6);
    assert!(
        seen.iter().any(|body| body == "app1-1 /some/page"),
        "{seen:?}"
    );

    // Maintenance: MAINT, and nothing reaches it.
    let maint = set_server_state(haproxy::BACKEND, "app1-1", AdminState::Maint).unwrap();
    parse_set_server_answer(&runtime(&lb.socket, &maint)).unwrap();
    assert_eq!(status_of(&lb.socket, "app1-1"), ServerStatus::Maint);
    let seen = bodies(lb.port, 4);
    assert!(
        seen.iter().all(|body| body == "app2-1 /some/page"),
        "{seen:?}"
    );

    // A server that does not exist: HAProxy's refusal comes back as an error.
    let missing = set_server_state(haproxy::BACKEND, "app9-9", AdminState::Drain).unwrap();
    let answer = parse_set_server_answer(&runtime(&lb.socket, &missing));
    assert!(
        matches!(&answer, Err(RuntimeError::Refused(m)) if m.contains("No such server")),
        "{answer:?}"
    );
}

#[test]
fn a_stopped_client_goes_down_and_traffic_moves() {
    if !have("haproxy", "-v") || !have("socat", "-V") {
        return;
    }
    let a = HttpBackend::start("app1-1", "127.0.0.1");
    let b = HttpBackend::start("app2-1", "127.0.0.1");
    let mut lb = start_haproxy(&[&a, &b], |_| {});
    b.stop();
    let socket = lb.socket.clone();
    lb.child.wait_for("app2-1 DOWN", || {
        status_of(&socket, "app2-1") == ServerStatus::Down
    });
    assert!(!ServerStatus::Down.takes_requests());
    let seen = bodies(lb.port, 6);
    assert!(
        seen.iter().all(|body| body == "app1-1 /some/page"),
        "{seen:?}"
    );
}
