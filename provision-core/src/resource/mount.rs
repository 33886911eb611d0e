//! A filesystem in /etc/fstab that is also mounted.

use super::{Drift, state_value};
use crate::shell::quote;

#[derive(Debug, Clone)]
pub struct Mount {
    /// What to mount: `host:/export`, `host:/volume`, `s3fs#bucket`, a device.
    pub device: String,
    pub mount_point: String,
    pub fstype: String,
    pub options: String,
}

impl Mount {
    pub fn new(device: &str, mount_point: &str, fstype: &str, options: &str) -> Mount {
        Mount {
            device: device.to_string(),
            mount_point: mount_point.to_string(),
            fstype: fstype.to_string(),
            options: options.to_string(),
        }
    }

    fn fstab_fields(&self) -> String {
        format!("{} {} {}", self.device, self.fstype, self.options)
    }

    pub(crate) fn check_script(&self, tag: &str) -> String {
        let m = quote(&self.mount_point);
        format!(
            "echo \"@{tag} fstab=$(awk -v m={m} '$1 !~ /^#/ && $2 == m {{print $1 \" \" $3 \" \" $4}}' /etc/fstab | head -n 1)\"; \
             echo \"@{tag} mounted=$(awk -v m={m} '$2 == m {{print $1 \" \" $3}}' /proc/self/mounts | tail -n 1)\"\n"
        )
    }

    pub(crate) fn drift(&self, state: &[&str]) -> Result<Option<Drift>, String> {
        let fstab = state_value(state, "fstab").ok_or("no state reported")?;
        let mounted_as = state_value(state, "mounted").unwrap_or("");
        let mounted = !mounted_as.is_empty();
        // The same filesystem takes new options in place; another one must be swapped.
        let same_filesystem = mounted_as == format!("{} {}", self.device, self.fstype);
        let m = quote(&self.mount_point);
        let mut summary = Vec::new();
        let mut fix = String::new();
        let fstab_changed = fstab != self.fstab_fields();
        if fstab_changed {
            summary.push(if fstab.is_empty() {
                format!("add to /etc/fstab: {}", self.fstab_fields())
            } else {
                format!("change /etc/fstab: {fstab} -> {}", self.fstab_fields())
            });
            let line = format!(
                "{} {} {} {} 0 0",
                self.device, self.mount_point, self.fstype, self.options
            );
            fix.push_str(&format!(
                "tmp=$(mktemp /etc/.fstab.XXXXXX) && awk -v m={m} '$2 != m' /etc/fstab > \"$tmp\" && \
                 echo {line} >> \"$tmp\" && chmod 644 \"$tmp\" && mv -f \"$tmp\" /etc/fstab\n",
                line = quote(&line)
            ));
        }
        if !mounted {
            summary.push("mount".to_string());
            fix.push_str(&format!("mkdir -p {m} && mount {m}\n"));
        } else if fstab_changed && same_filesystem {
            summary.push("remount with the new options".to_string());
            fix.push_str(&format!("mount -o remount,{} {m}\n", quote(&self.options)));
        } else if fstab_changed {
            summary.push(format!("unmount {mounted_as} and mount the new filesystem"));
            fix.push_str(&format!("umount {m} && mount {m}\n"));
        }
        Ok((!summary.is_empty()).then_some(Drift {
            summary,
            diff: None,
            fix,
        }))
    }
}
