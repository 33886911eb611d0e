//! Every template renders with its example, and every file the provisioners write is a
//! snapshot: a change to any rendered config shows up in review.

use std::collections::BTreeMap;

use provision_celery::broker::{self, BrokerSettings};
use provision_celery::worker::{self, WorkerSettings};
use provision_celery::{BrokerEndpoint, CeleryError, Password, client_environment};
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::template::Templates;

fn templates() -> Templates {
    Templates::new(provision_celery::TEMPLATES).expect("templates parse")
}

/// `/etc/redis/redis.conf` -> `etc__redis__redis.conf`.
fn snapshot_name(prefix: &str, path: &str) -> String {
    format!(
        "{prefix}{}",
        path.trim_start_matches('/').replace('/', "__")
    )
}

/// Snapshot the content of every file and unit, and the list of resources.
fn snapshot_resources(prefix: &str, resources: &[Resource]) {
    let mut listing = String::new();
    for resource in resources {
        listing.push_str(&resource.id());
        match resource {
            Resource::Service(service) => {
                let state = match service.state {
                    Some(provision_core::resource::ServiceState::Running) => "running",
                    Some(provision_core::resource::ServiceState::Stopped) => "stopped",
                    None => "any",
                };
                listing.push_str(&format!(" {state}"));
                if !service.restart_on.is_empty() {
                    listing.push_str(&format!(" (restart on {})", service.restart_on.join(", ")));
                }
            }
            Resource::Directory(dir) => {
                listing.push_str(&format!(" {}:{} {:04o}", dir.owner, dir.group, dir.mode));
            }
            Resource::File(file) => {
                listing.push_str(&format!(
                    " {}:{} {:04o}{}{}",
                    file.owner,
                    file.group,
                    file.mode,
                    if file.secret { " secret" } else { "" },
                    if file.validate.is_some() {
                        " checked"
                    } else {
                        ""
                    }
                ));
                let content = String::from_utf8(file.content.clone()).expect("text");
                insta::assert_snapshot!(snapshot_name(prefix, &file.path), content);
            }
            Resource::Unit(unit) => {
                insta::assert_snapshot!(snapshot_name(prefix, &unit.path()), unit.content);
            }
            _ => {}
        }
        listing.push('\n');
    }
    insta::assert_snapshot!(format!("{prefix}resources"), listing);
}

fn all_phases<E: std::fmt::Debug>(f: impl Fn(Phase) -> Result<Vec<Resource>, E>) -> Vec<Resource> {
    Phase::ALL.iter().flat_map(|p| f(*p).unwrap()).collect()
}

#[test]
fn every_template_renders_with_its_example() {
    let templates = templates();
    for source in provision_celery::TEMPLATES {
        let context: serde_json::Value = serde_json::from_str(source.example)
            .unwrap_or_else(|e| panic!("{}: example is not JSON: {e}", source.name));
        let rendered = templates
            .render(source.name, &context)
            .unwrap_or_else(|e| panic!("{e}"));
        insta::assert_snapshot!(
            format!("template__{}", source.name.replace('/', "__")),
            rendered
        );
    }
}

#[test]
fn broker_resources() {
    let templates = templates();
    let settings = BrokerSettings::new("10.0.0.5".parse().unwrap(), r#"pa"ss\word"#);
    let all = all_phases(|p| broker::resources(&settings, p, &templates));
    snapshot_resources("broker__", &all);
}

#[test]
fn broker_from_the_stack_config() {
    let templates = templates();
    let config: BTreeMap<String, serde_json::Value> = serde_json::from_str(
        r#"{"requirepass": "pw", "dir": "/srv/redis", "vm_swap_file": "/srv/redis/redis.swap",
            "appendfsync": "always", "maxmemory": "256mb", "save": ["900 1", "300 10"]}"#,
    )
    .unwrap();
    let settings =
        BrokerSettings::from_redis_config("10.0.0.5".parse().unwrap(), 6380, &config).unwrap();
    let all = all_phases(|p| broker::resources(&settings, p, &templates));
    snapshot_resources("broker_custom__", &all);
}

