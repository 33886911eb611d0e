//! The `solr` layer end to end on real sandbox hosts: the layer's resources, converged over
//! SSH by the engine, install Java from Debian and Solr 9 from a distribution archive (URL +
//! sha512) on solr1, and app1 of the stack uses it the way collective.solr does.
//!
//! The official release archive cannot be downloaded here, so the archive is assembled from
//! Maven artifacts (solr-core, solr-test-framework; see provision-solr/tests/common/dist.rs)
//! and served from the controller on the sandbox bridge; the provisioner sees only its URL
//! and sha512. Skips with one line without the sandbox, Maven or a JDK, except under
//! PROVISION_SANDBOX=required, where it fails.

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use provision_core::engine::{self, HostReport, Mode, Options, Outcome, Quiet};
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::template::Templates;
use provision_sandbox::fixture;
use provision_solr::{SolrArchive, SolrSettings};

use common::dist;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn options() -> Options<'static> {
    Options {
        mode: Mode::Apply,
        command_timeout: Some(Duration::from_secs(900)),
        mask: &|s: &str| s.to_string(),
        progress: &Quiet,
    }
}

fn resources(settings: &SolrSettings) -> Vec<Resource> {
    let templates = Templates::new(provision_solr::TEMPLATES).unwrap();
    let mut all = Vec::new();
    for phase in Phase::ALL {
        all.extend(provision_solr::resources(settings, phase, &templates).unwrap());
    }
    all
}

async fn converge(hosts: &fixture::Hosts, settings: &SolrSettings) -> HostReport {
    let (host, _) = common::engine_host(hosts, "solr1").await;
    let start = host.round_trips();
    let report = engine::converge(&host, &resources(settings), &options()).await;
    assert!(!report.is_failed(), "{report:#?}");
    assert_eq!(report.round_trips, host.round_trips() - start);
    host.close().await;
    report
}

/// Python on app1 with `req(method, path, body)` against solr1's Solr (no proxy), printing
/// what the snippet prints.
fn on_app1(hosts: &fixture::Hosts, base: &str, snippet: &str) -> String {
    let script = format!("python3 - <<'PY'\nBASE = '{base}'\n{PRELUDE}{snippet}\nPY");
    ok("python on app1", &hosts.ssh(hosts.host("app1"), &script))
}

const PRELUDE: &str = r#"import json, time, urllib.request, urllib.error
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def req(method, path, body=None):
    data = body.encode() if body is not None else None
    r = urllib.request.Request(BASE + path, data=data, method=method, headers={'Content-Type': 'text/xml'})
    try:
        with opener.open(r, timeout=30) as f:
            return f.status, f.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
def found(core, q):
    status, body = req('GET', '/' + core + '/select?wt=json&fl=UID&q=' + q)
    assert status == 200, body
    return sorted(d['UID'] for d in json.loads(body)['response']['docs'])
"#;

/// Queries /plone/select from app1 every 20 ms for 8 s; prints `ANSWERS FAILURES`.
const QUERY_LOOP: &str = r#"answers = failures = 0
end = time.time() + 8
while time.time() < end:
    try:
        status, _ = req('GET', '/plone/select?q=*:*&fl=UID&wt=csv')
        answers += status == 200
        failures += status != 200
    except Exception:
        failures += 1
    time.sleep(0.02)
print(answers, failures)
"#;

