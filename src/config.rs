//! The CRI plugin configuration: containerd's key names where they mean the same, defaults, and
//! validation with clear errors. Times are `Duration`s; in the TOML they are written as in
//! containerd: Go duration strings (`"4h0m0s"`, `"1m30s"`) or, where containerd counts
//! seconds, integers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent CRI state (status checkpoints, pod and container dirs).
    pub root_dir: String,
    /// Volatile CRI state (FIFOs, shm mounts, netns pins).
    pub state_dir: String,
    /// containerd's own root, for the image filesystem path reported by ImageFsInfo.
    pub containerd_root_dir: String,
    pub sandbox_image: String,
    pub containerd: ContainerdConfig,
    pub cni: CniConfig,
    pub stream_server_address: String,
    pub stream_server_port: String,
    #[serde(with = "go_duration")]
    pub stream_idle_timeout: Duration,
    /// Serve the stream URLs over https. Without `x509_key_pair_streaming`, a self-signed
    /// certificate is made at start, as containerd does.
    pub enable_tls_streaming: bool,
    /// The stream server's certificate and key, PEM files (with `enable_tls_streaming`).
    pub x509_key_pair_streaming: X509KeyPairStreaming,
    /// Between refreshes of the snapshot usage cache (an integer of seconds, as in containerd).
    #[serde(with = "seconds")]
    pub stats_collect_period: Duration,
    pub max_concurrent_downloads: u32,
    /// A pull with requests in flight but no byte for this long is cancelled; zero: never.
    #[serde(with = "go_duration")]
    pub image_pull_progress_timeout: Duration,
    /// How long ExecSync waits for the output after the process exited; zero: until it ends.
    #[serde(with = "go_duration")]
    pub drain_exec_sync_io_timeout: Duration,
    pub max_container_log_line_size: i64,
    pub restrict_oom_score_adj: bool,
    pub ignore_image_defined_volumes: bool,
    pub netns_mounts_under_state_dir: bool,
    pub disable_cgroup: bool,
    pub registry: RegistryConfig,
    /// Between task-state reconciliations (a container whose task is gone is marked EXITED
    /// even when its exit was never observed), an integer of seconds; 0 disables. Not in
    /// containerd.
    #[serde(with = "seconds")]
    pub reconcile_period: Duration,
    /// Capacity of each GetContainerEvents subscriber's buffer; a full buffer drops and counts.
    pub container_event_buffer: usize,
    /// Maximum ids waiting in the event backoff queue; beyond it new failures are dropped and
    /// counted, and the reconciler repairs the container later.
    pub max_backoff_entries: usize,
    /// Never apply AppArmor, even where the host has it (containerd's key).
    pub disable_apparmor: bool,
    /// The seccomp profile of a container whose CRI request names none: "" (unconfined, the
    /// default), `runtime/default` or `localhost/<path>` (containerd's key).
    pub unset_seccomp_profile: String,
    /// Pods with their own network namespace may bind ports below 1024 without
    /// CAP_NET_BIND_SERVICE (`net.ipv4.ip_unprivileged_port_start=0`), as in containerd.
    pub enable_unprivileged_ports: bool,
    /// Pods with their own network namespace may open ICMP echo sockets
    /// (`net.ipv4.ping_group_range=0 2147483647`), as in containerd.
    pub enable_unprivileged_icmp: bool,
    /// CRI devices are owned by the container's run_as_user/run_as_group instead of keeping
    /// the host node's owner.
    pub device_ownership_from_security_context: bool,
    /// Container Device Interface: not implemented; `true` is refused at start.
    pub enable_cdi: bool,
    /// Leave huge-page limits out of the runtime spec (containerd's default: true).
    pub disable_hugetlb_controller: bool,
    /// Skip huge-page limits, with a warning, on a host without the hugetlb controller
    /// (containerd's default: true; `false` is refused at start).
    pub tolerate_missing_hugetlb_controller: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerdConfig {
    pub snapshotter: String,
    pub default_runtime_name: String,
    pub runtimes: BTreeMap<String, RuntimeConfig>,
    pub disable_snapshot_annotations: bool,
    pub discard_unpacked_layers: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    pub runtime_type: String,
    pub runtime_path: String,
    pub snapshotter: String,
    pub sandbox_mode: String,
    pub privileged_without_host_devices: bool,
    pub privileged_without_host_devices_all_devices_allowed: bool,
    /// Pod annotations (names or glob patterns such as `io.katacontainers.*`) passed to the
    /// runtime in the OCI spec; the others stay with the CRI, as in containerd.
    pub pod_annotations: Vec<String>,
    /// Container annotations passed to the runtime, likewise.
    pub container_annotations: Vec<String>,
    /// The runc shim's options (containerd's `runtimes.<handler>.options` table, same keys).
    pub options: RuncOptions,
}

