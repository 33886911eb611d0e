//! Celery with a Redis broker on real sandbox hosts (systemd-nspawn, real sshd, Debian's
//! Redis 7, Celery from pip): the resources of provision-celery, converged over SSH by the
//! engine as the `celery_broker` and `plone_instances` layers will.
//!
//! Without root or systemd-nspawn these tests skip with one line, except under
//! PROVISION_SANDBOX=required (CI), where they fail.

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use common::wait_for;
use provision_celery::broker::{self, BrokerSettings};
use provision_celery::client_environment;
use provision_celery::worker::{self, WorkerSettings};
use provision_core::engine::{self, Connection, HostReport, Mode, Options, Outcome, Quiet};
use provision_core::facts::Facts;
use provision_core::host::Host;
use provision_core::phase::Phase;
use provision_core::resource::{Group, Resource, User};
use provision_core::shell::quote;
use provision_core::template::Templates;
use provision_sandbox::fixture;

/// Every character that could break a config, a URL or a shell line.
const PASSWORD: &str = "Celery p@ss:w/rd%$\"'`x";
const APP: &str = "demo";
const DEPLOY_TO: &str = "/srv/www/demo";
const VENV: &str = "/srv/www/demo/shared/venv";
const STATE: &str = "/var/lib/celery/demo";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `script` on `host` and returns its stdout; panics with both outputs when it fails.
fn run(hosts: &fixture::Hosts, host: &str, script: &str) -> String {
    let out: Output = hosts.ssh(hosts.host(host), script);
    assert!(
        out.status.success(),
        "{host}: {script}\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn templates() -> Templates {
    Templates::new(provision_celery::TEMPLATES).expect("templates parse")
}

/// How the engine reaches each sandbox host.
fn targets(hosts: &fixture::Hosts) -> Vec<(String, Connection)> {
    hosts
        .inventory()
        .hosts
        .iter()
        .map(|h| (h.name.clone(), common::engine_connection(hosts, &h.name)))
        .collect()
}

fn mask(s: &str) -> String {
    s.replace(PASSWORD, "********")
}

fn options() -> Options<'static> {
    Options {
        mode: Mode::Apply,
        command_timeout: Some(Duration::from_secs(900)),
        mask: &mask,
        progress: &Quiet,
    }
}

/// The engine's hosts, connected and with their facts, by name.
struct Engine {
    runtime: tokio::runtime::Runtime,
    hosts: BTreeMap<String, (Host, Facts)>,
}

impl Engine {
    fn connect(hosts: &fixture::Hosts) -> Engine {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let targets = targets(hosts);
        let connected = runtime.block_on(engine::connect_all(&targets, 8, &Quiet));
        let hosts = targets
            .iter()
            .zip(connected)
            .map(|((name, _), result)| {
                let pair = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                (name.clone(), pair)
            })
            .collect();
        Engine { runtime, hosts }
    }

    /// Converges several hosts at once, each with its own resources.
    fn converge(&self, work: Vec<(&str, Vec<Resource>)>) -> Vec<HostReport> {
        let options = options();
        let runs = work.iter().map(|(name, resources)| {
            let (host, _) = &self.hosts[*name];
            engine::converge(host, resources, &options)
        });
        self.runtime.block_on(futures::future::join_all(runs))
    }
}

fn changed(report: &HostReport) {
    assert_eq!(report.outcome, Outcome::Changed, "{report:#?}");
}

fn phases<E: std::fmt::Debug>(
    phases: &[Phase],
    f: impl Fn(Phase) -> Result<Vec<Resource>, E>,
) -> Vec<Resource> {
    phases.iter().flat_map(|p| f(*p).unwrap()).collect()
}

fn broker_resources(settings: &BrokerSettings) -> Vec<Resource> {
    let templates = templates();
    phases(&[Phase::Setup, Phase::Configure], |p| {
        broker::resources(settings, p, &templates)
    })
}

/// The app user as the instances layer makes it, then Celery's resources.
fn worker_resources(settings: &WorkerSettings) -> Vec<Resource> {
    let templates = templates();
    let mut resources: Vec<Resource> = vec![
        Group::system("plone").into(),
        User::system("plone").group("plone").into(),
    ];
    resources.extend(phases(&[Phase::Setup, Phase::Configure], |p| {
        worker::resources(settings, p, &templates)
    }));
    resources
}

