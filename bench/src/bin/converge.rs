//! Benchmark (not a test): a no-op converge of 50 file resources on one host over loopback
//! sshd, batched (provision's engine) next to the same 50 checks sent one SSH command each.
//!
//! Run: `cargo run --release -p provision-bench --bin converge [-- RESOURCES [REPEATS]]`

use std::time::{Duration, Instant};

use provision_core::engine::{self, Connection, Mode, Options, Quiet};
use provision_core::host::Command;
use provision_core::resource::{File, Resource};
use provision_core::shell::quote;
use provision_core::testing::Sshd;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(50);
    let repeats: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);

    let sshd = Sshd::start()?;
    let dir = tempfile::tempdir()?;
    let resources: Vec<Resource> = (0..count)
        .map(|i| {
            File::new(
                format!("{}/conf-{i}.cfg", dir.path().display()),
                format!("setting_{i} = {}\n", "x".repeat(200)),
            )
            .into()
        })
        .collect();
    let targets = vec![("bench".to_string(), Connection::Ssh(sshd.target("root")))];
    let (host, _) = engine::connect_all(&targets, 1, &Quiet).await.remove(0)?;
    let options = Options {
        mode: Mode::Apply,
        command_timeout: None,
        mask: &|s: &str| s.to_string(),
        progress: &Quiet,
    };
    engine::converge(&host, &resources, &options).await; // first converge writes the files

    let mut batched = Vec::new();
    let mut batched_trips = 0;
    for _ in 0..repeats {
        let before = host.round_trips();
        let start = Instant::now();
        let report = engine::converge(&host, &resources, &options).await;
        batched.push(start.elapsed());
        batched_trips = host.round_trips() - before;
        anyhow::ensure!(report.changes.is_empty(), "the converge was not a no-op");
    }

    let mut single = Vec::new();
    let mut single_trips = 0;
    for _ in 0..repeats {
        let before = host.round_trips();
        let start = Instant::now();
        for i in 0..count {
            let path = quote(&format!("{}/conf-{i}.cfg", dir.path().display()));
            host.exec(Command::new(format!(
                "sha256sum < {path}; stat -c '%U %G %a' {path}"
            )))
            .await?;
        }
        single.push(start.elapsed());
        single_trips = host.round_trips() - before;
    }

    let batched_median = median(&mut batched);
    let single_median = median(&mut single);
    println!(
        "no-op converge of {count} file resources, one host, loopback sshd, median of {repeats}"
    );
    println!("{:<36} {:>12} {:>12}", "", "wall time", "round trips");
    println!(
        "{:<36} {:>10.1}ms {:>12}",
        "provision (batched check)",
        ms(batched_median),
        batched_trips
    );
    println!(
        "{:<36} {:>10.1}ms {:>12}",
        "one SSH command per resource",
        ms(single_median),
        single_trips
    );
    println!(
        "ratio: {:.1}x faster, {}x fewer round trips (cores: {})",
        ms(single_median) / ms(batched_median),
        single_trips / batched_trips.max(1),
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    );
    Ok(())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