/// The options of the runc v2 shim, with containerd's TOML keys. The shim reads them at task
/// create; `SystemdCgroup` also changes the cgroup paths crid writes into the spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
pub struct RuncOptions {
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    pub shim_cgroup: String,
    pub io_uid: u32,
    pub io_gid: u32,
    pub binary_name: String,
    pub root: String,
    pub criu_path: String,
    pub systemd_cgroup: bool,
    pub criu_image_path: String,
    pub criu_work_path: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    pub bin_dir: String,
    pub conf_dir: String,
    pub max_conf_num: u32,
    pub setup_serially: bool,
    pub conf_template: String,
    pub ip_pref: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct X509KeyPairStreaming {
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Directory of `<host>/hosts.toml` files, as containerd's.
    pub config_path: String,
}

/// The runtime types whose shim takes runc's options.
const RUNC_RUNTIME_TYPES: &[&str] =
    &["io.containerd.runc.v2", "io.containerd.runc.v1", "io.containerd.runtime.v1.linux"];

impl Default for Config {
    fn default() -> Self {
        Config {
            root_dir: "/var/lib/crid".into(),
            state_dir: "/run/crid".into(),
            containerd_root_dir: "/var/lib/containerd".into(),
            sandbox_image: "registry.k8s.io/pause:3.8".into(),
            containerd: ContainerdConfig::default(),
            cni: CniConfig::default(),
            stream_server_address: "127.0.0.1".into(),
            stream_server_port: "0".into(),
            stream_idle_timeout: Duration::from_secs(4 * 3600),
            enable_tls_streaming: false,
            x509_key_pair_streaming: X509KeyPairStreaming::default(),
            stats_collect_period: Duration::from_secs(10),
            max_concurrent_downloads: 3,
            image_pull_progress_timeout: Duration::from_secs(5 * 60),
            drain_exec_sync_io_timeout: Duration::ZERO,
            max_container_log_line_size: 16 * 1024,
            restrict_oom_score_adj: false,
            ignore_image_defined_volumes: false,
            netns_mounts_under_state_dir: false,
            disable_cgroup: false,
            registry: RegistryConfig::default(),
            reconcile_period: Duration::from_secs(10),
            container_event_buffer: 1000,
            max_backoff_entries: 10_000,
            disable_apparmor: false,
            unset_seccomp_profile: String::new(),
            enable_unprivileged_ports: false,
            enable_unprivileged_icmp: false,
            device_ownership_from_security_context: false,
            enable_cdi: false,
            disable_hugetlb_controller: true,
            tolerate_missing_hugetlb_controller: true,
        }
    }
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        let mut runtimes = BTreeMap::new();
        runtimes.insert("runc".to_string(), RuntimeConfig::default());
        ContainerdConfig {
            snapshotter: "overlayfs".into(),
            default_runtime_name: "runc".into(),
            runtimes,
            disable_snapshot_annotations: true,
            discard_unpacked_layers: false,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            runtime_type: "io.containerd.runc.v2".into(),
            runtime_path: String::new(),
            snapshotter: String::new(),
            sandbox_mode: "podsandbox".into(),
            privileged_without_host_devices: false,
            privileged_without_host_devices_all_devices_allowed: false,
            pod_annotations: Vec::new(),
            container_annotations: Vec::new(),
            options: RuncOptions::default(),
        }
    }
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            bin_dir: "/opt/cni/bin".into(),
            conf_dir: "/etc/cni/net.d".into(),
            max_conf_num: 1,
            setup_serially: false,
            conf_template: String::new(),
            ip_pref: String::new(),
        }
    }
}