/// A tiny Celery app: where a task ran, a slow task, and a periodic tick that records which
/// beat sent it (`origin` is the sender's `pid@host`).
fn tasks_py(version: &str) -> String {
    format!(
        r#"import os, socket, time
from celery import Celery

VERSION = "{version}"
STATE = "{STATE}"
app = Celery("tasks")
app.conf.beat_schedule = {{"tick": {{"task": "tasks.tick", "schedule": 1.0}}}}
app.conf.broker_connection_retry_on_startup = True


@app.task
def where(marker):
    host = socket.gethostname()
    with open(os.path.join(STATE, marker), "w") as f:
        f.write(host)
    return "%s %s" % (host, VERSION)


@app.task
def slow(seconds):
    time.sleep(seconds)
    return "slow %s %s" % (socket.gethostname(), VERSION)


@app.task(bind=True)
def tick(self):
    with open(os.path.join(STATE, "ticks"), "a") as f:
        f.write("%s %s\n" % (socket.gethostname(), self.request.origin))
"#
    )
}

/// Writes release `version` of the app (a tasks module) on a host.
fn release_script(version: &str) -> String {
    format!(
        "set -e; mkdir -p {DEPLOY_TO}/releases/{version}\n\
         cat > {DEPLOY_TO}/releases/{version}/tasks.py <<'PROVISION_EOF'\n{}PROVISION_EOF\n",
        tasks_py(version)
    )
}

/// Points `current` at a release, atomically, as a deploy does.
fn switch_script(version: &str) -> String {
    format!(
        "set -e; ln -sfn releases/{version} {DEPLOY_TO}/current.tmp && \
         mv -T {DEPLOY_TO}/current.tmp {DEPLOY_TO}/current"
    )
}

/// Python on an app host with the clients' environment (what a Plone client that sends
/// tasks would have).
fn client_python(settings: &WorkerSettings, code: &str) -> String {
    let env: Vec<String> = client_environment(settings)
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    format!(
        "cd {DEPLOY_TO}/current && env {} {VENV}/bin/python -c {}",
        env.join(" "),
        quote(code)
    )
}

fn redis_cli(command: &str) -> String {
    format!(
        "REDISCLI_AUTH={} redis-cli --no-auth-warning {command}",
        quote(PASSWORD)
    )
}

fn main_pid(hosts: &fixture::Hosts, host: &str, unit: &str) -> String {
    run(
        hosts,
        host,
        &format!("systemctl show -p MainPID --value {unit}"),
    )
    .trim()
    .to_string()
}

