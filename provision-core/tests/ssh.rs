//! The SSH transport against a real OpenSSH server on loopback (see `provision_core::testing`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use provision_core::host::{Command, Host, HostError, Upload};
use provision_core::testing::Sshd;

fn sshd() -> Sshd {
    Sshd::start().unwrap_or_else(|e| panic!("cannot start the test sshd: {e}"))
}

async fn connect(sshd: &Sshd) -> Host {
    Host::connect_ssh("test", &sshd.target("root"))
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e}\nsshd log:\n{}", sshd.log()))
}

async fn run(host: &Host, script: &str) -> provision_core::host::Output {
    host.exec(Command::new(script))
        .await
        .unwrap_or_else(|e| panic!("{script:?} failed: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_splits_stdout_stderr_and_exit_status() {
    let sshd = sshd();
    let host = connect(&sshd).await;
    let output = run(&host, "echo hi; echo err >&2; exit 3").await;
    assert_eq!(output.status, Some(3));
    assert_eq!(output.signal, None);
    assert_eq!(output.stdout_lossy(), "hi\n");
    assert_eq!(output.stderr_lossy(), "err\n");
    host.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_killed_by_a_signal_reports_the_signal() {
    let sshd = sshd();
    let host = connect(&sshd).await;
    let output = run(&host, "echo before; kill -TERM $$").await;
    assert_eq!(output.stdout_lossy(), "before\n");
    assert_eq!(output.status, None);
    assert_eq!(output.signal.as_deref(), Some("SIGTERM"));
    assert!(!output.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_megabytes_of_stdin_arrive_complete() {
    let sshd = sshd();
    let host = connect(&sshd).await;
    let data = vec![b'x'; 5_000_000];
    let output = host
        .exec(Command::new("wc -c").stdin(data))
        .await
        .expect("wc -c");
    assert!(output.success(), "{}", output.stderr_lossy());
    assert_eq!(output.stdout_lossy().trim(), "5000000");

    // A command that never reads its stdin ends all the same.
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        host.exec(Command::new("echo ignored").stdin(vec![b'y'; 5_000_000])),
    )
    .await
    .expect("unread stdin must not hang the command")
    .expect("echo");
    assert_eq!(output.stdout_lossy(), "ignored\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_stdin_and_large_output_at_once_do_not_deadlock() {
    let sshd = sshd();
    let host = connect(&sshd).await;
    // cat writes back while we still write: both directions exceed the 2 MiB window.
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i % 251) as u8).collect();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        host.exec(Command::new("cat; echo done >&2").stdin(data.clone())),
    )
    .await
    .expect("stdin + output of 6 MB each deadlocked")
    .expect("cat");
    assert!(output.success(), "{}", output.stderr_lossy());
    assert_eq!(output.stdout.len(), data.len());
    assert!(output.stdout == data, "cat returned different bytes");
    assert_eq!(output.stderr_lossy(), "done\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_longer_than_32_kib_runs() {
    let sshd = sshd();
    let host = connect(&sshd).await;
    let mut script = String::from("n=0\n");
    while script.len() <= 40 * 1024 {
        script.push_str("n=$((n+1)) # padding padding padding padding padding\n");
    }
    script.push_str("echo \"n=$n\"\n");
    let lines = script.lines().count() - 2;
    let output = run(&host, &script).await;
    assert!(output.success(), "{}", output.stderr_lossy());
    assert_eq!(output.stdout_lossy(), format!("n={lines}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_commands_share_one_connection() {
    let sshd = sshd();
    let host = connect(&sshd).await;
    // Each command marks that it started, then waits (at most 30 s) until 8 have: one after
    // the other, the first would wait alone. Counted, not timed, so a busy machine passes.
    let started = tempfile::tempdir().unwrap();
    let dir = started.path().display().to_string();
    let runs = (0..20).map(|n| {
        let host = host.clone();
        let script = format!(
            "touch {dir}/{n}; i=0\n\
             while [ $(ls {dir} | wc -l) -lt 8 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n\
             echo {n} $(ls {dir} | wc -l)"
        );
        async move { (n, host.exec(Command::new(script)).await) }
    });
    let results = futures::future::join_all(runs).await;
    for (n, output) in results {
        let output = output.unwrap_or_else(|e| panic!("command {n} failed: {e}"));
        assert!(output.success(), "command {n}: {}", output.stderr_lossy());
        let out = output.stdout_lossy();
        let (echoed, seen) = out.trim().split_once(' ').unwrap();
        assert_eq!(echoed, n.to_string(), "{out}");
        let seen: usize = seen.parse().unwrap();
        assert!(
            seen >= 8,
            "command {n} saw {seen} command(s) started: not 8 at once"
        );
    }
    assert_eq!(host.round_trips(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_command_leaves_the_connection_usable() {
    let sshd = sshd();
    let host = connect(&sshd).await;

    // Three at once: if their session slots stayed taken, 8 more would exceed MaxSessions 10.
    let started = Instant::now();
    let timeouts = (0..3)
        .map(|_| host.exec(Command::new("sleep 30; echo late").timeout(Duration::from_secs(1))));
    for result in futures::future::join_all(timeouts).await {
        match result {
            Err(HostError::Timeout { seconds, .. }) => assert_eq!(seconds, 1),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout took {:?}",
        started.elapsed()
    );

    let runs = (0..10).map(|n| {
        let host = host.clone();
        async move {
            (
                n,
                host.exec(Command::new(format!("sleep 0.2; echo {n}")))
                    .await,
            )
        }
    });
    for (n, result) in futures::future::join_all(runs).await {
        let output = result.unwrap_or_else(|e| {
            panic!(
                "command {n} after the timeouts: {e}\nsshd log:\n{}",
                sshd.log()
            )
        });
        assert_eq!(output.stdout_lossy(), format!("{n}\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_session_hangs_commands_fail_instead_of_waiting_forever() {
    let sshd = sshd();
    let host = connect(&sshd).await;
    let hung =
        (0..8).map(|_| host.exec(Command::new("sleep 60").timeout(Duration::from_millis(500))));
    for result in futures::future::join_all(hung).await {
        assert!(
            matches!(result, Err(HostError::Timeout { .. })),
            "{result:?}"
        );
    }
    // Root logins cannot signal their commands (OpenSSH refuses), so all 8 sessions stay taken.
    let next = tokio::time::timeout(Duration::from_secs(15), host.exec(Command::new("true")))
        .await
        .expect("must not wait forever for a session");
    match next {
        Err(HostError::Other { reason, .. }) => assert!(reason.contains("timed-out"), "{reason}"),
        other => panic!("expected an error about hung sessions, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_allowing_fewer_sessions_still_runs_every_command() {
    let sshd = Sshd::start_with_config("MaxSessions 3").expect("sshd");
    let host = connect(&sshd).await;
    let runs = (0..12).map(|n| {
        let host = host.clone();
        async move {
            (
                n,
                host.exec(Command::new(format!("sleep 0.2; echo {n}")))
                    .await,
            )
        }
    });
    for (n, result) in futures::future::join_all(runs).await {
        let output = result.unwrap_or_else(|e| panic!("command {n}: {e}"));
        assert_eq!(output.stdout_lossy(), format!("{n}\n"));
    }
    // Later commands use the slots that are left, without refusals.
    assert_eq!(run(&host, "echo still").await.stdout_lossy(), "still\n");
    assert!(
        sshd.log().contains("no more sessions"),
        "the server never refused a session, so this test proved nothing:\n{}",
        sshd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_replaces_the_file_atomically_with_owner_and_mode() {
    let sshd = sshd();
    let host = connect(&sshd).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.conf");
    let path_str = path.to_str().unwrap().to_string();
    const SIZE: usize = 2 * 1024 * 1024;
    let contents = [vec![b'a'; SIZE], vec![b'b'; SIZE]];

    let upload = |content| Upload {
        path: &path_str,
        content,
        owner: "root",
        group: "root",
        mode: 0o640,
    };
    host.upload(upload(&contents[0]))
        .await
        .expect("first upload");

    // A reader that checks every version it sees is one of the two complete contents.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let stop = Arc::clone(&stop);
        let reads = Arc::clone(&reads);
        let path = path.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let data = std::fs::read(&path).expect("the file is always there");
                let whole = data.len() == SIZE
                    && (data.iter().all(|&b| b == b'a') || data.iter().all(|&b| b == b'b'));
                assert!(whole, "saw a partial file of {} bytes", data.len());
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for round in 0..12 {
        host.upload(upload(&contents[(round + 1) % 2]))
            .await
            .unwrap_or_else(|e| panic!("upload {round}: {e}"));
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader saw only whole files");
    assert!(reads.load(Ordering::Relaxed) > 0, "the reader never ran");

    // 12 rewrites starting from 'a': the last one wrote 'a' again.
    assert_eq!(std::fs::read(&path).unwrap(), contents[0]);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["big.conf".to_string()],
        "temporary files left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_is_refused_even_with_accept_new() {
    let mut sshd = sshd();
    // The original key works.
    connect(&sshd).await.close().await;

    sshd.regenerate_host_key_and_restart().unwrap();
    let target = sshd.target("root");
    match Host::connect_ssh("web1", &target).await {
        Err(HostError::HostKeyChanged {
            line, known_hosts, ..
        }) => {
            assert_eq!(line, 1);
            assert_eq!(known_hosts, sshd.known_hosts_path());
        }
        other => panic!("expected HostKeyChanged, got {other:?}"),
    }

    let mut accept_new = sshd.target("root");
    accept_new.accept_new_host_keys = true;
    let before = std::fs::read_to_string(sshd.known_hosts_path()).unwrap();
    let error = Host::connect_ssh("web1", &accept_new)
        .await
        .expect_err("a changed key must be refused even with accept-new");
    assert!(
        matches!(error, HostError::HostKeyChanged { line: 1, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("CHANGED"), "{error}");
    assert_eq!(
        std::fs::read_to_string(sshd.known_hosts_path()).unwrap(),
        before,
        "known_hosts must not be touched"
    );

    // The line number is the one an editor shows, comment lines included.
    let commented = sshd.dir().join("known_hosts_commented");
    std::fs::write(
        &commented,
        format!("# our hosts\n# another comment\n{before}"),
    )
    .unwrap();
    let mut target = sshd.target("root");
    target.known_hosts = commented;
    match Host::connect_ssh("web1", &target).await {
        Err(HostError::HostKeyChanged { line, .. }) => assert_eq!(line, 3),
        other => panic!("expected HostKeyChanged, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_key_is_learned_only_with_accept_new() {
    let sshd = sshd();
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("missing-dir").join("known_hosts");
    let mut target = sshd.target("root");
    target.known_hosts = known_hosts.clone();

    match Host::connect_ssh("web1", &target).await {
        Err(HostError::HostKeyUnknown { known_hosts: k, .. }) => assert_eq!(k, known_hosts),
        other => panic!("expected HostKeyUnknown, got {other:?}"),
    }
    assert!(!known_hosts.exists(), "a refused key must not be written");

    target.accept_new_host_keys = true;
    let host = Host::connect_ssh("web1", &target)
        .await
        .expect("accept-new connects");
    assert_eq!(run(&host, "echo ok").await.stdout_lossy(), "ok\n");
    host.close().await;

    let recorded = std::fs::read_to_string(&known_hosts).unwrap();
    assert_eq!(recorded.trim_end(), sshd.known_hosts_line());
    let mode = std::fs::metadata(&known_hosts)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Now strictly, from the learned file; learning again would duplicate the line.
    target.accept_new_host_keys = false;
    let host = Host::connect_ssh("web1", &target)
        .await
        .expect("strict connect with the learned key");
    assert_eq!(run(&host, "echo again").await.stdout_lossy(), "again\n");
    target.accept_new_host_keys = true;
    Host::connect_ssh("web1", &target)
        .await
        .unwrap()
        .close()
        .await;
    assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), recorded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_fails_fast_with_a_connect_error() {
    let sshd = sshd();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut target = sshd.target("root");
    target.port = port;
    let started = Instant::now();
    let error = Host::connect_ssh("db1", &target)
        .await
        .expect_err("nothing listens there");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    match &error {
        HostError::Connect { address, .. } => assert_eq!(address, &format!("127.0.0.1:{port}")),
        other => panic!("expected Connect, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("db1") && message.contains(&format!("127.0.0.1:{port}")),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out() {
    let sshd = sshd();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and hold connections, never sending a banner.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut target = sshd.target("root");
    target.port = port;
    target.connect_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let error = Host::connect_ssh("db1", &target)
        .await
        .expect_err("no banner");
    let elapsed = started.elapsed();
    assert!(
        matches!(error, HostError::ConnectTimeout { seconds: 1, .. }),
        "{error:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    silent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_count_one_per_exec() {
    let sshd = sshd();
    let host = connect(&sshd).await;
    assert_eq!(host.round_trips(), 0);
    run(&host, "true").await;
    run(&host, "false").await;
    host.exec(Command::new("cat").stdin("x")).await.unwrap();
    assert_eq!(host.round_trips(), 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    host.upload(Upload {
        path: path.to_str().unwrap(),
        content: b"hello\n",
        owner: "root",
        group: "root",
        mode: 0o644,
    })
    .await
    .unwrap();
    assert_eq!(host.round_trips(), 4, "an upload is one exec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_fails_auth_and_says_what_was_tried() {
    let sshd = sshd();
    let dir = tempfile::tempdir().unwrap();
    let stranger = dir.path().join("stranger");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(status.success());

    let mut target = sshd.target("root");
    target.key_file = Some(stranger.clone());
    match Host::connect_ssh("web1", &target).await {
        Err(HostError::Auth { user, reason, .. }) => {
            assert_eq!(user, "root");
            assert!(reason.contains(stranger.to_str().unwrap()), "{reason}");
            assert!(reason.contains("refused"), "{reason}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }

    target.key_file = Some(dir.path().join("no-such-key"));
    match Host::connect_ssh("web1", &target).await {
        Err(HostError::Auth { reason, .. }) => {
            assert!(
                reason.contains("no-such-key") && reason.contains("cannot load"),
                "{reason}"
            );
        }
        other => panic!("expected Auth, got {other:?}"),
    }

    target.key_file = None;
    match Host::connect_ssh("web1", &target).await {
        Err(HostError::Auth { reason, .. }) => {
            assert!(reason.contains("nothing to try"), "{reason}")
        }
        other => panic!("expected Auth, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_agent_enabled_the_key_file_still_works() {
    // Whatever SSH_AUTH_SOCK holds here (nothing, or keys sshd does not know), the key file is
    // tried after the agent.
    let sshd = sshd();
    let mut target = sshd.target("root");
    target.use_agent = true;
    let host = Host::connect_ssh("web1", &target)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(&host, "echo ok").await.stdout_lossy(), "ok\n");
}

/// The pid of the sshd process serving this connection, found from inside a command.
const KILL_OWN_SSHD: &str = "p=$$; \
    while [ \"$(cat /proc/$p/comm)\" != sshd ]; do p=$(awk '{print $4}' /proc/$p/stat); done; \
    kill -9 $p";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_reported_as_disconnected() {
    let sshd = sshd();
    let host = connect(&sshd).await;
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        host.exec(Command::new(KILL_OWN_SSHD)),
    )
    .await
    .expect("a lost connection must not hang the command");
    assert!(
        matches!(result, Err(HostError::Disconnected { .. })),
        "{result:?}"
    );
    let again = tokio::time::timeout(Duration::from_secs(20), host.exec(Command::new("true")))
        .await
        .expect("a lost connection must not hang later commands");
    assert!(
        matches!(again, Err(HostError::Disconnected { .. })),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_after_close_fail_as_disconnected() {
    let sshd = sshd();
    let host = connect(&sshd).await;
    host.close().await;
    let result = tokio::time::timeout(Duration::from_secs(20), host.exec(Command::new("true")))
        .await
        .expect("a closed connection must not hang");
    assert!(
        matches!(result, Err(HostError::Disconnected { .. })),
        "{result:?}"
    );
}

fn sandbox_required() -> bool {
    std::env::var("PROVISION_SANDBOX").is_ok_and(|v| v == "required")
}

fn skip(reason: &str) {
    assert!(
        !sandbox_required(),
        "PROVISION_SANDBOX=required, but: {reason}"
    );
    eprintln!("skipped: {reason}");
}

fn have(tool: &str) -> bool {
    Path::new("/usr/sbin").join(tool).exists()
        || Path::new("/usr/bin").join(tool).exists()
        || which::which(tool).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_root_login_runs_commands_through_sudo() {
    if !have("useradd") {
        return skip("useradd is not installed, cannot create a test user");
    }
    let mut sshd = sshd();
    let sudo = have("sudo");
    let user = sshd
        .add_user(sudo)
        .unwrap_or_else(|e| panic!("cannot create a test user: {e}"));
    let host = Host::connect_ssh("web1", &sshd.target(&user))
        .await
        .unwrap_or_else(|e| panic!("login as {user}: {e}\n{}", sshd.log()));
    let output = run(&host, "id -u").await;
    if sudo {
        assert!(output.success(), "{}", output.stderr_lossy());
        assert_eq!(output.stdout_lossy(), "0\n", "the command ran as root");
    } else {
        // Still shows that the command went through sudo: the shell cannot find it.
        assert_eq!(output.status, Some(127), "{output:?}");
        assert!(output.stderr_lossy().contains("sudo"), "{output:?}");
        skip("sudo is not installed: checked only that commands are sent through `sudo -n --`");
    }
    host.close().await;
}