/// Parses a Go duration (`time.ParseDuration`): a sequence of `<number><unit>`, the number
/// possibly with a fraction, units h, m, s, ms, us (µs), ns; "0" alone is zero. No sign: a
/// negative time means nothing in this config.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(Error::invalid("empty duration"));
    }
    let mut total_ns: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (whole, fraction) = rest[..number_len].split_once('.').unwrap_or((&rest[..number_len], ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(Error::invalid(format!("invalid duration {text:?}: expected a number")));
        }
        let invalid = || Error::invalid(format!("invalid duration {text:?}"));
        let value: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| invalid())? };
        // At most nine fractional digits matter (nanoseconds of a second); more are cut.
        let fraction = &fraction[..fraction.len().min(18)];
        let fraction_value: u128 = if fraction.is_empty() { 0 } else { fraction.parse().map_err(|_| invalid())? };
        let fraction_scale = 10u128.pow(fraction.len() as u32);
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit_ns: u128 = match &rest[..unit_len] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            unit => return Err(Error::invalid(format!("invalid duration {text:?}: unknown unit {unit:?}"))),
        };
        rest = &rest[unit_len..];
        let part_ns = value.saturating_mul(unit_ns).saturating_add(fraction_value * unit_ns / fraction_scale);
        total_ns = total_ns.saturating_add(part_ns);
    }
    Ok(Duration::from_nanos(total_ns.min(u64::MAX as u128) as u64))
}

/// Writes a duration as Go's `Duration.String` does (`4h0m0s`, `1m30s`, `250ms`, `0s`), the
/// form containerd shows its config in.
pub fn format_duration(duration: Duration) -> String {
    let ns = duration.as_nanos();
    let with_fraction = |value: u128, scale: u128, unit: &str| {
        let (whole, fraction) = (value / scale, value % scale);
        if fraction == 0 {
            return format!("{whole}{unit}");
        }
        let digits = scale.ilog10() as usize;
        let fraction = format!("{fraction:0digits$}");
        format!("{whole}.{}{unit}", fraction.trim_end_matches('0'))
    };
    match ns {
        0 => "0s".to_string(),
        1..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => with_fraction(ns, 1_000, "µs"),
        1_000_000..1_000_000_000 => with_fraction(ns, 1_000_000, "ms"),
        _ => {
            let seconds = with_fraction(ns % 60_000_000_000, 1_000_000_000, "s");
            let minutes = ns / 60_000_000_000 % 60;
            let hours = ns / 3_600_000_000_000;
            match (hours, minutes) {
                (0, 0) => seconds,
                (0, _) => format!("{minutes}m{seconds}"),
                _ => format!("{hours}h{minutes}m{seconds}"),
            }
        }
    }
}

/// serde for a `Duration` written as a Go duration string.
mod go_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map_err(|error| serde::de::Error::custom(error.message))
    }
}

/// serde for a `Duration` written as an integer of seconds.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

/// The JSON name containerd gives a config key in verbose Status: camelCase, but for the few
/// keys its Go structs spell otherwise.
fn containerd_json_name(key: &str) -> String {
    match key {
        "max_container_log_line_size" => "maxContainerLogSize".into(),
        "restrict_oom_score_adj" => "restrictOOMScoreAdj".into(),
        "enable_tls_streaming" => "enableTLSStreaming".into(),
        "drain_exec_sync_io_timeout" => "drainExecSyncIOTimeout".into(),
        "enable_unprivileged_icmp" => "enableUnprivilegedICMP".into(),
        "enable_cdi" => "enableCDI".into(),
        "pod_annotations" => "PodAnnotations".into(),
        "container_annotations" => "ContainerAnnotations".into(),
        "device_ownership_from_security_context"
        | "privileged_without_host_devices"
        | "privileged_without_host_devices_all_devices_allowed" => key.into(),
        _ => {
            let mut name = String::with_capacity(key.len());
            let mut upper = false;
            for c in key.chars() {
                match c {
                    '_' => upper = true,
                    c if upper => {
                        name.extend(c.to_uppercase());
                        upper = false;
                    }
                    c => name.push(c),
                }
            }
            name
        }
    }
}

/// Renames the keys of a serialised config to containerd's JSON names. The keys of `runtimes`
/// are handler names and those of `options` are the shim's own: both are kept as they are.
fn rename_to_containerd_json(value: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(fields) = value else { return value };
    fields
        .into_iter()
        .map(|(key, value)| {
            let value = match (key.as_str(), value) {
                ("runtimes", serde_json::Value::Object(runtimes)) => serde_json::Value::Object(
                    runtimes
                        .into_iter()
                        .map(|(handler, runtime)| (handler, rename_to_containerd_json(runtime)))
                        .collect(),
                ),
                ("options", options) => options,
                (_, value) => rename_to_containerd_json(value),
            };
            (containerd_json_name(&key), value)
        })
        .collect()
}