fn worker_settings() -> WorkerSettings {
    let endpoint = BrokerEndpoint::new("10.0.0.5", 6379, Some(Password("p@ss$w\"rd".into())));
    let mut settings = WorkerSettings::new("site", "/srv/www/site", endpoint);
    settings.celery_app = Some("site.tasks".to_string());
    settings.imports = vec!["site.tasks".to_string(), "site.more_tasks".to_string()];
    settings.worker_args = r#"--concurrency=2 -Q "default,slow" --max-tasks-per-child 100"#.into();
    settings.beat_args = "--max-interval 30".into();
    settings.environment = [("TZ", "Europe/Amsterdam"), ("PLONE_SITE", "Plone")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    settings
}

#[test]
fn worker_resources_on_the_beat_host() {
    let templates = templates();
    let mut settings = worker_settings();
    settings.beat = true;
    let all = all_phases(|p| worker::resources(&settings, p, &templates));
    snapshot_resources("worker_beat__", &all);
    assert_eq!(
        worker::restart_command(&settings),
        "systemctl enable --quiet celery-site-worker.service celery-site-beat.service && \
         systemctl restart celery-site-worker.service celery-site-beat.service"
    );
}

#[test]
fn worker_resources_without_beat_before_the_first_release() {
    let templates = templates();
    let endpoint = BrokerEndpoint::new("redis.example.com", 6380, None);
    let mut settings = WorkerSettings::new("site", "/srv/www/site", endpoint);
    settings.start = false;
    let all = all_phases(|p| worker::resources(&settings, p, &templates));
    snapshot_resources("worker_buildout__", &all);
    assert_eq!(
        worker::restart_command(&settings),
        "systemctl enable --quiet celery-site-worker.service && \
         systemctl restart celery-site-worker.service"
    );
}

#[test]
fn moving_beat_leaves_the_workers_files_alone() {
    let templates = templates();
    let with = WorkerSettings {
        beat: true,
        ..worker_settings()
    };
    let without = worker_settings();
    assert_eq!(
        worker::render_environment(&with, &templates).unwrap(),
        worker::render_environment(&without, &templates).unwrap()
    );
    assert_eq!(
        worker::render_worker_unit(&with, &templates).unwrap(),
        worker::render_worker_unit(&without, &templates).unwrap()
    );
}

#[test]
fn the_clients_environment_is_what_collective_celery_reads() {
    let env = client_environment(&worker_settings());
    insta::assert_debug_snapshot!("client_environment", env);
    let one = WorkerSettings {
        imports: vec!["my.package.tasks".to_string()],
        ..worker_settings()
    };
    assert_eq!(
        client_environment(&one)["CELERY_IMPORTS"],
        "('my.package.tasks',)"
    );
    let none = WorkerSettings {
        imports: Vec::new(),
        ..worker_settings()
    };
    assert!(!client_environment(&none).contains_key("CELERY_IMPORTS"));
}

#[test]
fn celery_off_stops_both_units() {
    let ids: Vec<String> = worker::stopped("site").iter().map(Resource::id).collect();
    assert_eq!(
        ids,
        [
            "service:celery-site-worker.service",
            "service:celery-site-beat.service"
        ]
    );
}

#[test]
fn two_beat_hosts_are_an_input_error() {
    assert!(worker::check_single_beat(&["app1"]).is_ok());
    assert!(worker::check_single_beat::<&str>(&[]).is_ok());
    let error = worker::check_single_beat(&["app1", "app2"]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "`plone_instances.celerybeat`: Celery beat would run on app1 and app2: it must run on \
         exactly one host, or every periodic task runs once per beat"
    );
}

#[test]
fn bad_worker_settings_name_the_setting() {
    let templates = templates();
    let error = |settings: WorkerSettings| -> String {
        match worker::resources(&settings, Phase::Configure, &templates) {
            Err(CeleryError::Invalid { setting, message }) => format!("{setting}: {message}"),
            other => panic!("not refused: {other:?}"),
        }
    };
    let base = worker_settings;
    assert_eq!(
        error(WorkerSettings {
            worker_args: "-Q 'open".into(),
            ..base()
        }),
        "plone_instances.celery_args: a ' quote is not closed"
    );
    assert!(
        error(WorkerSettings {
            celery_app: Some("my-site".into()),
            ..base()
        })
        .starts_with("celery_app:")
    );
    assert!(
        error(WorkerSettings {
            celery: "bin/celery".into(),
            ..base()
        })
        .starts_with("celery:")
    );
    let mut bad_env = base();
    bad_env.environment.insert("BAD-NAME".into(), "x".into());
    assert!(error(bad_env).starts_with("deploy.environment:"));
    assert!(
        error(WorkerSettings {
            log_level: "LOUD".into(),
            ..base()
        })
        .starts_with("log_level:")
    );
}
