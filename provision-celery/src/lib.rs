//! The Celery layers of a Plone stack, with Redis as the broker (the cookbook's
//! `redis::default`, the `celery` and `celerybeat` supervisor programs of instances.rb, and
//! instances-celerybeat.rb).
//!
//! - [`broker::resources`]: the `celery_broker` layer, Redis from Debian (see [`broker`]). An
//!   external broker (`plone_instances.broker.host`) needs nothing installed: describe it with
//!   a [`BrokerEndpoint`].
//! - [`worker::resources`]: on every instance host when `plone_instances.enable_celery`, a
//!   worker, and beat on the one host whose [`WorkerSettings::beat`] is set. A deploy runs
//!   [`worker::restart_command`] once the new release is live.
//! - [`client_environment`]: what the Plone clients add to their environment so that
//!   collective.celery (and Celery itself) send tasks to the broker.
//!
//! collective.celery's own worker, `pcelery`, does not start on Zope 6 (`cannot import name
//! 'configure' from 'Zope2.Startup.run'`), so the worker is the app's Celery app run by
//! Celery's own program: `celery -A <module> worker`.
//!
//! Like the other provisioners, this crate turns plain settings into resources per phase and
//! never reads the stack or opens a connection.

pub mod broker;
mod endpoint;
mod error;
mod text;
pub mod worker;

use provision_core::template::TemplateSource;

pub use broker::BrokerSettings;
pub use endpoint::{BrokerEndpoint, Password};
pub use error::CeleryError;
pub use worker::{WorkerSettings, client_environment};

/// Every template of this crate, with an example context.
pub const TEMPLATES: &[TemplateSource] = &[
    TemplateSource {
        name: broker::CONFIG_TEMPLATE,
        source: include_str!("templates/celery/redis.conf.j2"),
        example: r#"{
            "bind": "10.0.0.5 127.0.0.1 -::1",
            "port": 6379,
            "dir": "/var/lib/redis",
            "defaults": [{"name": "appendonly", "value": "yes"}, {"name": "appendfsync", "value": "everysec"}],
            "extra": [{"name": "maxmemory", "value": "256mb"}],
            "auth_file": "/etc/redis/provision-auth.conf"
        }"#,
    },
    TemplateSource {
        name: broker::AUTH_TEMPLATE,
        source: include_str!("templates/celery/redis-auth.conf.j2"),
        example: r#"{"password_literal": "\"s3cret \\\"pw\\\"\""}"#,
    },
    TemplateSource {
        name: broker::DROP_IN_TEMPLATE,
        source: include_str!("templates/celery/redis-service.conf.j2"),
        example: r#"{"dir": "/srv/redis"}"#,
    },
    TemplateSource {
        name: worker::ENV_TEMPLATE,
        source: include_str!("templates/celery/celery.env.j2"),
        example: r#"{
            "app": "site",
            "group": "plone",
            "lines": ["TZ=\"UTC\"", "CELERY_BROKER_URL=\"redis://:pw@10.0.0.5:6379/0\"", "CELERY_RESULT_BACKEND=\"redis://:pw@10.0.0.5:6379/1\""]
        }"#,
    },
    TemplateSource {
        name: worker::WORKER_TEMPLATE,
        source: include_str!("templates/celery/worker.service.j2"),
        example: r#"{
            "app": "site",
            "user": "plone",
            "group": "plone",
            "working_directory": "/srv/www/site/current",
            "environment_file": "/etc/provision/celery/site.env",
            "exec_start": "/srv/www/site/current/bin/celery -A site.tasks worker --hostname=site@%%h --loglevel=INFO",
            "stop_timeout": 300,
            "state_dir": "/var/lib/celery/site"
        }"#,
    },
    TemplateSource {
        name: worker::BEAT_TEMPLATE,
        source: include_str!("templates/celery/beat.service.j2"),
        example: r#"{
            "app": "site",
            "user": "plone",
            "group": "plone",
            "working_directory": "/srv/www/site/current",
            "environment_file": "/etc/provision/celery/site.env",
            "exec_start": "/srv/www/site/current/bin/celery -A site.tasks beat --loglevel=INFO --schedule=/var/lib/celery/site/celerybeat-schedule",
            "stop_timeout": 300,
            "state_dir": "/var/lib/celery/site"
        }"#,
    },
];