impl Config {
    /// The config as verbose Status reports it (`crictl info`'s `config`), under containerd's
    /// JSON names, which tools read (`.config.sandboxImage`, `.config.maxContainerLogSize`).
    /// The TOML keys stay snake_case: this is a view, not a format crid reads.
    pub fn containerd_json(&self) -> String {
        rename_to_containerd_json(serde_json::to_value(self).expect("config serialises")).to_string()
    }

    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::invalid(format!("invalid config: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the config as containerd's `ValidatePluginConfig` does; the first error wins.
    pub fn validate(&self) -> Result<()> {
        let runtime_name = &self.containerd.default_runtime_name;
        if runtime_name.is_empty() {
            return Err(Error::invalid("`containerd.default_runtime_name` is empty"));
        }
        if !self.containerd.runtimes.contains_key(runtime_name) {
            return Err(Error::invalid(format!(
                "no corresponding runtime configured in `containerd.runtimes` for `containerd` `default_runtime_name = \"{runtime_name}\"`"
            )));
        }
        for (name, runtime) in &self.containerd.runtimes {
            if runtime.runtime_type.is_empty() {
                return Err(Error::invalid(format!("runtime {name:?}: `runtime_type` is empty")));
            }
            if runtime.privileged_without_host_devices_all_devices_allowed && !runtime.privileged_without_host_devices {
                return Err(Error::invalid(format!(
                    "runtime {name:?}: `privileged_without_host_devices_all_devices_allowed` requires `privileged_without_host_devices` to be enabled"
                )));
            }
            for pattern in runtime.pod_annotations.iter().chain(&runtime.container_annotations) {
                glob::Pattern::new(pattern).map_err(|e| {
                    Error::invalid(format!("runtime {name:?}: invalid annotation pattern {pattern:?}: {e}"))
                })?;
            }
            if runtime.options != RuncOptions::default() && !RUNC_RUNTIME_TYPES.contains(&runtime.runtime_type.as_str())
            {
                return Err(Error::invalid(format!(
                    "runtime {name:?}: `options` are runc's, but `runtime_type` is {:?}",
                    runtime.runtime_type
                )));
            }
            if !runtime.sandbox_mode.is_empty() && runtime.sandbox_mode != "podsandbox" {
                return Err(Error::invalid(format!(
                    "runtime {name:?}: unsupported `sandbox_mode` {:?}",
                    runtime.sandbox_mode
                )));
            }
        }
        if self.containerd.snapshotter.is_empty() {
            return Err(Error::invalid("`containerd.snapshotter` is empty"));
        }
        if self.sandbox_image.is_empty() {
            return Err(Error::invalid("`sandbox_image` is empty"));
        }
        let key_pair = &self.x509_key_pair_streaming;
        if self.enable_tls_streaming && key_pair.tls_cert_file.is_empty() != key_pair.tls_key_file.is_empty() {
            return Err(Error::invalid(
                "`x509_key_pair_streaming`: set both `tls_cert_file` and `tls_key_file`, or neither (a self-signed certificate)",
            ));
        }
        if self.root_dir.is_empty() || self.state_dir.is_empty() {
            return Err(Error::invalid("`root_dir` and `state_dir` must be set"));
        }
        if !matches!(self.cni.ip_pref.as_str(), "" | "ipv4" | "ipv6" | "cni") {
            return Err(Error::invalid(format!(
                "invalid `cni.ip_pref` {:?}: want ipv4, ipv6 or cni",
                self.cni.ip_pref
            )));
        }
        if !matches!(self.unset_seccomp_profile.as_str(), "" | "unconfined" | "runtime/default" | "docker/default")
            && !self.unset_seccomp_profile.starts_with("localhost/")
        {
            return Err(Error::invalid(format!(
                "invalid `unset_seccomp_profile` {:?}: want \"\", unconfined, runtime/default or localhost/<path>",
                self.unset_seccomp_profile
            )));
        }
        // Keys containerd has whose other values crid does not implement: refused, never
        // accepted and ignored.
        let unsupported = [
            (self.enable_cdi, "`enable_cdi = true`: the Container Device Interface is not supported"),
            (
                !self.tolerate_missing_hugetlb_controller,
                "`tolerate_missing_hugetlb_controller = false`: crid skips huge-page limits (with a warning) where the controller is missing",
            ),
            (
                self.cni.max_conf_num != 1,
                "`cni.max_conf_num` other than 1: crid sets up one network (the first config) per pod",
            ),
            (
                self.containerd.discard_unpacked_layers,
                "`containerd.discard_unpacked_layers = true`: crid keeps the layers it unpacked",
            ),
            (
                !self.containerd.disable_snapshot_annotations,
                "`containerd.disable_snapshot_annotations = false`: crid passes no snapshot annotations (remote snapshotters are not supported)",
            ),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(refused, _)| *refused) {
            return Err(Error::invalid(format!("unsupported setting {what}")));
        }
        if self.max_concurrent_downloads == 0 {
            return Err(Error::invalid("`max_concurrent_downloads` must be at least 1"));
        }
        if self.container_event_buffer == 0 || self.max_backoff_entries == 0 {
            return Err(Error::invalid("`container_event_buffer` and `max_backoff_entries` must be at least 1"));
        }
        Ok(())
    }

    /// The resources as the runtime gets them: without huge-page limits unless the hugetlb
    /// controller is enabled (`disable_hugetlb_controller = false`), as in containerd.
    pub fn runtime_resources(&self, resources: &crate::ports::Resources) -> crate::ports::Resources {
        let mut resources = resources.clone();
        if self.disable_hugetlb_controller {
            resources.hugepage_limits.clear();
        }
        resources
    }

    /// The runtime type of `handler`. A sandbox keeps its handler's name; a restart with a
    /// config that no longer has it fails the calls that need it, not the daemon.
    pub fn runtime_type_for(&self, handler: &str) -> crate::Result<String> {
        self.containerd
            .runtimes
            .get(handler)
            .map(|runtime| runtime.runtime_type.clone())
            .ok_or_else(|| crate::Error::precondition(format!("runtime handler {handler:?} is not configured")))
    }

    /// Whether a runtime handler's runc uses the systemd cgroup driver (`SystemdCgroup`).
    pub fn systemd_cgroup_for(&self, handler: &str) -> bool {
        self.containerd.runtimes.get(handler).is_some_and(|runtime| runtime.options.systemd_cgroup)
    }

    /// The snapshotter for a runtime handler: its own, else the global one.
    pub fn snapshotter_for(&self, handler: &str) -> String {
        match self.containerd.runtimes.get(handler) {
            Some(runtime) if !runtime.snapshotter.is_empty() => runtime.snapshotter.clone(),
            _ => self.containerd.snapshotter.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_missing_from_the_config_is_an_error() {
        let config = Config::default();
        let handler = config.containerd.default_runtime_name.clone();
        assert!(!config.runtime_type_for(&handler).unwrap().is_empty());
        let error = config.runtime_type_for("removed-since-restart").unwrap_err();
        assert_eq!(error.kind, crate::ErrorKind::FailedPrecondition);
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("4h0m0s").unwrap(), Duration::from_secs(4 * 3600));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2.25s").unwrap(), Duration::from_millis(2250));
        assert_eq!(parse_duration("1µs500ns").unwrap(), Duration::from_nanos(1500));
        for bad in ["5 minutes", "m", "5", "1..5s", "-5s", "", "5d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_print_like_go_and_read_back() {
        for (duration, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(4 * 3600), "4h0m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(2250), "2.25s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_secs(3600) + Duration::from_millis(1), "1h0m0.001s"),
        ] {
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text).unwrap(), duration, "{text}");
        }
    }

    #[test]
    fn time_keys_read_containerds_text_and_write_it_back() {
        let config = Config::from_toml(
            "stream_idle_timeout = \"4h0m0s\"\nimage_pull_progress_timeout = \"1m30s\"\n\
             drain_exec_sync_io_timeout = \"0\"\nstats_collect_period = 3\nreconcile_period = 0",
        )
        .unwrap();
        assert_eq!(config.stream_idle_timeout, Duration::from_secs(4 * 3600));
        assert_eq!(config.image_pull_progress_timeout, Duration::from_secs(90));
        assert_eq!(config.drain_exec_sync_io_timeout, Duration::ZERO);
        assert_eq!((config.stats_collect_period, config.reconcile_period), (Duration::from_secs(3), Duration::ZERO));
        let written = toml::to_string(&config).unwrap();
        assert!(written.contains("stream_idle_timeout = \"4h0m0s\""), "{written}");
        assert!(written.contains("stats_collect_period = 3\n"), "{written}");
        assert_eq!(Config::from_toml(&written).unwrap(), config);
        for (text, key) in [
            ("stream_idle_timeout = \"4 hours\"", "stream_idle_timeout"),
            ("drain_exec_sync_io_timeout = 5", "drain_exec_sync_io_timeout"),
            ("stats_collect_period = \"10s\"", "stats_collect_period"),
        ] {
            let error = Config::from_toml(text).unwrap_err();
            assert_eq!(error.kind, crate::ErrorKind::InvalidArgument);
            assert!(error.message.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn runtime_options_use_containerds_keys_and_unsupported_values_are_refused() {
        let config = Config::from_toml(
            "[containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\npod_annotations = [\"io.example/*\"]\n\
             [containerd.runtimes.runc.options]\nSystemdCgroup = true\nBinaryName = \"/usr/sbin/runc\"\nRoot = \"/run/r\"",
        )
        .unwrap();
        let runc = &config.containerd.runtimes["runc"];
        assert!(runc.options.systemd_cgroup);
        assert_eq!((runc.options.binary_name.as_str(), runc.options.root.as_str()), ("/usr/sbin/runc", "/run/r"));
        assert_eq!(runc.pod_annotations, ["io.example/*"]);
        let error =
            Config::from_toml("[containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n[containerd.runtimes.runc.options]\nSystemd = true")
                .unwrap_err();
        assert!(error.message.contains("Systemd"), "{error}");
        for (toml, key) in [
            ("enable_cdi = true", "enable_cdi"),
            ("tolerate_missing_hugetlb_controller = false", "tolerate_missing_hugetlb_controller"),
            ("[cni]\nmax_conf_num = 2", "max_conf_num"),
            ("[containerd]\ndiscard_unpacked_layers = true", "discard_unpacked_layers"),
            ("[containerd]\ndisable_snapshot_annotations = false", "disable_snapshot_annotations"),
            ("unset_seccomp_profile = \"strict\"", "unset_seccomp_profile"),
            (
                "[containerd.runtimes.runc]\nruntime_type = \"io.containerd.kata.v2\"\n[containerd.runtimes.runc.options]\nRoot = \"/r\"",
                "options",
            ),
            (
                "[containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\ncontainer_annotations = [\"[\"]",
                "annotation pattern",
            ),
        ] {
            let error = Config::from_toml(toml).unwrap_err();
            assert!(error.message.contains(key), "{toml}: {error}");
        }
        Config::from_toml("enable_unprivileged_ports = true\nenable_unprivileged_icmp = true\nunset_seccomp_profile = \"runtime/default\"")
            .unwrap();
    }

    #[test]
    fn tls_streaming_takes_both_files_or_neither() {
        let config = Config::from_toml(
            "enable_tls_streaming = true\n[x509_key_pair_streaming]\ntls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"",
        )
        .unwrap();
        assert_eq!(config.x509_key_pair_streaming.tls_key_file, "/k.pem");
        Config::from_toml("enable_tls_streaming = true").unwrap();
        let error =
            Config::from_toml("enable_tls_streaming = true\n[x509_key_pair_streaming]\ntls_cert_file = \"/c.pem\"")
                .unwrap_err();
        assert!(error.message.contains("tls_key_file"), "{error}");
        // Without TLS the key pair is not read, as in containerd.
        Config::from_toml("[x509_key_pair_streaming]\ntls_cert_file = \"/c.pem\"").unwrap();
    }

    #[test]
    fn defaults_validate_and_errors_name_the_key() {
        Config::default().validate().unwrap();
        let mut config = Config::default();
        config.containerd.default_runtime_name = "kata".into();
        let error = config.validate().unwrap_err();
        assert!(error.message.contains("default_runtime_name"), "{error}");
        let error = Config::from_toml("image_pull_progress_timeout = \"soon\"").unwrap_err();
        assert!(error.message.contains("image_pull_progress_timeout"), "{error}");
        let error = Config::from_toml("no_such_key = 1").unwrap_err();
        assert!(error.message.contains("no_such_key"), "{error}");
        let config = Config::from_toml("sandbox_image = \"pause:1\"\n[cni]\nbin_dir = \"/usr/lib/cni\"").unwrap();
        assert_eq!(config.cni.bin_dir, "/usr/lib/cni");
        assert_eq!(config.cni.conf_dir, "/etc/cni/net.d");
    }
}