#[test]
fn solr_is_installed_from_its_archive_and_serves_collective_solr_to_the_stack_only() {
    // Ask the sandbox first: building the archive is the slow part of a skip.
    if !fixture::available() {
        return;
    }
    let Some(distribution) = dist::build_or_skip() else {
        return;
    };
    let Some(hosts) = fixture::named_blocking(&["solr1", "app1"]) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let gateway = hosts.inventory().gateway;
    let files = dist::FileServer::start(gateway.into(), &distribution.archive);
    let solr1 = hosts.host("solr1").address();
    let app1 = hosts.host("app1").address();

    let (_, facts) = runtime.block_on(common::engine_host(&hosts, "solr1"));
    let mut settings = SolrSettings::for_host(solr1.into(), &facts);
    settings.allowed_clients = vec![app1.to_string()];
    settings.archive = SolrArchive {
        version: distribution.version.clone(),
        url: files.url(&distribution),
        sha512: distribution.sha512.clone(),
    };

    let started = Instant::now();
    let first = runtime.block_on(converge(&hosts, &settings));
    assert_eq!(first.outcome, Outcome::Changed, "{first:#?}");
    eprintln!(
        "solr1 converged from scratch in {:.1} s ({} changes)",
        started.elapsed().as_secs_f64(),
        first.changes.len()
    );

    // Solr runs as its own user, from the unpacked archive, with the heap from the memory,
    // listening on the private address only.
    let solr_host = hosts.host("solr1");
    let out = ok(
        "inspecting solr1",
        &hosts.ssh(
            solr_host,
            "ps -o user= -o args= -C java; readlink /opt/solr; \
             ss -ltn | awk '$4 ~ /:8983$/ {print $4}'; \
             curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:8983/solr/ || true",
        ),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("solr "), "{out}");
    assert!(
        lines[0].contains(&format!("-Xmx{}m", settings.heap_mb)),
        "{out}"
    );
    assert_eq!(
        lines[1],
        format!("/opt/solr-{}", distribution.version),
        "{out}"
    );
    // ss shows an IPv4 listener on a dual-stack socket as [::ffff:ADDRESS]:PORT.
    let listener = lines[2].replace("[::ffff:", "").replace(']', "");
    assert_eq!(
        listener,
        format!("{solr1}:8983"),
        "listens elsewhere too: {out}"
    );
    assert_eq!(lines.len(), 4, "more than one listener: {out}");
    assert_eq!(
        lines.last().copied(),
        Some("000"),
        "loopback answered: {out}"
    );

    // app1 of the stack: ping, index a document as collective.solr does, find it.
    let base = format!("http://{solr1}:8983/solr");
    let out = on_app1(
        &hosts,
        &base,
        &format!(
            "status, body = req('GET', '/plone/admin/ping?wt=json')\n\
             print(status, json.loads(body)['status'])\n\
             status, body = req('POST', '/plone/update?commit=true', '''{}''')\n\
             assert status == 200 and '<int name=\"status\">0</int>' in body, body\n\
             print(found('plone', 'SearchableText:uber'))",
            dist::document_xml("uid-1", "Über Kaffeemaschinen", "espresso")
        ),
    );
    assert_eq!(out, "200 OK\n['uid-1']\n");

    // Anyone else is refused: the controller is on the same network, not in the stack.
    let (status, _) = dist::http(
        &format!("{solr1}:8983"),
        "GET",
        "/solr/plone/admin/ping",
        None,
    );
    assert_eq!(
        status, 403,
        "a request from outside the stack was not refused"
    );

    // A second converge changes nothing, in one round trip.
    let second = runtime.block_on(converge(&hosts, &settings));
    assert_eq!(second.outcome, Outcome::Unchanged, "{second:#?}");
    assert_eq!(second.round_trips, 1, "{second:#?}");

    // A reload (what a changed configset triggers) reloads every core through the unit.
    ok(
        "systemctl reload solr",
        &hosts.ssh(
            hosts.host("solr1"),
            "systemctl reload solr && systemctl is-active solr",
        ),
    );

    // Reindex without downtime: build plone_rebuild, fill it, swap while app1 keeps querying.
    let reindex = provision_solr::reindex(&settings, "plone").unwrap();
    let out = ok("rebuild", &hosts.ssh(solr_host, &reindex.rebuild));
    assert!(out.contains("plone_rebuild is ready"), "{out}");
    // The reindex writes where the rebuild connection (a client's collective.solr) points.
    on_app1(
        &hosts,
        &reindex.rebuild_connection.url(),
        &format!(
            "status, body = req('POST', '/update?commit=true', '''{}''')\n\
             assert status == 200, body",
            dist::document_xml("uid-2", "Rebuilt page", "fresh index")
        ),
    );
    let load = hosts
        .ssh_command(hosts.host("app1"))
        .arg(format!(
            "python3 - <<'PY'\nBASE = '{base}'\n{PRELUDE}{QUERY_LOOP}\nPY"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let out = ok("swap", &hosts.ssh(solr_host, &reindex.swap));
    assert!(out.contains("now serves the rebuilt index"), "{out}");
    let load = load.wait_with_output().unwrap();
    let counts = ok("the query loop", &load);
    let (answers, failures) = counts.trim().split_once(' ').unwrap();
    assert_eq!(failures, "0", "queries failed during the swap: {counts}");
    assert!(answers.parse::<u32>().unwrap() > 20, "{counts}");
    let out = on_app1(
        &hosts,
        &base,
        "print(found('plone', '*:*'), found('plone_rebuild', '*:*'))",
    );
    assert_eq!(
        out, "['uid-2'] ['uid-1']\n",
        "the new index is not live under the old name"
    );

    // The layer still sees its core and changes nothing.
    let third = runtime.block_on(converge(&hosts, &settings));
    assert_eq!(third.outcome, Outcome::Unchanged, "{third:#?}");
    let out = ok("cleanup", &hosts.ssh(solr_host, &reindex.cleanup));
    assert!(out.contains("dropped core plone_rebuild"), "{out}");

    // A changed setting restarts Solr with it; the swapped core comes back with its data.
    settings.heap_mb = 640;
    let fourth = runtime.block_on(converge(&hosts, &settings));
    assert_eq!(fourth.outcome, Outcome::Changed, "{fourth:#?}");
    assert!(
        fourth
            .changes
            .iter()
            .any(|c| c.resource == "service:solr"
                && c.summary.iter().any(|s| s.starts_with("restart"))),
        "{fourth:#?}"
    );
    let out = ok(
        "ping after the restart",
        &hosts.ssh(
            solr_host,
            &format!(
                "{} && ps -o args= -C java",
                provision_solr::ping_command("plone")
            ),
        ),
    );
    assert!(out.contains("-Xmx640m"), "{out}");
    let out = on_app1(&hosts, &base, "print(found('plone', '*:*'))");
    assert_eq!(out, "['uid-2']\n");
}