#[test]
fn celery_workers_run_tasks_through_a_private_redis_and_beat_runs_once() {
    let started = Instant::now();
    let Some(hosts) = fixture::named_blocking(&["broker1", "app1", "app2"]) else {
        return;
    };
    let booted = started.elapsed();
    let engine = Engine::connect(&hosts);
    let broker_address = hosts.host("broker1").address();

    // The app hosts get Python and a virtualenv with Celery (the deploy's job) while the
    // broker is converged.
    let prepare = format!(
        "set -e; mkdir -p {DEPLOY_TO}/shared && python3 -m venv {VENV} && \
         {VENV}/bin/pip install --quiet --disable-pip-version-check 'celery[redis]' && \
         {VENV}/bin/celery --version\n{}",
        release_script("r1")
    );
    let mut broker_settings = BrokerSettings::new(broker_address.into(), PASSWORD);
    let (broker_time, venv_time) = std::thread::scope(|scope| {
        let venvs: Vec<_> = ["app1", "app2"]
            .into_iter()
            .map(|name| {
                let (hosts, prepare) = (&hosts, &prepare);
                scope.spawn(move || {
                    let start = Instant::now();
                    let version = run(hosts, name, prepare);
                    eprintln!("{name}: celery {}", version.trim());
                    start.elapsed()
                })
            })
            .collect();
        let start = Instant::now();
        let reports = engine.converge(vec![("broker1", broker_resources(&broker_settings))]);
        changed(&reports[0]);
        let broker_time = start.elapsed();
        let venv_time = venvs.into_iter().map(|v| v.join().unwrap()).max().unwrap();
        (broker_time, venv_time)
    });

    // Redis: the private address and loopback only, a password, persistence.
    let listening = run(
        &hosts,
        "broker1",
        "ss -Hltn 'sport = :6379' | awk '{print $4}' | LC_ALL=C sort",
    );
    assert_eq!(
        listening.lines().collect::<Vec<_>>(),
        [
            format!("{broker_address}:6379").as_str(),
            "127.0.0.1:6379",
            "[::1]:6379"
        ],
        "{listening}"
    );
    // An address Redis was not told about is refused, even on the broker itself.
    let other = run(
        &hosts,
        "broker1",
        "ip addr add 192.0.2.99/32 dev lo && python3 -c 'import socket\n\
         try:\n    socket.create_connection((\"192.0.2.99\", 6379), 3); print(\"open\")\n\
         except ConnectionRefusedError: print(\"refused\")'",
    );
    assert_eq!(other.trim(), "refused");
    // From an app host, without the password: NOAUTH.
    let probe = format!(
        "python3 -c 'import socket; s = socket.create_connection((\"{broker_address}\", 6379), 5); \
         s.sendall(b\"PING\\r\\n\"); print(s.recv(200).decode().strip())'"
    );
    let answer = run(&hosts, "app1", &probe);
    assert!(answer.starts_with("-NOAUTH"), "{answer}");
    let persistence = run(
        &hosts,
        "broker1",
        &format!(
            "{}; {}; stat -c '%U:%G %a' /etc/redis/redis.conf /etc/redis/provision-auth.conf; \
             test -d /var/lib/redis/appendonlydir && echo aof-dir",
            redis_cli("CONFIG GET appendonly"),
            redis_cli("CONFIG GET protected-mode")
        ),
    );
    assert_eq!(
        persistence.lines().collect::<Vec<_>>(),
        [
            "appendonly",
            "yes",
            "protected-mode",
            "yes",
            "redis:redis 640",
            "redis:redis 640",
            "aof-dir"
        ],
        "{persistence}"
    );

    // Celery: a worker on app1 and app2, beat on app1 only. Installed before the release is
    // live (not started), then started by the deploy's restart, as the first `up` does.
    let endpoint = broker_settings.endpoint();
    let settings = |host: &str, start: bool| {
        let mut settings = WorkerSettings::new(APP, DEPLOY_TO, endpoint.clone());
        settings.celery = format!("{VENV}/bin/celery");
        settings.celery_app = Some("tasks".to_string());
        settings.worker_args = "--concurrency=2 --without-mingle".to_string();
        settings.beat = host == "app1";
        settings.start = start;
        settings
    };
    let start = Instant::now();
    let reports = engine.converge(vec![
        ("app1", worker_resources(&settings("app1", false))),
        ("app2", worker_resources(&settings("app2", false))),
    ]);
    reports.iter().for_each(changed);
    let worker_time = start.elapsed();
    for name in ["app1", "app2"] {
        run(&hosts, name, &switch_script("r1"));
        run(
            &hosts,
            name,
            &worker::restart_command(&settings(name, true)),
        );
    }

    // A task sent from app1 with the clients' environment runs on a worker.
    let start = Instant::now();
    let result = run(
        &hosts,
        "app1",
        &client_python(
            &settings("app1", true),
            "import tasks; print(tasks.where.delay('marker-1').get(timeout=90))",
        ),
    );
    let round_trip = start.elapsed();
    let result = result.trim();
    let (ran_on, version) = result.split_once(' ').expect("host and version");
    eprintln!("task sent from app1 ran: {result}");
    assert!(["app1", "app2"].contains(&ran_on), "{result}");
    assert_eq!(version, "r1");
    assert_eq!(
        run(&hosts, ran_on, &format!("cat {STATE}/marker-1")),
        ran_on
    );

    // Beat: one process in the whole stack, on app1, and its ticks reach the workers.
    wait_for(
        "a periodic task sent by beat ran",
        Duration::from_secs(60),
        || {
            ["app1", "app2"].iter().any(|name| {
                let out = hosts.ssh(hosts.host(name), &format!("cat {STATE}/ticks"));
                text(&out.stdout).lines().any(|l| l.ends_with("@app1"))
            })
        },
    );
    let count = |name: &str, pattern: &str| -> usize {
        run(
            &hosts,
            name,
            &format!("pgrep -c -f -- {} || true", quote(pattern)),
        )
        .trim()
        .parse()
        .unwrap()
    };
    // (`[c]` keeps the pattern from matching the shell that runs pgrep.)
    assert_eq!(count("app1", "[c]elery -A tasks beat"), 1);
    assert_eq!(count("app2", "[c]elery -A tasks beat"), 0);
    assert_eq!(
        run(
            &hosts,
            "app2",
            "systemctl is-active celery-demo-beat.service || true"
        )
        .trim(),
        "inactive"
    );
    let ticks = |name: &str| {
        run(
            &hosts,
            name,
            &format!("cat {STATE}/ticks 2>/dev/null || true"),
        )
    };
    let all_ticks = format!("{}{}", ticks("app1"), ticks("app2"));
    eprintln!(
        "ticks (worker, sender): {}",
        all_ticks.lines().take(3).collect::<Vec<_>>().join("; ")
    );
    assert!(
        all_ticks.lines().all(|l| l.ends_with("@app1")),
        "a tick came from another beat:\n{all_ticks}"
    );

    // Both run as the app's user, and the password is on no command line.
    let encoded = endpoint.broker_url();
    let password_part = encoded
        .trim_start_matches("redis://:")
        .split('@')
        .next()
        .unwrap();
    for name in ["app1", "app2"] {
        // The task may have run on the other host while this one's pool still forks.
        wait_for(
            &format!("{name}: a worker with its 2 children"),
            Duration::from_secs(60),
            || count(name, "[c]elery -A tasks worker") == 3,
        );
        let owners = run(
            &hosts,
            name,
            "ps -eo user=,args= | grep '[c]elery -A tasks' | awk '{print $1}' | sort -u",
        );
        assert_eq!(owners.trim(), "plone", "{name}");
        let leaked = run(
            &hosts,
            name,
            &format!(
                "ps -u plone -o args= | grep -c -F -e {} -e {} || true",
                quote(password_part),
                quote(PASSWORD)
            ),
        );
        assert_eq!(
            leaked.trim(),
            "0",
            "{name}: the password is on a command line"
        );
        assert_eq!(
            run(
                &hosts,
                name,
                "stat -c '%U:%G %a' /etc/provision/celery/demo.env"
            )
            .trim(),
            "root:plone 640"
        );
    }

    // A deploy: a slow task is running when the new release goes live and the workers
    // restart; it finishes (warm shutdown) and the next task runs the new release.
    for name in ["app1", "app2"] {
        run(&hosts, name, &release_script("r2"));
    }
    let id = run(
        &hosts,
        "app1",
        &client_python(
            &settings("app1", true),
            "import tasks; print(tasks.slow.delay(4).id)",
        ),
    );
    std::thread::sleep(Duration::from_secs(1));
    for name in ["app1", "app2"] {
        run(&hosts, name, &switch_script("r2"));
        run(
            &hosts,
            name,
            &worker::restart_command(&settings(name, true)),
        );
    }
    let slow = run(
        &hosts,
        "app1",
        &client_python(
            &settings("app1", true),
            &format!(
                "import tasks; print(tasks.app.AsyncResult({:?}).get(timeout=120))",
                id.trim()
            ),
        ),
    );
    eprintln!("slow task across the deploy: {}", slow.trim());
    assert!(slow.starts_with("slow "), "{slow}");
    let after = run(
        &hosts,
        "app1",
        &client_python(
            &settings("app1", true),
            "import tasks; print(tasks.where.delay('marker-2').get(timeout=90))",
        ),
    );
    assert!(after.trim().ends_with(" r2"), "{after}");

    // A configuration Redis cannot read is refused on the host and changes nothing.
    let pid_before = main_pid(&hosts, "broker1", "redis-server");
    let conf_before = run(&hosts, "broker1", "sha256sum /etc/redis/redis.conf");
    let mut bad = broker_settings.clone();
    bad.config
        .insert("appendfsync".to_string(), "sometimes".to_string());
    let report = &engine.converge(vec![("broker1", broker_resources(&bad))])[0];
    let Outcome::Failed(error) = &report.outcome else {
        panic!("a bad redis.conf was accepted: {report:#?}");
    };
    eprintln!("bad redis.conf refused: {error}");
    assert!(
        error.contains("file:/etc/redis/redis.conf") && error.contains("appendfsync sometimes"),
        "{error}"
    );
    assert!(!error.contains(PASSWORD), "{error}");
    assert_eq!(
        run(&hosts, "broker1", "sha256sum /etc/redis/redis.conf"),
        conf_before
    );
    assert_eq!(main_pid(&hosts, "broker1", "redis-server"), pid_before);

    // A good change restarts Redis, and the data survives the restart (append-only file).
    run(&hosts, "broker1", &redis_cli("SET provision-test kept"));
    broker_settings
        .config
        .insert("maxmemory".to_string(), "64mb".to_string());
    changed(&engine.converge(vec![("broker1", broker_resources(&broker_settings))])[0]);
    assert_ne!(main_pid(&hosts, "broker1", "redis-server"), pid_before);
    let after_restart = run(
        &hosts,
        "broker1",
        &format!(
            "{}; {}",
            redis_cli("CONFIG GET maxmemory"),
            redis_cli("GET provision-test")
        ),
    );
    assert_eq!(
        after_restart.lines().collect::<Vec<_>>(),
        ["maxmemory", "67108864", "kept"],
        "{after_restart}"
    );
    // The workers reconnect to the restarted broker.
    let again = run(
        &hosts,
        "app2",
        &client_python(
            &settings("app2", true),
            "import tasks; print(tasks.where.delay('marker-3').get(timeout=90))",
        ),
    );
    assert!(again.trim().ends_with(" r2"), "{again}");
    // A worker that quit on the lost connection is started again by systemd (Restart=always).
    for name in ["app1", "app2"] {
        wait_for(
            &format!("{name}'s worker running after the broker's restart"),
            Duration::from_secs(60),
            || {
                run(
                    &hosts,
                    name,
                    "systemctl is-active celery-demo-worker.service || true",
                )
                .trim()
                    == "active"
            },
        );
        eprintln!(
            "{name}'s worker after the broker's restart: {}",
            run(
                &hosts,
                name,
                "systemctl show -p NRestarts --value celery-demo-worker.service"
            )
            .trim()
        );
    }

    // Beat moves (the first instance host changed): stopped on app1, started on app2, and
    // the workers keep running (nothing they read changed).
    let worker_pid = main_pid(&hosts, "app1", "celery-demo-worker.service");
    let moved = |host: &str| {
        let mut moved = settings(host, true);
        moved.beat = host == "app2";
        moved
    };
    let reports = engine.converge(vec![
        ("app1", worker_resources(&moved("app1"))),
        ("app2", worker_resources(&moved("app2"))),
    ]);
    reports.iter().for_each(changed);
    assert_eq!(
        main_pid(&hosts, "app1", "celery-demo-worker.service"),
        worker_pid
    );
    assert_eq!(count("app1", "[c]elery -A tasks beat"), 0);
    // A simple unit: `systemctl start` returned before beat's exec.
    wait_for("beat on app2", Duration::from_secs(30), || {
        count("app2", "[c]elery -A tasks beat") == 1
    });
    assert_eq!(
        run(
            &hosts,
            "app1",
            "systemctl is-enabled celery-demo-beat.service || true"
        )
        .trim(),
        "disabled"
    );
    wait_for(
        "a periodic task sent by the moved beat ran",
        Duration::from_secs(60),
        || format!("{}{}", ticks("app1"), ticks("app2")).contains("@app2\n"),
    );

    // A second converge of every host changes nothing, in one round trip each.
    let start = Instant::now();
    let reports = engine.converge(vec![
        ("broker1", broker_resources(&broker_settings)),
        ("app1", worker_resources(&moved("app1"))),
        ("app2", worker_resources(&moved("app2"))),
    ]);
    let noop_time = start.elapsed();
    for report in &reports {
        assert_eq!(report.outcome, Outcome::Unchanged, "{report:#?}");
        assert_eq!(report.round_trips, 1, "{report:#?}");
    }
    eprintln!(
        "timings: boot {booted:?}, broker converge {broker_time:?}, venvs (pip, parallel) \
         {venv_time:?}, worker converge {worker_time:?}, first task round trip \
         {round_trip:?}, no-op converge of 3 hosts {noop_time:?}, total {:?}",
        started.elapsed()
    );
}
