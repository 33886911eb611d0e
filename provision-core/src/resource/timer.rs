//! A scheduled job: a oneshot service and its systemd timer (our replacement for cron lines).

use super::{Resource, Service, Unit};

#[derive(Debug, Clone)]
pub struct Timer {
    /// Base name of the units, e.g. `zeoserver-pack` for `zeoserver-pack.{service,timer}`.
    pub name: String,
    pub description: String,
    /// The command line of the job (`ExecStart`).
    pub command: String,
    pub user: String,
    /// systemd calendar expression, e.g. `Sun *-*-* 01:00:00` (the cookbook's `0 1 * * 7`).
    pub on_calendar: String,
    /// Run a missed job at the next boot.
    pub persistent: bool,
}

impl Timer {
    /// The resources that make the timer: both units and the enabled, started timer.
    pub fn resources(&self) -> Vec<Resource> {
        let service = Unit::new(
            format!("{}.service", self.name),
            format!(
                "# Managed by provision.\n[Unit]\nDescription={}\n\n[Service]\nType=oneshot\nUser={}\nExecStart={}\n",
                self.description, self.user, self.command
            ),
        )
        .without_verify();
        let timer = Unit::new(
            format!("{}.timer", self.name),
            format!(
                "# Managed by provision.\n[Unit]\nDescription={} (schedule)\n\n[Timer]\nOnCalendar={}\nPersistent={}\n\n[Install]\nWantedBy=timers.target\n",
                self.description,
                self.on_calendar,
                if self.persistent { "true" } else { "false" }
            ),
        )
        // verify refuses a timer whose service is not installed yet.
        .without_verify();
        let timer_id = Resource::from(timer.clone()).id();
        vec![
            service.into(),
            timer.into(),
            Service::running(format!("{}.timer", self.name))
                .restart_on(timer_id)
                .into(),
        ]
    }
}
